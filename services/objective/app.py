"""Composition root of the objective service."""

from __future__ import annotations

from faststream import FastStream

from services.objective import handlers
from services.objective.domain import ObjectiveDomain
from shared.runtime import ServiceRuntime, build_app, make_broker
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastStream:
    settings = settings or Settings()
    broker = make_broker(settings, "objective")
    runtime = ServiceRuntime("objective", settings, ObjectiveDomain())
    handlers.register(broker, runtime)
    return build_app(broker, runtime, "Sets the goal: metrics, direction, the paper's number, the frozen evaluation and protected paths.")

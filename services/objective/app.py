"""Composition root of the objective service."""

from __future__ import annotations

from faststream import FastStream

from services.objective import handlers
from services.objective.domain import AGENT, ObjectiveDomain
from shared.brain import Brain
from shared.brains.model import build_brain
from shared.runtime import ServiceRuntime, build_app, make_broker
from shared.settings import Settings


def create_app(settings: Settings | None = None, brain: Brain | None = None) -> FastStream:
    settings = settings or Settings()
    broker = make_broker(settings, "objective")
    runtime = ServiceRuntime("objective", settings, ObjectiveDomain())
    handlers.register(broker, runtime, brain or build_brain(AGENT))
    return build_app(broker, runtime, "Sets the goal: metrics, direction, the paper's number, the frozen evaluation and protected paths.")

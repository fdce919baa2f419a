"""Composition root of the supervisor service."""

from __future__ import annotations

from faststream import FastStream

from services.supervisor import handlers
from services.supervisor.domain import SupervisorDomain
from shared.runtime import ServiceRuntime, build_app, make_broker
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastStream:
    settings = settings or Settings()
    broker = make_broker(settings, "supervisor")
    runtime = ServiceRuntime("supervisor", settings, SupervisorDomain())
    handlers.register(broker, runtime)
    return build_app(broker, runtime, "Enforces the red lines: protected files, idea audits, result checks, seed-noise certification.")

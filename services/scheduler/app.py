"""Composition root of the scheduler."""

from __future__ import annotations

from faststream import FastStream

from services.scheduler import handlers
from services.scheduler.domain import SchedulerDomain, on_own_failure
from shared.runtime import ServiceRuntime, build_app, make_broker
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastStream:
    settings = settings or Settings()
    broker = make_broker(settings, "scheduler")
    runtime = ServiceRuntime("scheduler", settings, SchedulerDomain(), on_failure=on_own_failure)  # type: ignore[arg-type]
    handlers.register(broker, runtime)
    return build_app(broker, runtime, "Owns the campaign: baseline, idea scheduling on free runners, the best-so-far lineage, nomination and completion.")

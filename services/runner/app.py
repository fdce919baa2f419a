"""Composition root of a runner (one process per slot; name it with AUTOSOTA_RUNNER_NAME)."""

from __future__ import annotations

from faststream import FastStream

from services.runner import handlers
from services.runner.domain import RunnerDomain
from shared.runtime import ServiceRuntime, build_app, make_broker
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastStream:
    settings = settings or Settings()
    broker = make_broker(settings, settings.runner_name)
    runtime = ServiceRuntime("runner", settings, RunnerDomain(), instance=settings.runner_name)
    handlers.register(broker, runtime)
    return build_app(broker, runtime, f"Runs experiments pulled from the '{settings.pool}' pool in fresh sandboxed workspaces.")

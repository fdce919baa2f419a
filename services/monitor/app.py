"""Composition root of the monitor service."""

from __future__ import annotations

from faststream import FastStream

from services.monitor import handlers
from services.monitor.domain import MonitorDomain
from shared.runtime import ServiceRuntime, build_app, make_broker
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastStream:
    settings = settings or Settings()
    broker = make_broker(settings, "monitor")
    runtime = ServiceRuntime("monitor", settings, MonitorDomain())
    liveness = handlers.Liveness()
    handlers.register(broker, runtime, liveness)
    app = build_app(broker, runtime, "Watches wall-clock budgets, job liveness and dead ends; declares exhaustion, stalls and supervisory actions.")

    @app.after_startup
    async def _start_ticker() -> None:
        runtime.spawn(handlers.tick_forever(runtime, liveness), "monitor-ticker")

    return app

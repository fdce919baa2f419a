"""Composition root of a runner (name it with AUTOSOTA_RUNNER_NAME; capacity and sandbox from settings)."""

from __future__ import annotations

from faststream import FastStream

from services.runner import handlers
from services.runner.domain import RunnerDomain
from shared.runtime import ServiceRuntime, build_app, make_broker
from shared.sandbox import Sandbox, sandbox_for
from shared.settings import Settings


def create_app(settings: Settings | None = None, sandbox: Sandbox | None = None) -> FastStream:
    settings = settings or Settings()
    broker = make_broker(settings, settings.runner_name)
    runtime = ServiceRuntime("runner", settings, RunnerDomain(), instance=settings.runner_name)
    sandbox = sandbox or sandbox_for(settings.sandbox_backend, settings.sandbox_confine, settings.docker_url, settings.docker_image, owner=settings.runner_name)
    runner = handlers.register(broker, runtime, sandbox)
    app = build_app(broker, runtime, f"Runs experiments pulled from the '{settings.pool}' pool, within its declared capacity, in fresh sandboxed workspaces; records one result per job.")

    @app.on_startup
    async def _open_results() -> None:
        await runner.start()
        runtime.spawn(runner.supervise_jobs(), f"{runtime.instance}-jobs")

    app.runner = runner  # type: ignore[attr-defined]
    return app

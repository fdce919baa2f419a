"""Composition root of the init service."""

from __future__ import annotations

from faststream import FastStream

from services.init import handlers
from services.init.domain import InitDomain
from shared.runtime import ServiceRuntime, build_app, make_broker
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastStream:
    settings = settings or Settings()
    broker = make_broker(settings, "init")
    runtime = ServiceRuntime("init", settings, InitDomain())
    handlers.register(broker, runtime)
    return build_app(broker, runtime, "Builds and validates the paper's environment, applies repairs, and requests the baseline.")

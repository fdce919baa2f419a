"""Composition root of the resource service."""

from __future__ import annotations

from faststream import FastStream

from services.resource import handlers
from services.resource.domain import ResourceDomain
from shared.runtime import ServiceRuntime, build_app, make_broker
from shared.settings import Settings


def create_app(settings: Settings | None = None) -> FastStream:
    settings = settings or Settings()
    broker = make_broker(settings, "resource")
    runtime = ServiceRuntime("resource", settings, ResourceDomain())
    handlers.register(broker, runtime)
    return build_app(broker, runtime, "Prepares resources: a content-addressed snapshot of the paper's code and data.")

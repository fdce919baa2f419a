"""Composition root of the fix service."""

from __future__ import annotations

from faststream import FastStream

from services.fix import handlers
from services.fix.domain import FixDomain
from shared.brain import Brain
from shared.brains.model import build_brain
from shared.runtime import ServiceRuntime, build_app, make_broker
from shared.settings import Settings


def create_app(settings: Settings | None = None, brain: Brain | None = None) -> FastStream:
    settings = settings or Settings()
    broker = make_broker(settings, "fix")
    runtime = ServiceRuntime("fix", settings, FixDomain())
    handlers.register(broker, runtime, brain or build_brain("fix"))
    return build_app(broker, runtime, "Repairs failing environments; remembers across campaigns which repair cured which failure.")

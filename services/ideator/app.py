"""Composition root of the ideator service."""

from __future__ import annotations

from faststream import FastStream

from services.ideator import handlers
from services.ideator.domain import AGENT, IdeatorDomain
from shared.brain import Brain
from shared.brains.model import build_brain
from shared.runtime import ServiceRuntime, build_app, make_broker
from shared.settings import Settings


def create_app(settings: Settings | None = None, brain: Brain | None = None) -> FastStream:
    settings = settings or Settings()
    broker = make_broker(settings, "ideator")
    runtime = ServiceRuntime("ideator", settings, IdeatorDomain())
    handlers.register(broker, runtime, brain or build_brain(AGENT))
    return build_app(broker, runtime, "Proposes optimisation ideas each round: parameters by search, structural changes by a model, each recorded.")

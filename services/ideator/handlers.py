"""Thin bus handlers of the ideator service: ask the brain, record its answer."""

from __future__ import annotations

import asyncio

from faststream.nats import NatsBroker

from services.ideator.domain import IdeatorState, decide_proposal, ideation_request
from shared.brain import Brain
from shared.contracts import Event, IdeasRequested
from shared.runtime import Context, Output, Reaction, ServiceRuntime


def reaction(brain: Brain) -> Reaction[IdeatorState]:
    async def react(state: IdeatorState, event: Event, ctx: Context) -> list[Output]:
        if not isinstance(event, IdeasRequested):
            return []
        request = ideation_request(state, event)
        if request is None:
            return []
        ideas = await asyncio.to_thread(brain.propose_ideas, request)
        return list(decide_proposal(event, ideas, brain.name))

    return react


def register(broker: NatsBroker, runtime: ServiceRuntime[IdeatorState], brain: Brain) -> None:
    runtime.subscribe_events(broker, reaction(brain), "Consumes IdeasRequested and the results of earlier ideas; proposes ideas once per round.")

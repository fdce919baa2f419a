"""Thin bus handlers of the fix service: recall past repairs, else ask the brain."""

from __future__ import annotations

import asyncio

from faststream.nats import NatsBroker

from services.fix.domain import RELEVANT, FailureMemory, FixState, decide_repair, learn, needs_answer, needs_brain
from shared.brain import Brain, RepairRequest
from shared.contracts import EnvironmentFailed, Event, parse_event
from shared.runtime import Context, Output, Reaction, ServiceRuntime
from shared.store import EMITTED_TOPIC, OBSERVED_TOPIC, ServiceStore

PAGE = 500


class MemoryFromStore:
    """The failure memory, folded from this service's own store across every campaign, kept current."""

    def __init__(self) -> None:
        self.memory = FailureMemory()
        self.position = 0

    def catch_up(self, store: ServiceStore) -> FailureMemory:
        while True:
            notifications = store.recorder.select_notifications(
                start=self.position, limit=PAGE, topics=[OBSERVED_TOPIC, EMITTED_TOPIC], inclusive_of_start=False
            )
            for notification in notifications:
                message = getattr(store.mapper.to_domain_event(notification), "message", None)
                if isinstance(message, dict) and message.get("event_type") in RELEVANT:
                    self.memory = learn(self.memory, parse_event(message))
                self.position = notification.id
            if len(notifications) < PAGE:
                return self.memory


def reaction(brain: Brain, recall: MemoryFromStore) -> Reaction[FixState]:
    async def react(state: FixState, event: Event, ctx: Context) -> list[Output]:
        if not isinstance(event, EnvironmentFailed) or not needs_answer(state, event):
            return []
        memory = recall.catch_up(ctx.runtime.store)
        suggestion = None
        if needs_brain(state, event, memory):
            request = RepairRequest(signature=event.signature, error_tail=event.error_tail)
            suggestion = await asyncio.to_thread(brain.propose_repair, request)
        return list(decide_repair(state, event, memory, suggestion))

    return react


def register(broker: NatsBroker, runtime: ServiceRuntime[FixState], brain: Brain) -> None:
    runtime.subscribe_events(
        broker,
        reaction(brain, MemoryFromStore()),
        "Consumes EnvironmentFailed and EnvironmentReady; proposes a repair, from memory first.",
    )

"""Thin bus handlers of the fix service: recall past repairs, else apply the rules, else ask the brain."""

from __future__ import annotations

import asyncio

from faststream.nats import NatsBroker

from services.fix import rules
from services.fix.domain import RELEVANT, FailureMemory, FixState, Repair, decide_repair, learn, needs_answer, needs_brain
from shared.brain import Brain, RepairRequest, uses_model
from shared.brains.recording import document_brain_events, offload_prompts
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
        candidates = rules.candidates(event.signature, event.error_tail, state.facts)
        record: list[Event] = []
        if needs_brain(state, event, memory, candidates):
            request = RepairRequest(signature=event.signature, error_tail=event.error_tail)
            scope = state.models.scope("fix", event.campaign, f"repair/attempt-{event.attempt}")
            thought = await asyncio.to_thread(brain.think_repair, request, scope)
            if thought.answer is not None:
                candidates.append(Repair(thought.answer.action, thought.answer.argument))
            selected = [brain.selected("fix", event.campaign)] if uses_model(brain) and not state.brain_selected else []
            record = [*selected, *thought.events(scope, "repair")]

        def fits(repair: Repair) -> bool:
            return rules.applicable(repair, event.signature, event.error_tail, state.facts)

        return [*await offload_prompts(record, ctx.artifacts), *decide_repair(state, event, memory, candidates, fits)]

    return react


def register(broker: NatsBroker, runtime: ServiceRuntime[FixState], brain: Brain) -> None:
    document_brain_events(broker, runtime.subjects, "fix")
    runtime.subscribe_events(
        broker,
        reaction(brain, MemoryFromStore()),
        "Consumes EnvironmentFailed and EnvironmentReady; proposes a repair: from memory first, then by rule, then by the brain.",
    )

"""Thin bus handlers of the supervisor: route each event to its pure decision, wrap work items."""

from __future__ import annotations

from faststream.nats import NatsBroker

from services.supervisor.domain import (
    SupervisorState,
    decide_ideas,
    decide_protection,
    decide_result,
    decide_verdict,
    plan_verification,
)
from shared.contracts import (
    CandidateNominated,
    Event,
    IdeasProposed,
    JobCompleted,
    JobFailed,
    ObjectiveSet,
    ResourcesPrepared,
)
from shared.runtime import Context, Outgoing, Output, ServiceRuntime

CONSUMED = (
    "CampaignStarted, ResourcesPrepared, ObjectiveSet, BaselineRequested, ExperimentDispatched, IdeasProposed, "
    "JobCompleted, JobFailed, CandidateNominated"
)


async def react(state: SupervisorState, event: Event, ctx: Context) -> list[Output]:
    if isinstance(event, ResourcesPrepared | ObjectiveSet):
        return list(decide_protection(state, event.campaign))
    if isinstance(event, IdeasProposed):
        return list(decide_ideas(state, event))
    if isinstance(event, JobCompleted):
        return list(decide_result(state, event))
    if isinstance(event, JobFailed):
        return list(decide_verdict(state, event.campaign))
    if isinstance(event, CandidateNominated):
        events, work_items = plan_verification(state, event)
        if not work_items:
            return list(events)
        outputs: list[Output] = []
        # Each dispatch event goes out before its work item, so a result never precedes its dispatch.
        for dispatched, item in zip(events, work_items, strict=True):
            outputs += [dispatched, Outgoing(ctx.runtime.subjects.work(item.pool), item.model_dump(mode="json"))]
        return outputs
    return []


def register(broker: NatsBroker, runtime: ServiceRuntime[SupervisorState]) -> None:
    runtime.subscribe_events(
        broker,
        react,
        f"Consumes {CONSUMED}; emits ProtectionEstablished, IdeaCleared/IdeaRejected, ResultValidated/ResultRejected, "
        "VerificationDispatched with work items, and SotaCertified/SotaRefuted.",
    )

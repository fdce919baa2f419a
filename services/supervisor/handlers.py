"""Thin bus handlers of the supervisor: route each event to its pure decision, wrap work items.

The one piece of I/O: reading the protected Python sources from the snapshot, so the protection
record lists the modules the evaluation imports (a file of that name must never appear beside it).
"""

from __future__ import annotations

import asyncio
import logging

from faststream.nats import NatsBroker

from services.supervisor.domain import (
    SupervisorState,
    decide_failure,
    decide_ideas,
    decide_protection,
    decide_result,
    plan_verification,
    protected_sources_needed,
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
from shared.protection import MAX_SOURCE_BYTES, decode_source
from shared.workspace import read_members

log = logging.getLogger("autosota.supervisor")

CONSUMED = (
    "CampaignStarted, ResourcesPrepared, ObjectiveSet, BaselineRequested, ExperimentDispatched, IdeasProposed, "
    "JobCompleted, JobFailed, CandidateNominated"
)


async def react(state: SupervisorState, event: Event, ctx: Context) -> list[Output]:
    if isinstance(event, ResourcesPrepared | ObjectiveSet):
        return list(decide_protection(state, event.campaign, await protected_sources(state, ctx)))
    if isinstance(event, IdeasProposed):
        return list(decide_ideas(state, event))
    if isinstance(event, JobCompleted):
        return list(decide_result(state, event))
    if isinstance(event, JobFailed):
        return list(decide_failure(state, event))
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


async def protected_sources(state: SupervisorState, ctx: Context) -> dict[str, str]:
    """The protected Python files' text, read from the snapshot; empty when it cannot be read."""
    needed = protected_sources_needed(state)
    if not needed or state.snapshot_sha256 is None:
        return {}
    try:
        snapshot = await ctx.artifacts.get(state.snapshot_sha256)
    except Exception as error:  # noqa: BLE001 - the audit still knows the standard library and protected names
        log.warning("snapshot %s unreadable, evaluation imports unknown: %s", state.snapshot_sha256[:12], error)
        return {}
    members = await asyncio.to_thread(read_members, snapshot, needed, MAX_SOURCE_BYTES)
    return {path: decode_source(data) for path, data in members.items()}


def register(broker: NatsBroker, runtime: ServiceRuntime[SupervisorState]) -> None:
    runtime.subscribe_events(
        broker,
        react,
        f"Consumes {CONSUMED}; emits ProtectionEstablished, IdeaCleared/IdeaRejected, ResultValidated/ResultRejected, "
        "VerificationDispatched with work items, and SotaCertified/SotaRefuted.",
    )

"""Thin bus handlers of the resource service."""

from __future__ import annotations

import asyncio
from pathlib import Path

from faststream.nats import NatsBroker

from services.resource.domain import ResourceState, decide_snapshot, needs_snapshot
from shared.contracts import CampaignStarted, Event
from shared.runtime import Context, Output, ServiceRuntime
from shared.workspace import SnapshotError, pack


async def react(state: ResourceState, event: Event, ctx: Context) -> list[Output]:
    if not isinstance(event, CampaignStarted) or not needs_snapshot(state):
        return []
    try:
        snapshot = await asyncio.to_thread(pack, Path(event.paper_path))
    except (SnapshotError, OSError) as error:
        return list(decide_snapshot(event, None, None, str(error)))
    digest = await ctx.artifacts.put(snapshot.data)
    return list(decide_snapshot(event, snapshot, digest, None))


def register(broker: NatsBroker, runtime: ServiceRuntime[ResourceState]) -> None:
    runtime.subscribe_events(broker, react, "Consumes CampaignStarted; snapshots the paper folder into the artifact store.")

"""What the resource service decides: one snapshot per campaign, or a recorded failure."""

from __future__ import annotations

from dataclasses import dataclass

from shared.contracts import CampaignStarted, Event, ResourcesFailed, ResourcesPrepared
from shared.workspace import Snapshot

RELEVANT = frozenset({"CampaignStarted", "ResourcesPrepared", "ResourcesFailed"})


@dataclass
class ResourceState:
    paper_path: str | None = None
    snapshot_sha256: str | None = None
    failed: bool = False


class ResourceDomain:
    relevant = RELEVANT

    def initial_state(self, campaign: str) -> ResourceState:
        return ResourceState()

    def evolve(self, state: ResourceState, event: Event) -> ResourceState:
        if isinstance(event, CampaignStarted):
            state.paper_path = event.paper_path
        elif isinstance(event, ResourcesPrepared):
            state.snapshot_sha256 = event.snapshot_sha256
        elif isinstance(event, ResourcesFailed):
            state.failed = True
        return state


def needs_snapshot(state: ResourceState) -> bool:
    return state.snapshot_sha256 is None and not state.failed


def decide_snapshot(started: CampaignStarted, snapshot: Snapshot | None, digest: str | None, error: str | None) -> list[Event]:
    if snapshot is None or digest is None:
        return [ResourcesFailed(campaign=started.campaign, reason=error or "snapshot failed")]
    return [
        ResourcesPrepared(
            campaign=started.campaign,
            snapshot_sha256=digest,
            files=snapshot.files,
            size_bytes=snapshot.size_bytes,
        )
    ]

"""What the monitor decides, given the clock reading as an input: budget exhaustion and stalls.

A queued job is silent since the later of its dispatch and the campaign's last sign of work (a
job starting or finishing, any telemetry): a job waiting behind live ones is not stalled. A
running job is silent since the later of its start and its own last telemetry. Each campaign's budget is exhausted once, each experiment stalls once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from shared.contracts import (
    BudgetExhausted,
    CampaignCompleted,
    CampaignStarted,
    Event,
    ExperimentDispatched,
    JobCompleted,
    JobFailed,
    JobStarted,
    StallDetected,
    VerificationDispatched,
)

RELEVANT = frozenset(
    {
        "CampaignStarted", "CampaignCompleted", "ExperimentDispatched", "VerificationDispatched",
        "JobStarted", "JobCompleted", "JobFailed", "BudgetExhausted", "StallDetected",
    }
)

Phase = Literal["queued", "running", "done"]


@dataclass
class JobWatch:
    phase: Phase
    since: datetime


@dataclass
class MonitorState:
    campaign: str
    started_at: datetime | None = None
    wall_clock_limit: float | None = None
    completed: bool = False
    budget_exhausted: bool = False
    jobs: dict[str, JobWatch] = field(default_factory=dict)
    stalled: set[str] = field(default_factory=set)
    last_progress: datetime | None = None


def _time(event: Event) -> datetime:
    if event.time is None:
        raise ValueError(f"{event.event_type} has no time; only stamped events can be folded")
    return event.time


class MonitorDomain:
    relevant = RELEVANT

    def initial_state(self, campaign: str) -> MonitorState:
        return MonitorState(campaign=campaign)

    def evolve(self, state: MonitorState, event: Event) -> MonitorState:
        if isinstance(event, CampaignStarted):
            state.started_at = _time(event)
            state.wall_clock_limit = event.budget.wall_clock_seconds
        elif isinstance(event, CampaignCompleted):
            state.completed = True
        elif isinstance(event, ExperimentDispatched | VerificationDispatched):
            # A fresh dispatch of the same experiment is a new attempt, watched anew.
            state.jobs[event.experiment_id] = JobWatch("queued", _time(event))
            state.stalled.discard(event.experiment_id)
        elif isinstance(event, JobStarted):
            watch = state.jobs.get(event.experiment_id)
            if watch is None or watch.phase != "done":
                state.jobs[event.experiment_id] = JobWatch("running", _time(event))
            state.last_progress = _latest(state.last_progress, _time(event))
        elif isinstance(event, JobCompleted | JobFailed):
            state.jobs[event.experiment_id] = JobWatch("done", _time(event))
            state.last_progress = _latest(state.last_progress, _time(event))
        elif isinstance(event, BudgetExhausted):
            state.budget_exhausted = True
        elif isinstance(event, StallDetected):
            state.stalled.add(event.experiment_id)
        return state


def _latest(*moments: datetime | None) -> datetime | None:
    return max((moment for moment in moments if moment is not None), default=None)


def watching(state: MonitorState) -> bool:
    return state.started_at is not None and not state.completed


def decide_budget(state: MonitorState, now: datetime) -> list[Event]:
    if not watching(state) or state.budget_exhausted or state.started_at is None or state.wall_clock_limit is None:
        return []
    used = (now - state.started_at).total_seconds()
    if used < state.wall_clock_limit:
        return []
    return [BudgetExhausted(campaign=state.campaign, budget="wall_clock", used=used, limit=state.wall_clock_limit)]


def decide_stalls(state: MonitorState, now: datetime, stall_seconds: float, last_seen: Mapping[str, datetime]) -> list[Event]:
    """StallDetected for every job silent for stall_seconds; last_seen maps experiment id to its latest telemetry."""
    if not watching(state):
        return []
    stalls: list[Event] = []
    for experiment_id, watch in state.jobs.items():
        if watch.phase == "done" or experiment_id in state.stalled:
            continue
        campaign_busy = _latest(state.last_progress, *last_seen.values()) if watch.phase == "queued" else None
        silent_since = _latest(watch.since, campaign_busy, last_seen.get(experiment_id)) or watch.since
        silent = (now - silent_since).total_seconds()
        if silent >= stall_seconds:
            stalls.append(StallDetected(campaign=state.campaign, experiment_id=experiment_id, silent_seconds=silent, state=watch.phase))
    return stalls


def decide_tick(state: MonitorState, now: datetime, stall_seconds: float, last_seen: Mapping[str, datetime]) -> list[Event]:
    return [*decide_budget(state, now), *decide_stalls(state, now, stall_seconds, last_seen)]

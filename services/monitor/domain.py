"""What the monitor decides, given the clock reading as an input: budget exhaustion, stalls, dead ends.

A queued job is silent since the later of its dispatch and the campaign's last sign of work (a
job starting or finishing, any telemetry): a job waiting behind live ones is not stalled. A
running job is silent since the later of its start and its own last telemetry. Each campaign's budget is exhausted once, each experiment stalls once.

A dead end is either the same failure signature on several jobs in a row (no success between
them), answered once per streak, or no validated result for too long, answered once per quiet
spell. The answer is a SupervisoryAction: `terminate` when the baseline or the verification
keeps failing (nothing can follow), `rollback` to the best-so-far when ideas keep failing the
same way, `fallback` to concluding with what the campaign has when nothing advances.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
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
    SupervisoryAction,
    VerificationDispatched,
)

RELEVANT = frozenset(
    {
        "CampaignStarted", "CampaignCompleted", "ExperimentDispatched", "VerificationDispatched",
        "JobStarted", "JobCompleted", "JobFailed", "BudgetExhausted", "StallDetected",
        "BaselineReproduced", "ResultValidated", "BestUpdated", "SupervisoryAction",
    }
)
ADVANCES = frozenset({"BaselineReproduced", "ResultValidated", "BestUpdated"})

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
    streak_signature: str | None = None
    streak: list[str] = field(default_factory=list)  # experiments failing in a row with that signature
    streak_purposes: set[str] = field(default_factory=set)
    streak_answered: bool = False
    last_advance: datetime | None = None  # the latest validated result (or the campaign's start)
    quiet_answered_since: datetime | None = None


@dataclass(frozen=True)
class DeadEndLimits:
    repeats: int = 3
    no_progress_seconds: float = 1800.0


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
            state.last_advance = state.last_advance or state.started_at
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
            _follow_streak(state, event)
        elif isinstance(event, BudgetExhausted):
            state.budget_exhausted = True
        elif isinstance(event, StallDetected):
            state.stalled.add(event.experiment_id)
        elif event.event_type in ADVANCES:
            state.last_advance = _latest(state.last_advance, _time(event))
        elif isinstance(event, SupervisoryAction):
            if event.trigger == "repeated_failure":
                state.streak_answered = True
            else:
                state.quiet_answered_since = state.last_advance
        return state


def _follow_streak(state: MonitorState, event: JobCompleted | JobFailed) -> None:
    if isinstance(event, JobCompleted):
        state.streak_signature, state.streak, state.streak_purposes, state.streak_answered = None, [], set(), False
        return
    if event.signature != state.streak_signature:
        state.streak_signature, state.streak, state.streak_purposes, state.streak_answered = event.signature, [], set(), False
    if event.experiment_id not in state.streak:
        state.streak.append(event.experiment_id)
        state.streak_purposes.add(event.purpose)


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


def decide_dead_ends(state: MonitorState, now: datetime, limits: DeadEndLimits) -> list[Event]:
    """A SupervisoryAction for a streak of one failure, or for a campaign that stopped advancing."""
    if not watching(state):
        return []
    actions: list[Event] = []
    if state.streak_signature is not None and len(state.streak) >= limits.repeats and not state.streak_answered:
        stuck = state.streak_purposes & {"baseline", "verification"}
        action = "terminate" if stuck else "rollback"
        consequence = f"the {' and '.join(sorted(stuck))} cannot complete" if stuck else "ideas along this line keep failing; back to the best so far"
        actions.append(
            SupervisoryAction(
                campaign=state.campaign,
                action=action,
                trigger="repeated_failure",
                reason=f"{len(state.streak)} jobs in a row failed the same way: {consequence}",
                signature=state.streak_signature,
                experiment_ids=list(state.streak),
            )
        )
    since = state.last_advance
    if since is not None and state.quiet_answered_since != since and now - since >= timedelta(seconds=limits.no_progress_seconds):
        quiet = (now - since).total_seconds()
        actions.append(
            SupervisoryAction(
                campaign=state.campaign,
                action="fallback",
                trigger="no_progress",
                reason=f"no validated result for {quiet:.0f} s (limit {limits.no_progress_seconds:g} s): conclude with what the campaign has",
            )
        )
    return actions


def decide_tick(state: MonitorState, now: datetime, stall_seconds: float, last_seen: Mapping[str, datetime], dead_ends: DeadEndLimits | None = None) -> list[Event]:
    return [*decide_budget(state, now), *decide_stalls(state, now, stall_seconds, last_seen), *decide_dead_ends(state, now, dead_ends or DeadEndLimits())]

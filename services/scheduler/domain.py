"""The campaign and its optimisation loop: baseline first, then ideas on every free slot, the
best-so-far lineage, nomination of candidates for certification, and the end of the campaign.

Every decision is a pure function of the campaign's state and the incoming event.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from shared.contracts import (
    BaselineReproduced,
    BaselineRequested,
    BestUpdated,
    Budget,
    BudgetExhausted,
    CampaignCompleted,
    CampaignStarted,
    CandidateNominated,
    EnvironmentFailed,
    EnvironmentReady,
    Event,
    ExperimentDispatched,
    Idea,
    IdeaCleared,
    IdeaRejected,
    IdeasProposed,
    IdeasRequested,
    JobFailed,
    Objective,
    ObjectiveFailed,
    ObjectiveSet,
    ResourcesFailed,
    ResultRejected,
    ResultValidated,
    SotaCertified,
    SotaRefuted,
    StallDetected,
    WorkItem,
)

MAX_CANDIDATES = 3

RELEVANT = frozenset(
    {
        "CampaignStarted", "ResourcesFailed", "ObjectiveSet", "ObjectiveFailed", "EnvironmentReady",
        "EnvironmentFailed", "BaselineRequested", "ExperimentDispatched", "ResultValidated",
        "ResultRejected", "JobFailed", "StallDetected", "BaselineReproduced", "IdeasRequested",
        "IdeasProposed", "IdeaCleared", "IdeaRejected", "BestUpdated", "BudgetExhausted",
        "CandidateNominated", "SotaCertified", "SotaRefuted", "CampaignCompleted",
    }
)


@dataclass
class Experiment:
    purpose: str
    idea_id: str | None
    params: dict[str, Any]
    patch: str | None
    status: str = "in_flight"  # in_flight, validated, rejected, failed, stalled
    value: float | None = None
    reason: str = ""


@dataclass
class CampaignState:
    campaign: str
    started: CampaignStarted | None = None
    objective: Objective | None = None
    snapshot_sha256: str | None = None
    environment_bin: str | None = None
    experiments: dict[str, Experiment] = field(default_factory=dict)
    baseline_mean: float | None = None
    ideas_round: int = 0
    request_open: bool = False
    ideas_awaiting_audit: int = 0
    queue: list[Idea] = field(default_factory=list)
    out_of_ideas: bool = False
    wall_clock_exhausted: bool = False
    best_value: float | None = None
    nominated: list[str] = field(default_factory=list)
    awaiting_verdict: bool = False
    completed: bool = False

    @property
    def budget(self) -> Budget:
        return self.started.budget if self.started else Budget()

    def in_flight(self) -> int:
        return sum(1 for e in self.experiments.values() if e.status == "in_flight" and e.purpose != "verification")

    def idea_experiments(self) -> int:
        return sum(1 for e in self.experiments.values() if e.purpose == "idea")

    def baseline(self) -> list[Experiment]:
        return [e for e in self.experiments.values() if e.purpose == "baseline"]

    def budget_spent(self) -> bool:
        return self.wall_clock_exhausted or self.out_of_ideas or self.idea_experiments() >= self.budget.max_experiments


class SchedulerDomain:
    relevant = RELEVANT

    def initial_state(self, campaign: str) -> CampaignState:
        return CampaignState(campaign=campaign)

    def evolve(self, state: CampaignState, event: Event) -> CampaignState:
        match event:
            case CampaignStarted():
                state.started = event
            case ObjectiveSet():
                state.objective, state.snapshot_sha256 = event.objective, event.snapshot_sha256
            case EnvironmentReady() | BaselineRequested():
                state.environment_bin = event.environment_bin
            case ExperimentDispatched():
                state.experiments[event.experiment_id] = Experiment(event.purpose, event.idea_id, dict(event.params), event.patch)
                if event.idea_id is not None:
                    state.queue = [idea for idea in state.queue if idea.idea_id != event.idea_id]
            case ResultValidated() if _in_flight(state, event.experiment_id):
                experiment = state.experiments[event.experiment_id]
                experiment.status = "validated"
                if state.objective is not None:
                    experiment.value = event.metrics.get(state.objective.primary_metric)
            case ResultRejected() | JobFailed() | StallDetected() if _in_flight(state, event.experiment_id):
                experiment = state.experiments[event.experiment_id]
                experiment.status = {"ResultRejected": "rejected", "JobFailed": "failed", "StallDetected": "stalled"}[event.event_type]
                experiment.reason = getattr(event, "rule", None) or getattr(event, "reason", None) or event.event_type
            case BaselineReproduced():
                state.baseline_mean = event.mean
                state.best_value = event.mean if state.best_value is None else state.best_value
            case IdeasRequested():
                state.ideas_round, state.request_open = event.round, True
            case IdeasProposed() if event.round == state.ideas_round:
                state.request_open = False
                state.ideas_awaiting_audit += len(event.ideas)
                state.out_of_ideas = state.out_of_ideas or not event.ideas
            case IdeaCleared():
                state.ideas_awaiting_audit = max(0, state.ideas_awaiting_audit - 1)
                state.queue.append(event.idea)
            case IdeaRejected():
                state.ideas_awaiting_audit = max(0, state.ideas_awaiting_audit - 1)
            case BestUpdated():
                state.best_value = event.value
            case BudgetExhausted():
                state.wall_clock_exhausted = True
            case CandidateNominated():
                state.nominated.append(event.idea_id)
                state.awaiting_verdict = True
            case SotaCertified() | SotaRefuted():
                state.awaiting_verdict = False
            case CampaignCompleted():
                state.completed = True
        return state


def _in_flight(state: CampaignState, experiment_id: str) -> bool:
    experiment = state.experiments.get(experiment_id)
    return experiment is not None and experiment.status == "in_flight"


Decision = Event | WorkItem


class _Plan:
    """Collects decisions and folds each into the working state, so later steps see earlier ones."""

    def __init__(self, state: CampaignState) -> None:
        self.state = state
        self.outputs: list[Decision] = []
        self._domain = SchedulerDomain()

    def emit(self, decision: Decision) -> None:
        self.outputs.append(decision)
        if isinstance(decision, Event):
            self._domain.evolve(self.state, decision)


def decide(state: CampaignState, event: Event) -> list[Decision]:
    """What the scheduler does after the incoming event has been folded into the state."""
    if state.completed or state.started is None:
        return []
    plan = _Plan(state)
    match event:
        case ResourcesFailed() | ObjectiveFailed():
            _complete(plan, "failed", f"{event.event_type}: {event.reason}")
        case EnvironmentFailed() if event.final:
            _complete(plan, "failed", f"the environment could not be prepared ({event.stage}): {event.signature}")
        case BaselineRequested():
            _dispatch_baseline(plan, event)
        case ResultValidated() | ResultRejected() | JobFailed() | StallDetected():
            _after_result(plan, event)
        case IdeasProposed() | IdeaCleared() | IdeaRejected() | BudgetExhausted():
            _advance(plan)
        case SotaCertified():
            _complete(plan, "certified", f"{event.idea_id} certified: {event.metric} {event.candidate_mean:.6g} vs {event.baseline_mean:.6g} (p={event.p_value:.3g})")
        case SotaRefuted():
            _advance(plan)
    return plan.outputs


def _dispatch_baseline(plan: _Plan, event: BaselineRequested) -> None:
    state = plan.state
    if state.baseline():
        return
    for seed in event.seeds:
        _dispatch(plan, f"baseline-s{seed}", "baseline", None, dict(event.params), seed, None)


def _dispatch(plan: _Plan, experiment_id: str, purpose: str, idea_id: str | None, params: dict[str, Any], seed: int, patch: str | None) -> None:
    state = plan.state
    assert state.objective is not None and state.started is not None
    pool = state.started.pool
    plan.emit(ExperimentDispatched(campaign=state.campaign, experiment_id=experiment_id, purpose=purpose, idea_id=idea_id, params=params, seed=seed, patch=patch, pool=pool))  # type: ignore[arg-type]
    plan.emit(work_item(state, experiment_id, purpose, params, seed, patch, "scheduler"))


def work_item(state: CampaignState, experiment_id: str, purpose: str, params: dict[str, Any], seed: int, patch: str | None, dispatcher: str) -> WorkItem:
    objective = state.objective
    assert objective is not None and state.snapshot_sha256 and state.environment_bin and state.started
    return WorkItem(
        campaign=state.campaign,
        experiment_id=experiment_id,
        purpose=purpose,  # type: ignore[arg-type]
        dispatcher=dispatcher,
        snapshot_sha256=state.snapshot_sha256,
        params=params,
        seed=seed,
        patch=patch,
        train_command=objective.train_command,
        evaluate_command=objective.evaluate_command,
        environment_bin=state.environment_bin,
        protected_paths=list(objective.protected_paths),
        timeout_seconds=objective.timeout_seconds,
        pool=state.started.pool,
    )


def _after_result(plan: _Plan, event: Event) -> None:
    state = plan.state
    experiment = state.experiments.get(getattr(event, "experiment_id", ""))
    if experiment is None or experiment.purpose == "verification":
        return
    if experiment.purpose == "baseline":
        _after_baseline_result(plan)
        return
    if experiment.status == "validated" and experiment.value is not None and state.objective is not None:
        if state.best_value is None or state.objective.better(experiment.value, state.best_value):
            plan.emit(
                BestUpdated(
                    campaign=state.campaign,
                    idea_id=experiment.idea_id or "",
                    experiment_id=getattr(event, "experiment_id"),
                    value=experiment.value,
                    previous_value=state.best_value if state.best_value is not None else experiment.value,
                    params=experiment.params,
                )
            )
    _advance(plan)


def _after_baseline_result(plan: _Plan) -> None:
    state = plan.state
    baseline = state.baseline()
    broken = [e for e in baseline if e.status in ("rejected", "failed", "stalled")]
    if broken:
        reasons = "; ".join(sorted({e.reason for e in broken}))
        _complete(plan, "failed", f"the baseline did not run cleanly: {reasons}")
        return
    if state.baseline_mean is not None or any(e.status != "validated" for e in baseline):
        return
    objective = state.objective
    assert objective is not None
    values = [e.value for e in baseline if e.value is not None]
    mean = statistics.fmean(values)
    plan.emit(
        BaselineReproduced(
            campaign=state.campaign,
            metric=objective.primary_metric,
            values=values,
            mean=mean,
            std=statistics.stdev(values) if len(values) > 1 else 0.0,
            reported_value=objective.reported_value,
            gap_to_reported=mean - objective.reported_value,
        )
    )
    _advance(plan)


def _advance(plan: _Plan) -> None:
    """Fill free slots with cleared ideas, ask for more ideas, or wind the campaign down."""
    state = plan.state
    if state.baseline_mean is None or state.completed:
        return
    if not state.budget_spent() and not state.nominated:
        free = state.budget.parallelism - state.in_flight()
        seed = state.objective.baseline_seeds[0] if state.objective and state.objective.baseline_seeds else 0
        while free > 0 and state.queue and state.idea_experiments() < state.budget.max_experiments:
            idea = state.queue[0]
            params = {**(state.objective.baseline_params if state.objective else {}), **idea.params}
            _dispatch(plan, f"idea-{idea.idea_id}", "idea", idea.idea_id, params, seed, idea.patch)
            free -= 1
        remaining = state.budget.max_experiments - state.idea_experiments() - len(state.queue)
        if free > 0 and remaining > 0 and not state.queue and not state.request_open and state.ideas_awaiting_audit == 0:
            plan.emit(IdeasRequested(campaign=state.campaign, count=min(free, remaining), round=state.ideas_round + 1))
    _maybe_wind_down(plan)


def _maybe_wind_down(plan: _Plan) -> None:
    state = plan.state
    winding_down = state.budget_spent() or bool(state.nominated)
    if not winding_down or state.in_flight() > 0 or state.awaiting_verdict or state.completed:
        return
    candidate = next_candidate(state)
    if candidate is not None and len(state.nominated) < MAX_CANDIDATES:
        experiment_id, experiment = candidate
        plan.emit(
            CandidateNominated(
                campaign=state.campaign,
                idea_id=experiment.idea_id or experiment_id,
                params=experiment.params,
                patch=experiment.patch,
                screening_value=experiment.value if experiment.value is not None else float("nan"),
                attempt=len(state.nominated) + 1,
            )
        )
        return
    tried = len(state.nominated)
    reason = (
        f"no candidate survived certification ({tried} tried)" if tried else "no idea beat the reproduced baseline"
    )
    _complete(plan, "not_improved", reason)


def next_candidate(state: CampaignState) -> tuple[str, Experiment] | None:
    """The best validated idea that beats the baseline mean and has not been nominated yet."""
    objective = state.objective
    if objective is None or state.baseline_mean is None:
        return None
    better = [
        (experiment_id, e)
        for experiment_id, e in state.experiments.items()
        if e.purpose == "idea" and e.status == "validated" and e.value is not None
        and objective.better(e.value, state.baseline_mean) and e.idea_id not in state.nominated
    ]
    sign = 1.0 if objective.direction == "minimize" else -1.0
    better.sort(key=lambda item: (sign * (item[1].value or 0.0), item[0]))
    return better[0] if better else None


def _complete(plan: _Plan, outcome: str, reason: str) -> None:
    state = plan.state
    plan.emit(CampaignCompleted(campaign=state.campaign, outcome=outcome, reason=reason, idea_experiments=state.idea_experiments()))  # type: ignore[arg-type]


def start(campaign: str, paper_path: str, budget: Budget, pool: str) -> CampaignStarted:
    return CampaignStarted(campaign=campaign, paper_path=paper_path, budget=budget, pool=pool)

"""The campaign and its optimisation loop: baseline first, then ideas on every free slot, the
best-so-far lineage, nomination of candidates for certification, and the end of the campaign.

The loop follows the paper's rules for structural change. Leap: after three PARAM ideas in a row,
the next request asks for a structural (CODE or ALGO) idea, when the ideator has a model. Honeymoon:
a structural idea that does not beat the best becomes the base of up to five follow-ups. Rollback:
when none of them beats the best, new ideas build on the best again. Each is a recorded decision
with its reason. Every decision is a pure function of the campaign's state and the incoming event.
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
    HoneymoonStarted,
    Idea,
    IdeaBase,
    IdeaCleared,
    IdeaRejected,
    IdeasProposed,
    IdeasRequested,
    JobFailed,
    LeapStarted,
    Objective,
    ObjectiveFailed,
    ObjectiveSet,
    ProtectionEstablished,
    SupervisoryAction,
    ResourcesFailed,
    ResultRejected,
    ResultValidated,
    RolledBack,
    ServiceFailed,
    SotaCertified,
    SotaRefuted,
    StallDetected,
    WorkItem,
)

MAX_CANDIDATES = 3
LEAP_AFTER = 3  # PARAM ideas in a row before a structural idea is asked for
HONEYMOON_FOLLOW_UPS = 5
NO_MODEL = "no-model"

RELEVANT = frozenset(
    {
        "CampaignStarted", "ResourcesFailed", "ObjectiveSet", "ObjectiveFailed", "EnvironmentReady",
        "EnvironmentFailed", "BaselineRequested", "ExperimentDispatched", "ResultValidated",
        "ResultRejected", "JobFailed", "StallDetected", "BaselineReproduced", "IdeasRequested",
        "IdeasProposed", "IdeaCleared", "IdeaRejected", "BestUpdated", "BudgetExhausted",
        "CandidateNominated", "SotaCertified", "SotaRefuted", "CampaignCompleted",
        "LeapStarted", "HoneymoonStarted", "RolledBack", "ProtectionEstablished", "SupervisoryAction",
        "ServiceFailed",
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
    kind: str = "PARAM"


@dataclass
class Honeymoon:
    """A structural idea that did not beat the best, as the base of a bounded number of follow-ups."""

    base: IdeaBase
    limit: int
    follow_ups: list[str] = field(default_factory=list)


@dataclass
class CampaignState:
    campaign: str
    started: CampaignStarted | None = None
    objective: Objective | None = None
    snapshot_sha256: str | None = None
    environment_bin: str | None = None
    shadow_guards: list[str] = field(default_factory=list)
    protected_symbols: dict[str, str] = field(default_factory=dict)
    search_stopped: bool = False
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
    idea_kinds: dict[str, str] = field(default_factory=dict)
    best: IdeaBase | None = None
    param_streak: list[str] = field(default_factory=list)
    structural_possible: bool = False
    leap_round: int | None = None
    leap_rounds: set[int] = field(default_factory=set)
    honeymoon: Honeymoon | None = None
    honeymoons: set[str] = field(default_factory=set)

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
        return self.wall_clock_exhausted or self.out_of_ideas or self.search_stopped or self.idea_experiments() >= self.budget.max_experiments

    def base(self) -> IdeaBase | None:
        """What new ideas build on: the honeymoon's structural idea, else the best so far."""
        return self.honeymoon.base if self.honeymoon is not None else self.best

    def honeymoon_full(self) -> bool:
        return self.honeymoon is not None and len(self.honeymoon.follow_ups) >= self.honeymoon.limit


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
                first_time = event.experiment_id not in state.experiments
                kind = state.idea_kinds.get(event.idea_id or "", "PARAM")
                state.experiments[event.experiment_id] = Experiment(event.purpose, event.idea_id, dict(event.params), event.patch, kind=kind)
                if event.idea_id is not None:
                    state.queue = [idea for idea in state.queue if idea.idea_id != event.idea_id]
                if first_time and event.purpose == "idea" and event.idea_id is not None:
                    _count_dispatch(state, event.idea_id, kind)
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
                if state.best is None:
                    state.best = IdeaBase(params=state.objective.baseline_params if state.objective else {}, value=event.mean)
            case IdeasRequested():
                state.ideas_round, state.request_open = event.round, True
            case IdeasProposed() if event.round == state.ideas_round:
                state.request_open = False
                state.ideas_awaiting_audit += len(event.ideas)
                state.out_of_ideas = state.out_of_ideas or not event.ideas
                state.structural_possible = not event.brain.startswith(NO_MODEL)
                if state.leap_round == event.round:
                    state.leap_round = None
            case IdeaCleared():
                state.ideas_awaiting_audit = max(0, state.ideas_awaiting_audit - 1)
                state.queue.append(event.idea)
                state.idea_kinds[event.idea.idea_id] = event.idea.kind
            case IdeaRejected():
                state.ideas_awaiting_audit = max(0, state.ideas_awaiting_audit - 1)
            case BestUpdated() if _news(state, event):
                state.best_value = event.value
                experiment = state.experiments.get(event.experiment_id)
                state.best = IdeaBase(idea_id=event.idea_id, params=dict(event.params), patch=experiment.patch if experiment else None, value=event.value)
                state.honeymoon = None
            case LeapStarted() if event.round not in state.leap_rounds:
                state.leap_rounds.add(event.round)
                state.leap_round = event.round
                state.param_streak = []
            case HoneymoonStarted() if event.idea_id not in state.honeymoons:
                state.honeymoons.add(event.idea_id)
                experiment = state.experiments.get(f"idea-{event.idea_id}")
                params, patch = (dict(experiment.params), experiment.patch) if experiment else ({}, None)
                state.honeymoon = Honeymoon(IdeaBase(idea_id=event.idea_id, params=params, patch=patch, value=event.value), event.follow_ups)
            case RolledBack() if state.honeymoon is not None and state.honeymoon.base.idea_id == event.from_idea_id:
                state.honeymoon = None
                state.param_streak = []
            case BudgetExhausted():
                state.wall_clock_exhausted = True
            case ProtectionEstablished():
                state.shadow_guards = list(event.shadow_guards)
                state.protected_symbols = dict(event.protected_symbols)
            case SupervisoryAction(action="fallback" | "terminate"):
                state.search_stopped = True
            case SupervisoryAction(action="rollback"):
                state.queue = []
            case CandidateNominated():
                if event.idea_id not in state.nominated:
                    state.nominated.append(event.idea_id)
                state.awaiting_verdict = True
            case SotaCertified() | SotaRefuted():
                state.awaiting_verdict = False
            case CampaignCompleted():
                state.completed = True
        return state


def _news(state: CampaignState, event: BestUpdated) -> bool:
    """False for a best already known or beaten: a service sees its own events twice (at commit and from the bus)."""
    if state.best is not None and state.best.idea_id == event.idea_id and state.best_value == event.value:
        return False
    if state.best_value is None or state.objective is None:
        return True
    return state.objective.better(event.value, state.best_value)


def _count_dispatch(state: CampaignState, idea_id: str, kind: str) -> None:
    """The Leap rule's streak of PARAM ideas, and the honeymoon's follow-ups (which are not a streak)."""
    if state.honeymoon is not None and idea_id != state.honeymoon.base.idea_id:
        state.honeymoon.follow_ups.append(idea_id)
    elif kind == "PARAM":
        state.param_streak.append(idea_id)
    else:
        state.param_streak = []


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
        case ServiceFailed():
            _complete(plan, "failed", failure_reason(event))
        case BudgetExhausted() if state.baseline_mean is None:
            _complete(plan, "failed", f"the wall-clock budget ({event.limit:g} s) ran out before the baseline was reproduced")
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
        case SupervisoryAction(action="terminate"):
            _complete(plan, "failed", f"monitor: {event.reason}")
        case SupervisoryAction():
            _advance(plan)
    return plan.outputs


def failure_reason(failure: ServiceFailed) -> str:
    return f"{failure.service} failed {failure.stage} {failure.failed_event_type}: {failure.reason}"


def on_own_failure(state: CampaignState, failure: ServiceFailed) -> list[Decision]:
    """The scheduler itself could not act on a campaign's event: the campaign ends, failed, with why."""
    if state.completed or state.started is None:
        return []
    return [CampaignCompleted(campaign=state.campaign, outcome="failed", reason=failure_reason(failure), idea_experiments=state.idea_experiments())]


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
        protected_paths=[*objective.protected_locations, *state.shadow_guards],
        protected_symbols=dict(state.protected_symbols),
        timeout_seconds=objective.timeout_seconds,
        pool=state.started.pool,
        metrics=objective.metrics,
        applications=objective.applications,
        seed_application=objective.seed,
    )


def _after_result(plan: _Plan, event: Event) -> None:
    state = plan.state
    experiment = state.experiments.get(getattr(event, "experiment_id", ""))
    if experiment is None or experiment.purpose == "verification":
        return
    if experiment.purpose == "baseline":
        _after_baseline_result(plan)
        return
    improved = False
    if experiment.status == "validated" and experiment.value is not None and state.objective is not None:
        if state.best_value is None or state.objective.better(experiment.value, state.best_value):
            improved = True
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
    if not improved:
        _honeymoon_or_rollback(plan, experiment)
    _advance(plan)


def _honeymoon_or_rollback(plan: _Plan, experiment: Experiment) -> None:
    """A structural idea short of the best starts a honeymoon; a honeymoon whose follow-ups are all back ends in rollback."""
    state = plan.state
    honeymoon = state.honeymoon
    if experiment.kind != "PARAM" and honeymoon is None and experiment.status == "validated" and experiment.value is not None and experiment.idea_id:
        plan.emit(
            HoneymoonStarted(
                campaign=state.campaign,
                idea_id=experiment.idea_id,
                value=experiment.value,
                best_value=state.best_value if state.best_value is not None else experiment.value,
                follow_ups=HONEYMOON_FOLLOW_UPS,
                reason=(
                    f"structural idea {experiment.idea_id} scored {experiment.value:.6g}, not better than the best {_value(state.best_value)}: "
                    f"up to {HONEYMOON_FOLLOW_UPS} follow-ups build on it before rolling back"
                ),
            )
        )
        return
    if honeymoon is None or experiment.idea_id not in honeymoon.follow_ups:
        return
    finished = [idea_id for idea_id in honeymoon.follow_ups if state.experiments.get(f"idea-{idea_id}", Experiment("idea", idea_id, {}, None)).status != "in_flight"]
    if len(finished) < honeymoon.limit:
        return
    best = state.best
    plan.emit(
        RolledBack(
            campaign=state.campaign,
            from_idea_id=honeymoon.base.idea_id or "",
            to_idea_id=best.idea_id if best else None,
            to_value=best.value if best else None,
            follow_ups_tried=finished,
            reason=(
                f"none of the {len(finished)} follow-ups of {honeymoon.base.idea_id} beat the best {_value(state.best_value)}: "
                f"new ideas build on {best.idea_id if best and best.idea_id else 'the paper baseline'} again"
            ),
        )
    )


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


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
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    tolerance = reproduction_tolerance(objective, std)
    gap = mean - objective.reported_value
    reproduced = abs(gap) <= tolerance
    plan.emit(
        BaselineReproduced(
            campaign=state.campaign,
            metric=objective.primary_metric,
            values=values,
            mean=mean,
            std=std,
            reported_value=objective.reported_value,
            gap_to_reported=gap,
            reproduced=reproduced,
            tolerance=tolerance,
        )
    )
    if not reproduced and not (state.started is not None and state.started.continue_unreproduced):
        _complete(plan, "not_reproduced", not_reproduced_reason(objective, mean, std, len(values), tolerance))
        return
    _advance(plan)


# Reproduced means within this share of the reported value, or within three seed standard
# deviations when the seeds vary more than that, unless the task card states its own tolerance.
RELATIVE_REPRODUCTION_TOLERANCE = 0.02
SEED_DEVIATIONS = 3.0


def reproduction_tolerance(objective: Objective, std: float) -> float:
    if objective.reproduction_tolerance is not None:
        return objective.reproduction_tolerance
    return max(RELATIVE_REPRODUCTION_TOLERANCE * abs(objective.reported_value), SEED_DEVIATIONS * std)


def not_reproduced_reason(objective: Objective, mean: float, std: float, seeds: int, tolerance: float) -> str:
    source = "the task card's" if objective.reproduction_tolerance is not None else f"{RELATIVE_REPRODUCTION_TOLERANCE:.0%} or {SEED_DEVIATIONS:g} seed deviations"
    return (
        f"the paper reports {objective.primary_metric} {objective.reported_value:.6g}; its code gives {mean:.6g} ± {std:.2g} over {seeds} seeds "
        f"(gap {mean - objective.reported_value:+.4g}, tolerance {tolerance:.4g}: {source}); --continue-unreproduced searches anyway"
    )


def _advance(plan: _Plan) -> None:
    """Fill free slots with cleared ideas, ask for more ideas, or wind the campaign down."""
    state = plan.state
    if state.baseline_mean is None or state.completed:
        return
    if not state.budget_spent() and not state.nominated:
        free = state.budget.parallelism - state.in_flight()
        seed = state.objective.baseline_seeds[0] if state.objective and state.objective.baseline_seeds else 0
        while free > 0 and state.queue and state.idea_experiments() < state.budget.max_experiments and not state.honeymoon_full():
            idea = state.queue[0]
            params = {**(state.objective.baseline_params if state.objective else {}), **idea.params}
            base = state.base()
            # Parameter ideas tune the code of the base; structural ideas carry their whole diff.
            patch = idea.patch if idea.patch is not None else (base.patch if base else None)
            _dispatch(plan, f"idea-{idea.idea_id}", "idea", idea.idea_id, params, seed, patch)
            free -= 1
        remaining = state.budget.max_experiments - state.idea_experiments() - len(state.queue)
        if free > 0 and remaining > 0 and not state.queue and not state.request_open and state.ideas_awaiting_audit == 0 and not state.honeymoon_full():
            _request_ideas(plan, min(free, remaining))
    _maybe_wind_down(plan)


def _request_ideas(plan: _Plan, count: int) -> None:
    state = plan.state
    round_ = state.ideas_round + 1
    structural = 0
    if leap_due(state):
        streak = list(state.param_streak)
        plan.emit(
            LeapStarted(
                campaign=state.campaign,
                round=round_,
                after_param_ideas=streak,
                reason=f"{len(streak)} PARAM ideas in a row ({', '.join(streak)}): the Leap rule asks for a structural idea",
            )
        )
        structural = 1
    plan.emit(IdeasRequested(campaign=state.campaign, count=count, round=round_, structural=structural, base=state.base()))


def leap_due(state: CampaignState) -> bool:
    """Three PARAM ideas in a row, a model to ask, and no structural idea already on its way."""
    if not state.structural_possible or state.leap_round is not None or state.honeymoon is not None:
        return False
    if len(state.param_streak) < LEAP_AFTER:
        return False
    waiting = any(idea.kind != "PARAM" for idea in state.queue)
    running = any(e.kind != "PARAM" and e.status == "in_flight" for e in state.experiments.values() if e.purpose == "idea")
    return not waiting and not running


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
    verdict = f"no candidate survived certification ({tried} tried)" if tried else "no idea beat the reproduced baseline"
    _complete(plan, "not_improved", f"{verdict}; {why_the_search_ended(state)}")


def why_the_search_ended(state: CampaignState) -> str:
    """The reason a person reads first: which budget or limit ended the search."""
    ran = f"{state.idea_experiments()} idea experiment(s) ran"
    if state.wall_clock_exhausted:
        return f"the wall-clock budget ({state.budget.wall_clock_seconds:g} s) ran out; {ran}"
    if state.search_stopped:
        return f"the monitor stopped the search; {ran}"
    if state.idea_experiments() >= state.budget.max_experiments:
        return f"the experiment budget was spent ({ran} of {state.budget.max_experiments})"
    if state.out_of_ideas:
        return f"the ideas ran out; {ran}"
    return ran


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


def stop(state: CampaignState, reason: str) -> list[Decision]:
    """A person stops a running campaign: it ends now, and the runners withdraw its work."""
    if state.started is None or state.completed:
        return []
    return [CampaignCompleted(campaign=state.campaign, outcome="stopped", reason=f"stopped by a person: {reason}", idea_experiments=state.idea_experiments())]


def start(campaign: str, paper_path: str, budget: Budget, pool: str, continue_unreproduced: bool = False) -> CampaignStarted:
    return CampaignStarted(campaign=campaign, paper_path=paper_path, budget=budget, pool=pool, continue_unreproduced=continue_unreproduced)

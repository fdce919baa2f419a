"""What the ideator decides: which history the brains see, how a round is split between a model's
structural ideas and parameter ideas, and the events that record one round.

History holds the baseline and every proposed idea with its status. Ideas without a validated
value (pending, rejected, failed, stalled) are passed to the parameter search with no value: the
no-model brain keeps them as in-flight trials, so TPE neither repeats them nor searches right next
to them. The model sees the same history as text, with what the supervisor rejected and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from shared.brain import CallScope, IdeationRequest, ModelLedger, PastTrial, uses_model
from shared.contracts import (
    BaselineReproduced,
    BrainFellBack,
    BrainSelected,
    Event,
    Idea,
    IdeaBase,
    IdeaCleared,
    IdeaDropped,
    IdeaRejected,
    IdeasProposed,
    IdeasRequested,
    JobFailed,
    ModelCalled,
    Objective,
    ObjectiveSet,
    ResultRejected,
    ResultValidated,
    StallDetected,
)

AGENT = "ideator"
NO_MODEL = "no-model"
RELEVANT = frozenset(
    {
        "ObjectiveSet", "BaselineReproduced", "IdeasProposed", "IdeaCleared", "IdeaRejected",
        "ResultValidated", "ResultRejected", "JobFailed", "StallDetected", "IdeaDropped",
        "ModelCalled", "BrainSelected", "BrainFellBack",
    }
)
IDEA_EXPERIMENT_PREFIX = "idea-"
NOTE_LIMIT = 300


@dataclass
class IdeaOutcome:
    status: str  # "validated", "rejected", "failed", "stalled", "dropped"
    value: float | None = None
    reason: str = ""


@dataclass
class IdeatorState:
    campaign: str
    objective: Objective | None = None
    snapshot_sha256: str | None = None
    baseline_mean: float | None = None
    proposed: dict[str, dict[str, Any]] = field(default_factory=dict)
    ideas: dict[str, Idea] = field(default_factory=dict)
    cleared: set[str] = field(default_factory=set)
    outcomes: dict[str, IdeaOutcome] = field(default_factory=dict)
    answered_rounds: set[int] = field(default_factory=set)
    models: ModelLedger = field(default_factory=ModelLedger)
    brain_selected: bool = False
    model_off: str | None = None  # why the model is no longer asked in this campaign


def idea_of_experiment(experiment_id: str) -> str | None:
    if experiment_id.startswith(IDEA_EXPERIMENT_PREFIX):
        return experiment_id[len(IDEA_EXPERIMENT_PREFIX):]
    return None


class IdeatorDomain:
    relevant = RELEVANT

    def initial_state(self, campaign: str) -> IdeatorState:
        return IdeatorState(campaign=campaign)

    def evolve(self, state: IdeatorState, event: Event) -> IdeatorState:  # noqa: C901 - one branch per event type reads best
        if isinstance(event, ObjectiveSet):
            state.objective, state.snapshot_sha256 = event.objective, event.snapshot_sha256
        elif isinstance(event, BaselineReproduced):
            state.baseline_mean = event.mean
        elif isinstance(event, IdeasProposed):
            state.answered_rounds.add(event.round)
            for idea in event.ideas:
                state.proposed[idea.idea_id] = dict(idea.params)
                state.ideas[idea.idea_id] = idea
        elif isinstance(event, IdeaDropped):
            state.ideas[event.idea.idea_id] = event.idea
            state.outcomes[event.idea.idea_id] = IdeaOutcome("dropped", reason=f"{event.reason}: {event.error}")
        elif isinstance(event, IdeaCleared):
            state.cleared.add(event.idea.idea_id)
        elif isinstance(event, IdeaRejected):
            state.outcomes[event.idea.idea_id] = IdeaOutcome("rejected", reason=f"rule {event.rule}: {_evidence(event.evidence)}")
        elif isinstance(event, ResultValidated) and event.purpose == "idea":
            idea_id = event.idea_id or idea_of_experiment(event.experiment_id)
            if idea_id is not None:
                value = event.metrics.get(state.objective.primary_metric) if state.objective else None
                state.outcomes[idea_id] = IdeaOutcome("validated", value) if value is not None else IdeaOutcome("rejected", reason="no primary metric")
        elif isinstance(event, ResultRejected) and event.purpose == "idea":
            idea_id = event.idea_id or idea_of_experiment(event.experiment_id)
            if idea_id is not None:
                state.outcomes[idea_id] = IdeaOutcome("rejected", reason=f"result rule {event.rule}: {_evidence(event.evidence)}")
        elif isinstance(event, JobFailed | StallDetected):
            idea_id = idea_of_experiment(event.experiment_id)
            # A validated result is final; a late failure or stall report does not undo it.
            if idea_id is not None and _unscored(state, idea_id):
                reason = f"{event.stage}: {event.reason}" if isinstance(event, JobFailed) else "no sign of life"
                state.outcomes[idea_id] = IdeaOutcome("failed" if isinstance(event, JobFailed) else "stalled", reason=reason)
        elif isinstance(event, ModelCalled):
            state.models.add(event)
        elif isinstance(event, BrainSelected) and event.agent == AGENT:
            state.brain_selected = True
        elif isinstance(event, BrainFellBack) and event.agent == AGENT and event.permanent:
            state.model_off = event.reason
        return state


def _unscored(state: IdeatorState, idea_id: str) -> bool:
    outcome = state.outcomes.get(idea_id)
    return outcome is None or outcome.status != "validated"


def _evidence(evidence: dict[str, Any]) -> str:
    text = evidence.get("reason") if isinstance(evidence.get("reason"), str) else None
    details = {k: v for k, v in evidence.items() if k != "reason"}
    parts = [text] if text else []
    if details:
        parts.append(json.dumps(details, sort_keys=True, default=str))
    return _short("; ".join(parts) or "no evidence")


def _short(text: str, limit: int = NOTE_LIMIT) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


# ---------------------------------------------------------------- what the brains see


def history(state: IdeatorState) -> list[PastTrial]:
    """Every parameter idea tried so far, baseline first, in proposal order (structural ideas are the model's)."""
    trials: list[PastTrial] = []
    if state.objective is not None and state.baseline_mean is not None:
        trials.append(PastTrial(state.objective.baseline_params, state.baseline_mean, "baseline"))
    for idea_id, params in state.proposed.items():
        idea = state.ideas.get(idea_id)
        if idea is not None and idea.kind != "PARAM":
            continue
        outcome = state.outcomes.get(idea_id)
        if outcome is None:
            trials.append(PastTrial(params, None, "pending"))
        else:
            trials.append(PastTrial(params, outcome.value, outcome.status))
    return trials


def history_notes(state: IdeatorState) -> list[str]:
    """One line per idea for the model: what it was, and what became of it."""
    objective = state.objective
    metric = objective.primary_metric if objective else "value"
    notes: list[str] = []
    if state.baseline_mean is not None:
        notes.append(f"baseline (the paper's code and parameters): {metric} {state.baseline_mean:.6g}")
    for idea_id, idea in state.ideas.items():
        what = f"{idea.kind} {json.dumps(idea.params, sort_keys=True)}" if idea.kind == "PARAM" else f"{idea.kind} {_short(idea.rationale, 120)!r}"
        outcome = state.outcomes.get(idea_id)
        if outcome is None:
            status = "pending"
        elif outcome.status == "validated" and outcome.value is not None:
            verdict = ""
            if objective is not None and state.baseline_mean is not None:
                verdict = " (better than the baseline)" if objective.better(outcome.value, state.baseline_mean) else " (not better than the baseline)"
            status = f"validated, {metric} {outcome.value:.6g}{verdict}"
        else:
            status = f"{outcome.status}" + (f": {outcome.reason}" if outcome.reason else "")
        notes.append(f"{idea_id} {what}: {status}")
    return notes


def ideation_request(state: IdeatorState, requested: IdeasRequested) -> IdeationRequest | None:
    """What to ask the parameter search for this round, or None when the round is answered or no objective is known."""
    if requested.round in state.answered_rounds or state.objective is None:
        return None
    return IdeationRequest(
        campaign=state.campaign,
        round=requested.round,
        count=requested.count,
        objective=state.objective,
        history=history(state),
    )


def base_of(state: IdeatorState, requested: IdeasRequested) -> IdeaBase:
    """What this round's ideas build on: the scheduler's base, else the paper's own code and parameters."""
    if requested.base is not None:
        return requested.base
    return IdeaBase(params=state.objective.baseline_params if state.objective else {}, value=state.baseline_mean)


# ---------------------------------------------------------------- planning a round


@dataclass(frozen=True)
class RoundPlan:
    """How a round is answered: structural ideas wanted from the model, and what to record first."""

    structural: int
    brain: str
    record: tuple[Event, ...] = ()


def plan_round(state: IdeatorState, requested: IdeasRequested, brain: Any) -> RoundPlan:
    """Whether the model is asked this round; the first round with a model records which one it is."""
    if not uses_model(brain):
        return RoundPlan(0, brain.name)
    record: list[Event] = []
    if not state.brain_selected:
        record.append(brain.selected(AGENT, requested.campaign))
    if state.model_off is not None:
        return RoundPlan(0, NO_MODEL, tuple(record))
    unavailable = brain.unavailable(scope_for(state, requested))
    if unavailable is not None:
        record.append(BrainFellBack(campaign=requested.campaign, agent=AGENT, purpose="code-ideas", kind=unavailable.kind, reason=unavailable.reason, permanent=unavailable.permanent))
        return RoundPlan(0, NO_MODEL if unavailable.permanent else brain.name, tuple(record))
    return RoundPlan(min(requested.structural, requested.count), brain.name, tuple(record))


def scope_for(state: IdeatorState, requested: IdeasRequested, suffix: str = "") -> CallScope:
    return state.models.scope(AGENT, requested.campaign, f"ideas/round-{requested.round}{suffix}")


def decide_proposal(
    requested: IdeasRequested,
    ideas: list[Idea],
    brain: str,
    record: list[Event] | tuple[Event, ...] = (),
    dropped: list[IdeaDropped] | tuple[IdeaDropped, ...] = (),
) -> list[Event]:
    """The round's events: the model's record, the dropped ideas, then the ideas themselves."""
    return [*record, *dropped, IdeasProposed(campaign=requested.campaign, ideas=ideas, brain=brain, round=requested.round)]

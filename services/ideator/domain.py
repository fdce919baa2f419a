"""What the ideator decides: which history the brain sees, and one IdeasProposed per round.

History holds the baseline and every proposed idea with its status. Ideas without a validated
value (pending, rejected, failed, stalled) are passed with no value: the no-model brain keeps
them as in-flight trials, so TPE neither repeats them nor searches right next to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.brain import IdeationRequest, PastTrial
from shared.contracts import (
    BaselineReproduced,
    Event,
    Idea,
    IdeaCleared,
    IdeaRejected,
    IdeasProposed,
    IdeasRequested,
    JobFailed,
    Objective,
    ObjectiveSet,
    ResultRejected,
    ResultValidated,
    StallDetected,
)

RELEVANT = frozenset(
    {
        "ObjectiveSet", "BaselineReproduced", "IdeasProposed", "IdeaCleared", "IdeaRejected",
        "ResultValidated", "ResultRejected", "JobFailed", "StallDetected",
    }
)
IDEA_EXPERIMENT_PREFIX = "idea-"


@dataclass
class IdeaOutcome:
    status: str  # "validated", "rejected", "failed", "stalled"
    value: float | None = None


@dataclass
class IdeatorState:
    campaign: str
    objective: Objective | None = None
    baseline_mean: float | None = None
    proposed: dict[str, dict[str, Any]] = field(default_factory=dict)
    cleared: set[str] = field(default_factory=set)
    outcomes: dict[str, IdeaOutcome] = field(default_factory=dict)
    answered_rounds: set[int] = field(default_factory=set)


def idea_of_experiment(experiment_id: str) -> str | None:
    if experiment_id.startswith(IDEA_EXPERIMENT_PREFIX):
        return experiment_id[len(IDEA_EXPERIMENT_PREFIX):]
    return None


class IdeatorDomain:
    relevant = RELEVANT

    def initial_state(self, campaign: str) -> IdeatorState:
        return IdeatorState(campaign=campaign)

    def evolve(self, state: IdeatorState, event: Event) -> IdeatorState:
        if isinstance(event, ObjectiveSet):
            state.objective = event.objective
        elif isinstance(event, BaselineReproduced):
            state.baseline_mean = event.mean
        elif isinstance(event, IdeasProposed):
            state.answered_rounds.add(event.round)
            for idea in event.ideas:
                state.proposed[idea.idea_id] = dict(idea.params)
        elif isinstance(event, IdeaCleared):
            state.cleared.add(event.idea.idea_id)
        elif isinstance(event, IdeaRejected):
            state.outcomes[event.idea.idea_id] = IdeaOutcome("rejected")
        elif isinstance(event, ResultValidated) and event.purpose == "idea":
            idea_id = event.idea_id or idea_of_experiment(event.experiment_id)
            if idea_id is not None:
                value = event.metrics.get(state.objective.primary_metric) if state.objective else None
                state.outcomes[idea_id] = IdeaOutcome("validated", value) if value is not None else IdeaOutcome("rejected")
        elif isinstance(event, ResultRejected) and event.purpose == "idea":
            idea_id = event.idea_id or idea_of_experiment(event.experiment_id)
            if idea_id is not None:
                state.outcomes[idea_id] = IdeaOutcome("rejected")
        elif isinstance(event, JobFailed | StallDetected):
            idea_id = idea_of_experiment(event.experiment_id)
            # A validated result is final; a late failure or stall report does not undo it.
            if idea_id is not None and _unscored(state, idea_id):
                state.outcomes[idea_id] = IdeaOutcome("failed" if isinstance(event, JobFailed) else "stalled")
        return state


def _unscored(state: IdeatorState, idea_id: str) -> bool:
    outcome = state.outcomes.get(idea_id)
    return outcome is None or outcome.status != "validated"


def history(state: IdeatorState) -> list[PastTrial]:
    """Everything tried so far, baseline first, in proposal order."""
    trials: list[PastTrial] = []
    if state.objective is not None and state.baseline_mean is not None:
        trials.append(PastTrial(state.objective.baseline_params, state.baseline_mean, "baseline"))
    for idea_id, params in state.proposed.items():
        outcome = state.outcomes.get(idea_id)
        if outcome is None:
            trials.append(PastTrial(params, None, "pending"))
        else:
            trials.append(PastTrial(params, outcome.value, outcome.status))
    return trials


def ideation_request(state: IdeatorState, requested: IdeasRequested) -> IdeationRequest | None:
    """What to ask the brain for this round, or None when the round is answered or no objective is known."""
    if requested.round in state.answered_rounds or state.objective is None:
        return None
    return IdeationRequest(
        campaign=state.campaign,
        round=requested.round,
        count=requested.count,
        objective=state.objective,
        history=history(state),
    )


def decide_proposal(requested: IdeasRequested, ideas: list[Idea], brain: str) -> list[Event]:
    return [IdeasProposed(campaign=requested.campaign, ideas=ideas, brain=brain, round=requested.round)]

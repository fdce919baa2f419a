"""The ideator: one answer per round, and a history that tells the brain what each idea scored."""

from __future__ import annotations

from services.ideator.domain import IdeatorDomain, IdeatorState, decide_proposal, history, ideation_request
from services.ideator.handlers import reaction
from shared.brain import IdeationRequest, NoModelBrain, PastTrial
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
    ParameterSpec,
    ResultRejected,
    ResultValidated,
)

CAMPAIGN = "c1"
OBJECTIVE = Objective(
    title="toy", method="toy", primary_metric="accuracy", direction="maximize", reported_value=0.9,
    reported_source="table 1", protected_paths=["eval.py"], train_command="python train.py",
    evaluate_command="python eval.py",
    search_space={"lr": ParameterSpec(type="float", low=0.001, high=1.0, log=True, baseline=0.1)},
)


def fold(*events: Event) -> IdeatorState:
    domain = IdeatorDomain()
    state = domain.initial_state(CAMPAIGN)
    for event in events:
        assert event.event_type in domain.relevant
        state = domain.evolve(state, event)
    return state


def idea(idea_id: str, lr: float) -> Idea:
    return Idea(idea_id=idea_id, params={"lr": lr})


STARTED = (
    ObjectiveSet(campaign=CAMPAIGN, objective=OBJECTIVE, snapshot_sha256="s"),
    BaselineReproduced(campaign=CAMPAIGN, metric="accuracy", values=[0.8, 0.82], mean=0.81, std=0.01, reported_value=0.9, gap_to_reported=-0.09),
)
ROUND_ONE = IdeasProposed(
    campaign=CAMPAIGN, brain="no-model", round=1,
    ideas=[idea("r1-0", 0.2), idea("r1-1", 0.3), idea("r1-2", 0.4), idea("r1-3", 0.5), idea("r1-4", 0.6)],
)


def test_history_carries_baseline_and_every_idea_with_its_outcome():
    # The first round is proposed, then its ideas meet every possible fate.
    state = fold(
        *STARTED,
        ROUND_ONE,
        IdeaCleared(campaign=CAMPAIGN, idea=idea("r1-0", 0.2)),
        ResultValidated(campaign=CAMPAIGN, experiment_id="idea-r1-0", purpose="idea", idea_id="r1-0", metrics={"accuracy": 0.85}),
        ResultRejected(campaign=CAMPAIGN, experiment_id="idea-r1-1", purpose="idea", idea_id="r1-1", rule="R4", evidence={}),
        JobFailed(campaign=CAMPAIGN, experiment_id="idea-r1-2", purpose="idea", runner="r", stage="train", reason="crash", signature="x"),
        IdeaRejected(campaign=CAMPAIGN, idea=idea("r1-3", 0.5), rule="R2", evidence={}),
    )
    assert history(state) == [
        PastTrial({"lr": 0.1}, 0.81, "baseline"),
        PastTrial({"lr": 0.2}, 0.85, "validated"),
        PastTrial({"lr": 0.3}, None, "rejected"),
        PastTrial({"lr": 0.4}, None, "failed"),
        PastTrial({"lr": 0.5}, None, "rejected"),
        PastTrial({"lr": 0.6}, None, "pending"),
    ]


def test_a_late_failure_does_not_undo_a_validated_result():
    state = fold(
        *STARTED,
        ROUND_ONE,
        ResultValidated(campaign=CAMPAIGN, experiment_id="idea-r1-0", purpose="idea", idea_id="r1-0", metrics={"accuracy": 0.85}),
        JobFailed(campaign=CAMPAIGN, experiment_id="idea-r1-0", purpose="idea", runner="r", stage="train", reason="dup", signature="x"),
    )
    assert history(state)[1] == PastTrial({"lr": 0.2}, 0.85, "validated")


def test_baseline_and_verification_results_are_not_ideas():
    state = fold(
        *STARTED,
        ResultValidated(campaign=CAMPAIGN, experiment_id="baseline-s0", purpose="baseline", metrics={"accuracy": 0.8}),
        JobFailed(campaign=CAMPAIGN, experiment_id="verify-1-candidate-s1000", purpose="verification", runner="r", stage="train", reason="x", signature="x"),
    )
    assert state.outcomes == {}


def test_each_round_is_answered_once():
    state = fold(*STARTED, ROUND_ONE)
    assert ideation_request(state, IdeasRequested(campaign=CAMPAIGN, count=2, round=1)) is None
    request = ideation_request(state, IdeasRequested(campaign=CAMPAIGN, count=2, round=2))
    assert request is not None
    assert (request.campaign, request.round, request.count, request.objective) == (CAMPAIGN, 2, 2, OBJECTIVE)
    assert len(request.history) == 6


def test_no_request_before_the_objective_is_known():
    assert ideation_request(fold(), IdeasRequested(campaign=CAMPAIGN, count=2, round=1)) is None


def test_proposal_names_the_brain_and_the_round():
    requested = IdeasRequested(campaign=CAMPAIGN, count=1, round=3)
    [proposed] = decide_proposal(requested, [idea("r3-0", 0.2)], "no-model")
    assert isinstance(proposed, IdeasProposed)
    assert (proposed.round, proposed.brain, proposed.ideas[0].idea_id) == (3, "no-model", "r3-0")


class RecordingBrain:
    name = "recording"

    def __init__(self) -> None:
        self.requests: list[IdeationRequest] = []

    def propose_ideas(self, request: IdeationRequest) -> list[Idea]:
        self.requests.append(request)
        return [idea(f"r{request.round}-0", 0.7)]

    def propose_repair(self, failure):  # pragma: no cover - not used by the ideator
        return None


async def test_reaction_asks_the_injected_brain_once_per_round():
    brain = RecordingBrain()
    react = reaction(brain)
    state = fold(*STARTED, ROUND_ONE)
    [proposed] = await react(state, IdeasRequested(campaign=CAMPAIGN, count=1, round=2), None)  # type: ignore[arg-type]
    assert proposed.brain == "recording" and proposed.ideas[0].idea_id == "r2-0"
    assert await react(state, IdeasRequested(campaign=CAMPAIGN, count=1, round=1), None) == []  # type: ignore[arg-type]
    assert len(brain.requests) == 1


async def test_no_model_brain_answers_with_admitted_ideas():
    state = fold(*STARTED)
    [proposed] = await reaction(NoModelBrain())(state, IdeasRequested(campaign=CAMPAIGN, count=3, round=1), None)  # type: ignore[arg-type]
    assert proposed.brain == "no-model" and len(proposed.ideas) == 3
    assert all(OBJECTIVE.search_space["lr"].admits(i.params["lr"]) for i in proposed.ideas)


# ---------------------------------------------------------------- rounds with a model

import uuid  # noqa: E402

from services.ideator.domain import AGENT, history_notes, plan_round  # noqa: E402
from shared.brain import CallScope, Fallback  # noqa: E402
from shared.contracts import BrainFellBack, BrainSelected, IdeaDropped, ModelCalled  # noqa: E402


class ModelBrainStub:
    """What plan_round asks of a brain with a model: its name, its description, whether it may be called."""

    uses_model = True
    name = "ollama:coder"

    def __init__(self, unavailable: Fallback | None = None) -> None:
        self._unavailable = unavailable
        self.scopes: list[CallScope] = []

    def selected(self, agent: str, campaign: str) -> BrainSelected:
        return BrainSelected(campaign=campaign, agent=agent, brain=self.name, backend="ollama", model="coder", token_budget=1000)

    def unavailable(self, scope: CallScope) -> Fallback | None:
        self.scopes.append(scope)
        return self._unavailable


STRUCTURAL = IdeasRequested(campaign=CAMPAIGN, count=2, round=2, structural=1)


def test_without_a_model_a_round_is_parameter_search_only():
    plan = plan_round(fold(*STARTED), STRUCTURAL, NoModelBrain())
    assert (plan.structural, plan.brain, plan.record) == (0, "no-model", ())


def test_the_first_round_with_a_model_records_which_model_and_asks_for_the_structural_ideas():
    plan = plan_round(fold(*STARTED), STRUCTURAL, ModelBrainStub())
    assert plan.structural == 1 and plan.brain == "ollama:coder"
    [selected] = plan.record
    assert isinstance(selected, BrainSelected) and selected.agent == AGENT and selected.token_budget == 1000
    later = fold(*STARTED, selected)
    assert plan_round(later, STRUCTURAL, ModelBrainStub()).record == ()


def test_a_spent_budget_answers_with_the_no_model_brain_and_says_so_once():
    spent = Fallback("token_budget", "the token budget of 0 tokens is spent", permanent=True)
    plan = plan_round(fold(*STARTED), IdeasRequested(campaign=CAMPAIGN, count=2, round=1), ModelBrainStub(spent))
    assert plan.structural == 0 and plan.brain == "no-model"
    selected, fell_back = plan.record
    assert isinstance(fell_back, BrainFellBack) and fell_back.kind == "token_budget" and fell_back.permanent
    state = fold(*STARTED, selected, fell_back)
    assert state.model_off is not None
    again = plan_round(state, STRUCTURAL, ModelBrainStub())
    assert (again.structural, again.brain, again.record) == (0, "no-model", ())


def test_a_passing_failure_keeps_the_model_for_later_rounds():
    plan = plan_round(fold(*STARTED), STRUCTURAL, ModelBrainStub(Fallback("timeout", "slow", permanent=False)))
    assert plan.structural == 0 and plan.brain == "ollama:coder"


def test_the_model_budget_counts_every_recorded_call_once():
    call = ModelCalled(
        campaign=CAMPAIGN, agent="objective", purpose="objective-reading", call_key="objective/reading#1", backend="ollama",
        model="coder", prompt_sha256="x", prompt_chars=10, outcome="answered", prompt_tokens=300, completion_tokens=20,
        event_id=uuid.uuid4(),
    )
    state = fold(*STARTED, call, call)
    brain = ModelBrainStub()
    plan_round(state, STRUCTURAL, brain)
    assert brain.scopes[0].tokens_used == 320 and brain.scopes[0].scope == "ideas/round-2"


def test_the_model_sees_what_was_tried_and_what_became_of_it():
    code = Idea(idea_id="r2-c0", kind="CODE", params={"lr": 0.1}, patch="diff", rationale="Warm up: smoother start")
    state = fold(
        *STARTED,
        ROUND_ONE,
        ResultValidated(campaign=CAMPAIGN, experiment_id="idea-r1-0", purpose="idea", idea_id="r1-0", metrics={"accuracy": 0.85}),
        IdeaRejected(campaign=CAMPAIGN, idea=idea("r1-3", 0.5), rule="R2", evidence={"reason": "the patch touches protected paths", "paths": ["eval.py"]}),
        IdeasProposed(campaign=CAMPAIGN, ideas=[code], brain="ollama:coder", round=2),
        IdeaDropped(campaign=CAMPAIGN, idea=Idea(idea_id="r2-c1", kind="ALGO", rationale="Blend: two models"), round=2, reason="its diff did not apply", error="patch failed: train.py:3"),
    )
    notes = history_notes(state)
    assert notes[0] == "baseline (the paper's code and parameters): accuracy 0.81"
    assert 'r1-0 PARAM {"lr": 0.2}: validated, accuracy 0.85 (better than the baseline)' in notes
    assert any(n.startswith("r1-3 PARAM") and "rejected: rule R2: the patch touches protected paths" in n and "eval.py" in n for n in notes)
    assert "r2-c0 CODE 'Warm up: smoother start': pending" in notes
    assert any(n.startswith("r2-c1 ALGO") and "dropped: its diff did not apply: patch failed: train.py:3" in n for n in notes)
    # Parameter search sees parameter ideas only.
    assert all(trial.params != {"lr": 0.1} or trial.status == "baseline" for trial in history(state))

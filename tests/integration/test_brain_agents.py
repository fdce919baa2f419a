"""Agents thinking with a scripted model: the ideator's structural round (with real git against a real
snapshot) and the objective's reading of a paper, each with the record it commits, and replay of it."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.ideator.domain import IdeatorDomain, IdeatorState
from services.ideator.handlers import NOT_APPLYING, reaction
from services.ideator.workbench import Workbench
from services.objective.domain import ObjectiveDomain, build_objective, parse_task_card
from services.objective.handlers import reaction as objective_reaction
from shared.brain import NoModelBrain
from shared.brains.model import BrainLimits, ModelBrain
from shared.brains.recording import LiveTransport
from shared.brains.replay import verify_events
from shared.brains.wire import ScriptedBackend
from shared.contracts import (
    BaselineReproduced,
    Event,
    IdeaBase,
    IdeasProposed,
    IdeasRequested,
    ObjectiveSet,
    ResourcesPrepared,
)
from shared.runtime import Context
from shared.workspace import pack
from tests.scripted_ideas import PAPER, blend_diff, code_idea

CAMPAIGN = "c1"
BROKEN = "--- a/train.py\n+++ b/train.py\n@@ -1,3 +1,3 @@\n-this line is not in train.py\n+nor is this one\n context that does not exist\n"


class Artifacts:
    """The object store as a dict: content-addressed by sha256."""

    def __init__(self) -> None:
        self.items: dict[str, bytes] = {}

    async def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self.items[digest] = data
        return digest

    async def get(self, digest: str) -> bytes:
        return self.items[digest]


class Runtime:
    def __init__(self, artifacts: Artifacts) -> None:
        self.artifacts = artifacts
        self.settings = None


def context(artifacts: Artifacts) -> Context:
    return Context(now=datetime.now(UTC), runtime=Runtime(artifacts))  # type: ignore[arg-type]


def brain(answers: dict[str, Any], limits: BrainLimits | None = None) -> ModelBrain:
    return ModelBrain(LiveTransport(ScriptedBackend(Path("script.json"), model="coder", answers=answers)), limits or BrainLimits())


@pytest.fixture(scope="module")
def snapshot() -> tuple[bytes, dict[str, str]]:
    packed = pack(PAPER)
    return packed.data, packed.files


def stamp(event: Event, producer: str, cause: Event | None = None) -> Event:
    return event.model_copy(update={"event_id": uuid.uuid4(), "producer": producer, "time": datetime.now(UTC), "causation_id": cause.event_id if cause else None})


def started_ideator(snapshot: tuple[bytes, dict[str, str]], artifacts: Artifacts) -> tuple[IdeatorState, list[Event]]:
    data, files = snapshot
    digest = hashlib.sha256(data).hexdigest()
    artifacts.items[digest] = data
    card = parse_task_card((PAPER / "autosota.toml").read_text())
    objective = build_objective(card, (PAPER / "paper.md").read_text(), files, "numpy>=1.24")
    inputs = [
        stamp(ObjectiveSet(campaign=CAMPAIGN, objective=objective, snapshot_sha256=digest), "objective"),
        stamp(BaselineReproduced(campaign=CAMPAIGN, metric="rmse", values=[0.44, 0.46, 0.455], mean=0.4529, std=0.01, reported_value=0.453, gap_to_reported=0.0), "scheduler"),
    ]
    domain = IdeatorDomain()
    state = domain.initial_state(CAMPAIGN)
    for event in inputs:
        state = domain.evolve(state, event)
    return state, inputs


def structural_request(state: IdeatorState, count: int = 2, base: IdeaBase | None = None) -> IdeasRequested:
    assert state.objective is not None
    return IdeasRequested(campaign=CAMPAIGN, count=count, round=4, structural=1, base=base or IdeaBase(params=state.objective.baseline_params, value=0.4529))


async def answer(state: IdeatorState, request: IdeasRequested, thinker: Any, artifacts: Artifacts) -> list[Event]:
    domain = IdeatorDomain()
    return [o for o in await reaction(thinker)(domain.evolve(state, request), request, context(artifacts)) if isinstance(o, Event)]


# ---------------------------------------------------------------- the ideator's structural round


async def test_a_models_diff_becomes_an_idea_whose_patch_applies_to_the_snapshot(snapshot: tuple[bytes, dict[str, str]]) -> None:
    artifacts = Artifacts()
    state, _ = started_ideator(snapshot, artifacts)
    events = await answer(state, structural_request(state), brain({"code-ideas": {"ideas": [code_idea(blend_diff())]}}), artifacts)
    assert [e.event_type for e in events] == ["BrainSelected", "ModelCalled", "IdeasProposed"]
    selected, call, proposed = events
    assert selected.brain == "scripted:coder" and call.call_key == "ideas/round-4#1" and call.outcome == "answered"
    assert call.prompt is None and artifacts.items[call.prompt_sha256].decode().startswith("{")  # a large prompt goes to the store
    assert isinstance(proposed, IdeasProposed) and proposed.brain == "scripted:coder"
    structural, parameters = proposed.ideas
    assert (structural.idea_id, structural.kind, parameters.idea_id, parameters.kind) == ("r4-c0", "ALGO", "r4-0", "PARAM")
    assert structural.params == state.objective.baseline_params and structural.expected_effect  # type: ignore[union-attr]
    assert "index " in (structural.patch or "")  # composed by git against the snapshot
    with Workbench(snapshot[0]) as bench:
        assert bench.check(structural.patch or "") is None


async def test_a_diff_that_does_not_apply_is_sent_back_once_with_gits_error(snapshot: tuple[bytes, dict[str, str]]) -> None:
    artifacts = Artifacts()
    state, _ = started_ideator(snapshot, artifacts)
    thinker = brain({"code-ideas": {"ideas": [code_idea(BROKEN, "Broken")]}, "code-revision": code_idea(blend_diff(), "Fixed")})
    events = await answer(state, structural_request(state, count=1), thinker, artifacts)
    calls = [e for e in events if e.event_type == "ModelCalled"]
    assert [c.call_key for c in calls] == ["ideas/round-4#1", "ideas/round-4/revise-0#1"]
    assert [c.purpose for c in calls] == ["code-ideas", "code-revision"]
    revision_prompt = json.loads(artifacts.items[calls[1].prompt_sha256] if calls[1].prompt is None else calls[1].prompt)
    assert "does not apply" in revision_prompt["messages"][-1]["content"] and "patch" in revision_prompt["messages"][-1]["content"]
    [proposed] = [e for e in events if isinstance(e, IdeasProposed)]
    assert [i.rationale.split(":")[0] for i in proposed.ideas] == ["Fixed"]


async def test_a_diff_that_still_does_not_apply_is_dropped_with_its_reason(snapshot: tuple[bytes, dict[str, str]]) -> None:
    artifacts = Artifacts()
    state, _ = started_ideator(snapshot, artifacts)
    thinker = brain({"code-ideas": {"ideas": [code_idea(BROKEN, "Broken")]}, "code-revision": code_idea(BROKEN, "Still broken")})
    events = await answer(state, structural_request(state, count=2), thinker, artifacts)
    assert [e.event_type for e in events] == ["BrainSelected", "ModelCalled", "ModelCalled", "IdeaDropped", "IdeasProposed"]
    dropped, proposed = events[-2], events[-1]
    assert dropped.idea.idea_id == "r4-c0" and dropped.reason == NOT_APPLYING and "patch" in dropped.error
    assert [i.kind for i in proposed.ideas] == ["PARAM", "PARAM"]  # the round is filled by parameter search
    later = IdeatorDomain().evolve(IdeatorDomain().evolve(state, dropped), proposed)
    from services.ideator.domain import history, history_notes

    assert any("r4-c0 ALGO" in note and "dropped" in note for note in history_notes(later))
    assert all(trial.params != {} for trial in history(later))


async def test_a_structural_idea_builds_on_the_base_patch(snapshot: tuple[bytes, dict[str, str]]) -> None:
    artifacts = Artifacts()
    state, _ = started_ideator(snapshot, artifacts)
    with Workbench(snapshot[0]) as bench:
        base_patch = bench.compose(blend_diff())
    tweak = "--- a/train.py\n+++ b/train.py\n@@ -1,4 +1,4 @@\n WEEK = 7 * HORIZON\n-BLEND = 0.25  # weight of the MLP; the rest goes to the seasonal forecast\n+BLEND = 0.2  # weight of the MLP; the rest goes to the seasonal forecast\n \n \n"
    base = IdeaBase(idea_id="r3-c0", params=state.objective.baseline_params, patch=base_patch, value=0.34)  # type: ignore[union-attr]
    events = await answer(state, structural_request(state, count=1, base=base), brain({"code-ideas": {"ideas": [code_idea(tweak, "Less MLP")]}}), artifacts)
    [idea] = events[-1].ideas
    assert "+BLEND = 0.2 " in (idea.patch or "") and "+def seasonal_forecast" in (idea.patch or "")
    with Workbench(snapshot[0]) as bench:
        assert bench.check(idea.patch or "") is None


async def test_when_the_model_is_missing_parameter_search_answers_and_the_model_is_not_asked_again(snapshot: tuple[bytes, dict[str, str]]) -> None:
    artifacts = Artifacts()
    state, _ = started_ideator(snapshot, artifacts)
    thinker = brain({})  # the script has no answer: the scripted backend reports the model as not found
    events = await answer(state, structural_request(state), thinker, artifacts)
    assert [e.event_type for e in events] == ["BrainSelected", "ModelCalled", "BrainFellBack", "IdeasProposed"]
    fell_back = events[2]
    assert fell_back.kind == "model_not_found" and fell_back.permanent and len(events[-1].ideas) == 2
    domain = IdeatorDomain()
    for event in events:
        state = domain.evolve(state, stamp(event, "ideator"))
    again = await answer(state, IdeasRequested(campaign=CAMPAIGN, count=1, round=5, structural=1), thinker, artifacts)
    assert [e.event_type for e in again] == ["IdeasProposed"] and again[0].brain == "no-model"


async def test_replay_reproduces_the_round_and_reports_a_tampered_record(snapshot: tuple[bytes, dict[str, str]]) -> None:
    artifacts = Artifacts()
    state, inputs = started_ideator(snapshot, artifacts)
    request = stamp(structural_request(state), "scheduler")
    outputs = await answer(state, request, brain({"code-ideas": {"ideas": [code_idea(blend_diff())]}}), artifacts)
    recorded = [*inputs, request, *(stamp(o, "ideator", request) for o in outputs)]
    report = await verify_events(recorded, artifacts, services=["ideator"])
    assert report.ok, report.text()
    assert report.services[0].reproduced == 3
    tampered = [e.model_copy(update={"brain": "someone-else"}) if isinstance(e, IdeasProposed) else e for e in recorded]
    diverged = await verify_events(tampered, artifacts, services=["ideator"])
    assert not diverged.ok and "recorded BrainSelected, ModelCalled, IdeasProposed" in diverged.text()
    unrecorded = [e for e in recorded if e.event_type != "ModelCalled"]
    missing = await verify_events(unrecorded, artifacts, services=["ideator"])
    assert not missing.ok and "no recorded answer for ideator call 'ideas/round-4#1'" in (missing.services[0].error or "")


# ---------------------------------------------------------------- the objective's reading


READING = {
    "title": "TinyForecaster", "method": "TinyForecaster (ours)", "primary_metric": "rmse", "direction": "minimize",
    "reported_value": 0.453, "reported_quote": "| TinyForecaster (ours) | 0.453 | 0.359 |",
    "train_command": "python train.py", "evaluate_command": "python evaluate.py",
    "protected_paths": ["evaluate.py", "data/"], "secondary_metrics": [{"name": "mae", "tolerance": 0.05}],
}


def paper_without(tmp_path: Path, *lines: str, card: bool = True) -> tuple[bytes, dict[str, str]]:
    folder = tmp_path / "paper"
    shutil.copytree(PAPER, folder, ignore=shutil.ignore_patterns("outputs"))
    path = folder / "autosota.toml"
    if not card:
        path.unlink()
    else:
        text = path.read_text()
        for line in lines:
            assert line in text
            text = text.replace(line + "\n", "")
        path.write_text(text)
    packed = pack(folder)
    return packed.data, packed.files


async def read_objective(snapshot: tuple[bytes, dict[str, str]], thinker: Any) -> list[Event]:
    artifacts = Artifacts()
    digest = await artifacts.put(snapshot[0])
    prepared = ResourcesPrepared(campaign=CAMPAIGN, snapshot_sha256=digest, files=snapshot[1], size_bytes=len(snapshot[0]))
    domain = ObjectiveDomain()
    state = domain.evolve(domain.initial_state(CAMPAIGN), prepared)
    return [o for o in await objective_reaction(thinker)(state, prepared, context(artifacts)) if isinstance(o, Event)]


async def test_with_a_complete_card_the_objective_never_asks_the_model(snapshot: tuple[bytes, dict[str, str]]) -> None:
    events = await read_objective(snapshot, brain({}))
    assert [e.event_type for e in events] == ["ObjectiveSet"] and "table row" in events[0].objective.reported_source


async def test_without_a_model_a_card_that_lacks_a_field_fails_as_before(tmp_path: Path) -> None:
    events = await read_objective(paper_without(tmp_path, 'evaluate_command = "python evaluate.py"'), NoModelBrain())
    assert [e.event_type for e in events] == ["ObjectiveFailed"]
    assert events[0].reason == "autosota.toml lacks required fields: [experiment] evaluate_command"


async def test_a_model_fills_only_what_the_card_lacks(tmp_path: Path) -> None:
    reading = {**READING, "evaluate_command": "python evaluate.py", "primary_metric": "mae"}
    events = await read_objective(paper_without(tmp_path, 'evaluate_command = "python evaluate.py"'), brain({"objective-reading": reading}))
    assert [e.event_type for e in events] == ["BrainSelected", "ModelCalled", "ObjectiveSet"]
    objective = events[-1].objective
    assert objective.evaluate_command == "python evaluate.py" and objective.primary_metric == "rmse"  # the card's field wins
    assert objective.reported_value == 0.453 and "table row" in objective.reported_source
    assert events[1].agent == "objective" and events[1].purpose == "objective-reading"


async def test_a_model_reads_a_paper_that_has_no_card(tmp_path: Path) -> None:
    events = await read_objective(paper_without(tmp_path, card=False), brain({"objective-reading": READING}))
    objective = events[-1].objective
    assert (objective.primary_metric, objective.direction, objective.evaluate_command) == ("rmse", "minimize", "python evaluate.py")
    assert objective.protected_paths == ["evaluate.py", "data"] and objective.secondary_metrics == {"mae": 0.05}
    assert objective.search_space == {} and objective.reported_value == 0.453


async def test_a_reading_whose_quote_is_not_in_the_paper_is_refused(tmp_path: Path) -> None:
    made_up = {**READING, "reported_quote": "we reach an RMSE of 0.453 on every benchmark"}
    events = await read_objective(paper_without(tmp_path, card=False), brain({"objective-reading": made_up}))
    assert events[-1].event_type == "ObjectiveFailed" and "is not trusted" in events[-1].reason and "not in" in events[-1].reason
    wrong_script = {**READING, "evaluate_command": "python score.py"}
    events = await read_objective(paper_without(tmp_path / "b", card=False), brain({"objective-reading": wrong_script}))
    assert "score.py" in events[-1].reason


async def test_an_objective_budget_of_zero_fails_with_the_reason(tmp_path: Path) -> None:
    events = await read_objective(paper_without(tmp_path, card=False), brain({"objective-reading": READING}, BrainLimits(token_budget=0)))
    assert [e.event_type for e in events] == ["BrainSelected", "ObjectiveFailed"]
    assert "token budget of 0 tokens is spent" in events[-1].reason and "task card 'autosota.toml' not found" in events[-1].reason

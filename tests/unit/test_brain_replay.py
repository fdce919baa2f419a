"""Replay with verification, on a campaign recorded by driving the scheduler the way its runtime does."""

from __future__ import annotations

import copy
import uuid
from collections import deque
from datetime import UTC, datetime

from services.scheduler.domain import SchedulerDomain, decide
from shared.brains.replay import verify_events
from shared.contracts import (
    BaselineRequested,
    Budget,
    CampaignStarted,
    Event,
    Idea,
    IdeaCleared,
    IdeasProposed,
    Objective,
    ObjectiveSet,
    ParameterSpec,
    ResultValidated,
)

CAMPAIGN = "c1"
OBJECTIVE = Objective(
    title="T", method="M", primary_metric="rmse", direction="minimize", reported_value=1.0, reported_source="card",
    protected_paths=["evaluate.py"], train_command="python train.py", evaluate_command="python evaluate.py", baseline_seeds=[0, 1],
    search_space={"lr": ParameterSpec(type="float", low=0.001, high=0.1, log=True, baseline=0.01)},
)


def stamp(event: Event, producer: str, cause: Event | None = None) -> Event:
    return event.model_copy(update={"event_id": uuid.uuid4(), "producer": producer, "time": datetime.now(UTC), "causation_id": cause.event_id if cause else None})


def record_scheduler(world: list[Event]) -> list[Event]:
    """The stream a scheduler leaves: each input, then what it decided about it, consumed in order."""
    domain = SchedulerDomain()
    state = domain.initial_state(CAMPAIGN)
    stream: list[Event] = []
    pending = deque(world)
    started = stamp(CampaignStarted(campaign=CAMPAIGN, paper_path="/p", budget=Budget(max_experiments=2, parallelism=2)), "scheduler")
    state = domain.evolve(state, started)
    pending.appendleft(started)
    while pending:
        event = pending.popleft()
        stream.append(event)
        observed = domain.evolve(copy.deepcopy(state), event) if event.event_type in domain.relevant else state
        outputs = [stamp(d, "scheduler", event) for d in decide(copy.deepcopy(observed), event) if isinstance(d, Event)]
        state = observed
        for output in outputs:
            state = domain.evolve(state, output)
        pending.extend(outputs)
    return stream


def world() -> list[Event]:
    ideas = [Idea(idea_id="r1-0", params={"lr": 0.05}), Idea(idea_id="r1-1", params={"lr": 0.002})]
    return [
        stamp(ObjectiveSet(campaign=CAMPAIGN, objective=OBJECTIVE, snapshot_sha256="s"), "objective"),
        stamp(BaselineRequested(campaign=CAMPAIGN, environment_bin="/env/bin", params={"lr": 0.01}, seeds=[0, 1]), "init"),
        *(stamp(ResultValidated(campaign=CAMPAIGN, experiment_id=f"baseline-s{s}", purpose="baseline", metrics={"rmse": v}), "supervisor") for s, v in ((0, 1.0), (1, 1.02))),
        stamp(IdeasProposed(campaign=CAMPAIGN, ideas=ideas, brain="no-model", round=1), "ideator"),
        *(stamp(IdeaCleared(campaign=CAMPAIGN, idea=idea), "supervisor") for idea in ideas),
        stamp(ResultValidated(campaign=CAMPAIGN, experiment_id="idea-r1-0", purpose="idea", idea_id="r1-0", metrics={"rmse": 0.9}), "supervisor"),
        stamp(ResultValidated(campaign=CAMPAIGN, experiment_id="idea-r1-1", purpose="idea", idea_id="r1-1", metrics={"rmse": 0.8}), "supervisor"),
    ]


async def test_every_recorded_decision_is_reproduced() -> None:
    stream = record_scheduler(world())
    kinds = [e.event_type for e in stream if e.producer == "scheduler"]
    assert "BaselineReproduced" in kinds and "CandidateNominated" in kinds
    report = await verify_events(stream, services=["scheduler"])
    assert report.ok, report.text()
    [scheduler] = report.services
    assert scheduler.recorded == scheduler.reproduced == len(kinds) - 1  # CampaignStarted came from a command, not a cause
    assert "every recorded decision reproduced" in report.text()


async def test_a_decision_that_differs_from_the_record_is_reported_event_by_event() -> None:
    stream = record_scheduler(world())
    doctored = [e.model_copy(update={"idea_id": "r1-0"}) if e.event_type == "CandidateNominated" else e for e in stream]
    report = await verify_events(doctored, services=["scheduler"])
    assert not report.ok
    [divergence] = report.services[0].divergences
    assert divergence.cause.startswith("ResultValidated") and divergence.recorded[-1]["idea_id"] == "r1-0" and divergence.replayed[-1]["idea_id"] == "r1-1"
    assert "DIVERGED" in report.text()


async def test_a_recorded_decision_the_code_no_longer_makes_is_reported() -> None:
    stream = record_scheduler(world())
    cause = next(e for e in stream if e.event_type == "IdeaCleared")
    extra = stamp(IdeasProposed(campaign=CAMPAIGN, ideas=[], brain="x", round=9), "scheduler", cause)
    report = await verify_events([*stream, extra], services=["scheduler"])
    assert not report.ok and "replay decided" in report.text()

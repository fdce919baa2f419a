"""The monitor: wall-clock budgets and stalls, decided from explicit clock readings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.monitor.domain import MonitorDomain, MonitorState, decide_budget, decide_stalls, decide_tick, watching
from shared.contracts import (
    Budget,
    BudgetExhausted,
    CampaignCompleted,
    CampaignStarted,
    Event,
    ExperimentDispatched,
    JobCompleted,
    JobStarted,
    StallDetected,
    VerificationDispatched,
)

CAMPAIGN = "c1"
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
STALL = 60.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fold(*events: Event) -> MonitorState:
    domain = MonitorDomain()
    state = domain.initial_state(CAMPAIGN)
    for event in events:
        assert event.event_type in domain.relevant
        state = domain.evolve(state, event)
    return state


def started(wall_clock: float = 600.0) -> CampaignStarted:
    return CampaignStarted(campaign=CAMPAIGN, time=at(0), paper_path="/p", budget=Budget(wall_clock_seconds=wall_clock))


def dispatched(experiment_id: str, seconds: float) -> ExperimentDispatched:
    return ExperimentDispatched(campaign=CAMPAIGN, time=at(seconds), experiment_id=experiment_id, purpose="idea", params={}, seed=0)


def job_started(experiment_id: str, seconds: float) -> JobStarted:
    return JobStarted(campaign=CAMPAIGN, time=at(seconds), experiment_id=experiment_id, runner="r1", delivery=1)


def completed(experiment_id: str, seconds: float) -> JobCompleted:
    return JobCompleted(
        campaign=CAMPAIGN, time=at(seconds), experiment_id=experiment_id, purpose="idea", runner="r1",
        metrics={"loss": 1.0}, evaluate_command="e", protected_hashes={}, duration_seconds=1.0, output_tail="",
    )


# ---------------------------------------------------------------- wall-clock budget


def test_budget_is_exhausted_when_the_wall_clock_runs_out():
    state = fold(started(wall_clock=100))
    assert decide_budget(state, at(99.9)) == []
    [event] = decide_budget(state, at(100.5))
    assert isinstance(event, BudgetExhausted)
    assert (event.budget, event.used, event.limit) == ("wall_clock", 100.5, 100)


def test_budget_is_exhausted_once():
    [event] = decide_budget(fold(started(wall_clock=100)), at(101))
    state = fold(started(wall_clock=100), event.model_copy(update={"time": at(101)}))
    assert decide_budget(state, at(500)) == []


def test_nothing_is_decided_before_start_or_after_completion():
    assert decide_tick(fold(), at(10_000), STALL, {}) == []
    done = fold(started(wall_clock=100), dispatched("idea-a", 1), CampaignCompleted(campaign=CAMPAIGN, time=at(50), outcome="not_improved", reason="", idea_experiments=0))
    assert not watching(done)
    assert decide_tick(done, at(10_000), STALL, {}) == []


# ---------------------------------------------------------------- stalls


def test_a_queued_job_nobody_picks_up_stalls():
    state = fold(started(), dispatched("idea-a", 10))
    assert decide_stalls(state, at(69), STALL, {}) == []
    [event] = decide_stalls(state, at(70), STALL, {})
    assert isinstance(event, StallDetected)
    assert (event.experiment_id, event.state, event.silent_seconds) == ("idea-a", "queued", 60.0)


def test_a_running_job_with_heartbeats_is_alive_and_stalls_when_they_stop():
    state = fold(started(), dispatched("idea-a", 0), job_started("idea-a", 5))
    assert decide_stalls(state, at(100), STALL, {"idea-a": at(98)}) == []
    [event] = decide_stalls(state, at(160), STALL, {"idea-a": at(98)})
    assert (event.experiment_id, event.state, event.silent_seconds) == ("idea-a", "running", 62.0)


def test_a_started_job_is_measured_from_its_start_not_its_dispatch():
    state = fold(started(), dispatched("idea-a", 0), job_started("idea-a", 50))
    assert decide_stalls(state, at(100), STALL, {}) == []
    assert len(decide_stalls(state, at(110), STALL, {})) == 1


def test_a_job_stalls_once():
    state = fold(started(), dispatched("idea-a", 0), StallDetected(campaign=CAMPAIGN, time=at(60), experiment_id="idea-a", silent_seconds=60, state="queued"))
    assert decide_stalls(state, at(1000), STALL, {}) == []


def test_finished_jobs_never_stall():
    state = fold(started(), dispatched("idea-a", 0), job_started("idea-a", 1), completed("idea-a", 30))
    assert decide_stalls(state, at(1000), STALL, {}) == []


def test_a_job_waiting_behind_live_ones_is_not_stalled():
    # Ten verification runs queued at once; one runner works through them.
    queued = [VerificationDispatched(campaign=CAMPAIGN, time=at(0), experiment_id=f"verify-1-candidate-s{n}", idea_id="a", arm="candidate", seed=n) for n in range(10)]
    state = fold(started(), *queued, job_started("verify-1-candidate-s0", 1), completed("verify-1-candidate-s0", 40), job_started("verify-1-candidate-s1", 41))
    assert decide_stalls(state, at(95), STALL, {"verify-1-candidate-s1": at(94)}) == []
    # The runner goes silent: the running job and everything behind it stall.
    stalls = decide_stalls(state, at(160), STALL, {"verify-1-candidate-s1": at(94)})
    assert {event.experiment_id for event in stalls} == {f"verify-1-candidate-s{n}" for n in range(1, 10)}


def test_a_tick_decides_budget_and_stalls_together():
    state = fold(started(wall_clock=50), dispatched("idea-a", 0))
    events = decide_tick(state, at(61), STALL, {})
    assert [event.event_type for event in events] == ["BudgetExhausted", "StallDetected"]


# ---------------------------------------------------------------- dead ends


def job_failed(experiment_id: str, seconds: float, signature: str = "ValueError: <n>", purpose: str = "idea") -> Event:
    from shared.contracts import JobFailed

    return JobFailed(campaign=CAMPAIGN, time=at(seconds), experiment_id=experiment_id, purpose=purpose, runner="r1", stage="train", reason="exited with code 1", signature=signature)


def validated(experiment_id: str, seconds: float) -> Event:
    from shared.contracts import ResultValidated

    return ResultValidated(campaign=CAMPAIGN, time=at(seconds), experiment_id=experiment_id, purpose="idea", metrics={"loss": 1.0})


def dead_ends(state: MonitorState, seconds: float, repeats: int = 3, quiet: float = 600.0) -> list[Event]:
    from services.monitor.domain import DeadEndLimits, decide_dead_ends

    return decide_dead_ends(state, at(seconds), DeadEndLimits(repeats=repeats, no_progress_seconds=quiet))


def test_ideas_failing_the_same_way_again_and_again_roll_back_once():
    state = fold(started(), job_failed("i1", 10), job_failed("i2", 20))
    assert dead_ends(state, 21) == []
    state = fold(started(), job_failed("i1", 10), job_failed("i2", 20), job_failed("i3", 30))
    [action] = dead_ends(state, 31)
    assert (action.action, action.trigger, action.experiment_ids) == ("rollback", "repeated_failure", ["i1", "i2", "i3"])
    assert action.signature == "ValueError: <n>"
    answered = MonitorDomain().evolve(state, action.model_copy(update={"time": at(31)}))
    assert dead_ends(answered, 40) == []


def test_a_success_or_another_failure_breaks_the_streak():
    assert dead_ends(fold(started(), job_failed("i1", 10), completed("i2", 15), job_failed("i3", 20), job_failed("i4", 30)), 31) == []
    assert dead_ends(fold(started(), job_failed("i1", 10), job_failed("i2", 20, "KeyError: <q>"), job_failed("i3", 30)), 31) == []


def test_a_baseline_that_keeps_failing_terminates_the_campaign():
    state = fold(started(), *(job_failed(f"baseline-s{s}", 10 + s, "MemoryError", "baseline") for s in range(3)))
    [action] = dead_ends(state, 20)
    assert action.action == "terminate" and "baseline cannot complete" in action.reason


def test_no_validated_result_for_too_long_falls_back_once_per_quiet_spell():
    state = fold(started(), validated("i1", 100))
    assert dead_ends(state, 650) == []
    [action] = dead_ends(state, 701)
    assert (action.action, action.trigger) == ("fallback", "no_progress")
    answered = MonitorDomain().evolve(state, action.model_copy(update={"time": at(701)}))
    assert dead_ends(answered, 900) == []
    assert [a.action for a in dead_ends(MonitorDomain().evolve(answered, validated("i2", 950)), 1600)] == ["fallback"]

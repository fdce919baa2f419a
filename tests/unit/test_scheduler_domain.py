"""The scheduler's loop, driven event by event without any I/O."""

from __future__ import annotations

from shared.contracts import (
    BaselineRequested,
    BestUpdated,
    Budget,
    BudgetExhausted,
    CampaignStarted,
    EnvironmentFailed,
    Event,
    Idea,
    IdeaCleared,
    IdeasProposed,
    IdeasRequested,
    JobFailed,
    Objective,
    ObjectiveSet,
    ParameterSpec,
    ResultValidated,
    SotaCertified,
    SotaRefuted,
    WorkItem,
)
from services.scheduler.domain import SchedulerDomain, decide

CAMPAIGN = "c1"
OBJECTIVE = Objective(
    title="T", method="M", primary_metric="rmse", direction="minimize", reported_value=1.0,
    reported_source="card", secondary_metrics={"mae": 0.05}, protected_paths=["evaluate.py"],
    train_command="python train.py", evaluate_command="python evaluate.py", baseline_seeds=[0, 1, 2],
    search_space={"lr": ParameterSpec(type="float", low=0.001, high=0.1, log=True, baseline=0.01)},
)


class Loop:
    """Feeds events to the domain the way the runtime does: fold, decide, fold the decisions."""

    def __init__(self, budget: Budget) -> None:
        self.domain = SchedulerDomain()
        self.state = self.domain.initial_state(CAMPAIGN)
        self.emitted: list[Event | WorkItem] = []
        self.feed(CampaignStarted(campaign=CAMPAIGN, paper_path="/p", budget=budget))
        self.feed(ObjectiveSet(campaign=CAMPAIGN, objective=OBJECTIVE, snapshot_sha256="abc"))

    def feed(self, event: Event) -> list[Event | WorkItem]:
        self.state = self.domain.evolve(self.state, event)
        decisions = decide(self.state, event)
        self.emitted.extend(decisions)
        return decisions

    def types(self, decisions: list[Event | WorkItem]) -> list[str]:
        return [d.event_type if isinstance(d, Event) else "WorkItem" for d in decisions]

    def validate(self, experiment_id: str, rmse: float, purpose: str = "idea") -> list[Event | WorkItem]:
        return self.feed(ResultValidated(campaign=CAMPAIGN, experiment_id=experiment_id, purpose=purpose, metrics={"rmse": rmse, "mae": rmse}))


def run_baseline(loop: Loop, values: tuple[float, ...] = (1.0, 1.02, 0.98)) -> list[Event | WorkItem]:
    # Step 1: init asks for the baseline; every seed is dispatched with a work item.
    decisions = loop.feed(BaselineRequested(campaign=CAMPAIGN, environment_bin="/env/bin", params={"lr": 0.01}, seeds=[0, 1, 2]))
    assert loop.types(decisions) == ["ExperimentDispatched", "WorkItem"] * 3
    # Step 2: the validated results come back; the last one reproduces the baseline.
    for seed, value in zip((0, 1, 2), values, strict=True):
        decisions = loop.validate(f"baseline-s{seed}", value, "baseline")
    return decisions


def test_baseline_reproduced_then_ideas_requested_for_every_free_slot() -> None:
    loop = Loop(Budget(max_experiments=4, parallelism=2))
    decisions = run_baseline(loop)
    assert loop.types(decisions) == ["BaselineReproduced", "IdeasRequested"]
    reproduced, requested = decisions
    assert abs(reproduced.mean - 1.0) < 1e-12 and reproduced.gap_to_reported == reproduced.mean - 1.0
    assert requested.count == 2 and requested.round == 1


def test_cleared_ideas_run_in_parallel_and_the_best_is_nominated_when_the_budget_is_spent() -> None:
    loop = Loop(Budget(max_experiments=2, parallelism=2))
    run_baseline(loop)
    ideas = [Idea(idea_id="r1-0", params={"lr": 0.05}), Idea(idea_id="r1-1", params={"lr": 0.002})]
    loop.feed(IdeasProposed(campaign=CAMPAIGN, ideas=ideas, brain="no-model", round=1))
    first = loop.feed(IdeaCleared(campaign=CAMPAIGN, idea=ideas[0]))
    second = loop.feed(IdeaCleared(campaign=CAMPAIGN, idea=ideas[1]))
    assert loop.types(first) == ["ExperimentDispatched", "WorkItem"]
    assert loop.types(second) == ["ExperimentDispatched", "WorkItem"]
    work = first[1]
    assert isinstance(work, WorkItem) and work.params == {"lr": 0.05} and work.seed == 0 and work.environment_bin == "/env/bin"
    # The first result improves on the baseline: the lineage moves; nothing to nominate yet.
    assert loop.types(loop.validate("idea-r1-0", 0.9)) == ["BestUpdated"]
    # The budget is spent once both are back: the best idea is nominated.
    decisions = loop.validate("idea-r1-1", 0.8)
    assert loop.types(decisions) == ["BestUpdated", "CandidateNominated"]
    assert decisions[-1].idea_id == "r1-1" and decisions[-1].attempt == 1
    # A refuted candidate makes way for the next best one; a certified one ends the campaign.
    refuted = loop.feed(SotaRefuted(campaign=CAMPAIGN, idea_id="r1-1", metric="rmse", candidate_values=[0.8], baseline_values=[1.0], rule="seed-noise", reason="p too large", test="welch", statistic=1.0, p_value=0.2, alpha=0.05))
    assert loop.types(refuted) == ["CandidateNominated"] and refuted[0].idea_id == "r1-0" and refuted[0].attempt == 2
    certified = loop.feed(SotaCertified(campaign=CAMPAIGN, idea_id="r1-0", params={"lr": 0.05}, metric="rmse", candidate_values=[0.9] * 5, baseline_values=[1.0] * 5, candidate_mean=0.9, baseline_mean=1.0, gain_vs_reproduced=0.1, gain_vs_reported=0.1, reported_value=1.0, test="welch", statistic=5.0, p_value=0.001, alpha=0.05))
    assert loop.types(certified) == ["CampaignCompleted"] and certified[0].outcome == "certified"
    assert loop.feed(ResultValidated(campaign=CAMPAIGN, experiment_id="idea-r1-0", purpose="idea", metrics={"rmse": 0.1})) == []


def test_no_idea_beats_the_baseline_ends_not_improved() -> None:
    loop = Loop(Budget(max_experiments=1, parallelism=1))
    run_baseline(loop)
    idea = Idea(idea_id="r1-0", params={"lr": 0.09})
    loop.feed(IdeasProposed(campaign=CAMPAIGN, ideas=[idea], brain="no-model", round=1))
    loop.feed(IdeaCleared(campaign=CAMPAIGN, idea=idea))
    decisions = loop.validate("idea-r1-0", 1.5)
    assert loop.types(decisions) == ["CampaignCompleted"] and decisions[0].outcome == "not_improved"


def test_failed_idea_frees_its_slot_and_more_ideas_are_requested() -> None:
    loop = Loop(Budget(max_experiments=3, parallelism=1))
    run_baseline(loop)
    idea = Idea(idea_id="r1-0", params={"lr": 0.09})
    loop.feed(IdeasProposed(campaign=CAMPAIGN, ideas=[idea], brain="no-model", round=1))
    loop.feed(IdeaCleared(campaign=CAMPAIGN, idea=idea))
    decisions = loop.feed(JobFailed(campaign=CAMPAIGN, experiment_id="idea-r1-0", purpose="idea", runner="r", stage="train", reason="exit 1", signature="x"))
    assert loop.types(decisions) == ["IdeasRequested"] and decisions[0].round == 2


def test_wall_clock_budget_stops_new_work_and_waits_for_in_flight_results() -> None:
    loop = Loop(Budget(max_experiments=10, parallelism=1))
    run_baseline(loop)
    idea = Idea(idea_id="r1-0", params={"lr": 0.05})
    loop.feed(IdeasProposed(campaign=CAMPAIGN, ideas=[idea], brain="no-model", round=1))
    loop.feed(IdeaCleared(campaign=CAMPAIGN, idea=idea))
    assert loop.feed(BudgetExhausted(campaign=CAMPAIGN, budget="wall_clock", used=61, limit=60)) == []
    decisions = loop.validate("idea-r1-0", 0.7)
    assert loop.types(decisions) == ["BestUpdated", "CandidateNominated"]


def test_a_duplicate_result_is_ignored() -> None:
    loop = Loop(Budget(max_experiments=2, parallelism=2))
    run_baseline(loop)
    assert loop.validate("baseline-s0", 0.5, "baseline") == []


def test_final_environment_failure_fails_the_campaign() -> None:
    loop = Loop(Budget())
    decisions = loop.feed(EnvironmentFailed(campaign=CAMPAIGN, stage="smoke", signature="ModuleNotFoundError: x", error_tail="", attempt=4, final=True))
    assert loop.types(decisions) == ["CampaignCompleted"] and decisions[0].outcome == "failed"
    assert "ModuleNotFoundError" in decisions[0].reason


def test_a_failing_baseline_fails_the_campaign_with_the_reason() -> None:
    loop = Loop(Budget())
    loop.feed(BaselineRequested(campaign=CAMPAIGN, environment_bin="/env/bin", params={}, seeds=[0, 1, 2]))
    decisions = loop.feed(JobFailed(campaign=CAMPAIGN, experiment_id="baseline-s1", purpose="baseline", runner="r", stage="evaluate", reason="exited with code 2", signature="x"))
    assert loop.types(decisions) == ["CampaignCompleted"] and "exited with code 2" in decisions[0].reason


# ---------------------------------------------------------------- Leap rule, honeymoon, rollback

PATCH = "--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-a\n+b\n"


def propose(loop: Loop, round_: int, idea: Idea, brain: str = "ollama:coder") -> list[Event | WorkItem]:
    loop.feed(IdeasProposed(campaign=CAMPAIGN, ideas=[idea], brain=brain, round=round_))
    return loop.feed(IdeaCleared(campaign=CAMPAIGN, idea=idea))


def param_streak(loop: Loop, rounds: range, brain: str = "ollama:coder", value: float = 1.1) -> list[Event | WorkItem]:
    decisions: list[Event | WorkItem] = []
    for round_ in rounds:
        propose(loop, round_, Idea(idea_id=f"r{round_}-0", params={"lr": 0.01 + round_ / 1000}), brain)
        decisions = loop.validate(f"idea-r{round_}-0", value)
    return decisions


def requested(decisions: list[Event | WorkItem]) -> IdeasRequested:
    return next(d for d in decisions if isinstance(d, IdeasRequested))


def test_three_param_ideas_in_a_row_make_the_next_request_structural() -> None:
    loop = Loop(Budget(max_experiments=10, parallelism=1))
    first = requested(run_baseline(loop))
    assert first.structural == 0 and first.base is not None and first.base.idea_id is None and first.base.params == {"lr": 0.01}
    assert loop.types(param_streak(loop, range(1, 3))) == ["IdeasRequested"]
    decisions = param_streak(loop, range(3, 4))
    assert loop.types(decisions) == ["LeapStarted", "IdeasRequested"]
    leap, request = decisions
    assert leap.after_param_ideas == ["r1-0", "r2-0", "r3-0"] and leap.round == request.round == 4 and "Leap rule" in leap.reason
    assert request.structural == 1


def test_without_a_model_there_is_no_leap() -> None:
    loop = Loop(Budget(max_experiments=10, parallelism=1))
    run_baseline(loop)
    decisions = param_streak(loop, range(1, 5), brain="no-model")
    assert loop.types(decisions) == ["IdeasRequested"] and requested(decisions).structural == 0


def test_a_structural_idea_that_beats_the_best_becomes_the_base_of_later_ideas() -> None:
    loop = Loop(Budget(max_experiments=10, parallelism=1))
    run_baseline(loop)
    param_streak(loop, range(1, 4))
    dispatched = propose(loop, 4, Idea(idea_id="r4-c0", kind="CODE", params={"lr": 0.01}, patch=PATCH))
    assert dispatched[0].patch == PATCH and dispatched[1].patch == PATCH
    decisions = loop.validate("idea-r4-c0", 0.8)
    assert loop.types(decisions) == ["BestUpdated", "IdeasRequested"]
    base = requested(decisions).base
    assert base is not None and base.idea_id == "r4-c0" and base.patch == PATCH and base.value == 0.8
    # A parameter idea now tunes the structural change: it runs with its patch.
    follow = propose(loop, 5, Idea(idea_id="r5-0", params={"lr": 0.02}))
    assert follow[0].patch == PATCH and follow[0].params == {"lr": 0.02}


def test_a_structural_idea_short_of_the_best_gets_five_follow_ups_then_rollback() -> None:
    loop = Loop(Budget(max_experiments=20, parallelism=1))
    run_baseline(loop)
    param_streak(loop, range(1, 4))
    propose(loop, 4, Idea(idea_id="r4-c0", kind="ALGO", params={"lr": 0.01}, patch=PATCH))
    decisions = loop.validate("idea-r4-c0", 1.05)
    assert loop.types(decisions) == ["HoneymoonStarted", "IdeasRequested"]
    honeymoon, request = decisions
    assert honeymoon.idea_id == "r4-c0" and honeymoon.follow_ups == 5 and honeymoon.best_value == 1.0 and "1.05" in honeymoon.reason
    assert request.base is not None and request.base.idea_id == "r4-c0" and request.base.patch == PATCH and request.structural == 0
    # Step: five follow-ups build on it; none beats the best; no leap meanwhile.
    for round_ in range(5, 10):
        dispatched = propose(loop, round_, Idea(idea_id=f"r{round_}-0", params={"lr": 0.03}))
        assert dispatched[0].patch == PATCH
        decisions = loop.validate(f"idea-r{round_}-0", 1.2)
        if round_ < 9:
            assert loop.types(decisions) == ["IdeasRequested"] and requested(decisions).structural == 0
    assert loop.types(decisions) == ["RolledBack", "IdeasRequested"]
    rolled, request = decisions
    assert rolled.from_idea_id == "r4-c0" and rolled.to_idea_id is None and rolled.follow_ups_tried == [f"r{r}-0" for r in range(5, 10)]
    assert request.base is not None and request.base.idea_id is None and request.base.patch is None
    after = propose(loop, 10, Idea(idea_id="r10-0", params={"lr": 0.03}))
    assert after[0].patch is None


def test_a_follow_up_that_beats_the_best_ends_the_honeymoon() -> None:
    loop = Loop(Budget(max_experiments=20, parallelism=1))
    run_baseline(loop)
    param_streak(loop, range(1, 4))
    propose(loop, 4, Idea(idea_id="r4-c0", kind="CODE", params={"lr": 0.01}, patch=PATCH))
    loop.validate("idea-r4-c0", 1.05)
    propose(loop, 5, Idea(idea_id="r5-0", params={"lr": 0.03}))
    decisions = loop.validate("idea-r5-0", 0.9)
    assert loop.types(decisions) == ["BestUpdated", "IdeasRequested"]
    assert loop.state.honeymoon is None and loop.state.best is not None and loop.state.best.patch == PATCH
    assert requested(decisions).base.idea_id == "r5-0"  # type: ignore[union-attr]


def test_the_schedulers_own_decisions_seen_again_change_nothing() -> None:
    loop = Loop(Budget(max_experiments=20, parallelism=1))
    run_baseline(loop)
    leap = param_streak(loop, range(1, 4))[0]
    propose(loop, 4, Idea(idea_id="r4-c0", kind="CODE", params={"lr": 0.01}, patch=PATCH))
    honeymoon = loop.validate("idea-r4-c0", 1.05)[0]
    propose(loop, 5, Idea(idea_id="r5-0", params={"lr": 0.03}))
    before = (loop.state.leap_round, list(loop.state.param_streak), list(loop.state.honeymoon.follow_ups))  # type: ignore[union-attr]
    # Step: a service sees its own events again when they come back from the bus.
    assert loop.feed(leap) == [] and loop.feed(honeymoon) == []
    assert (loop.state.leap_round, loop.state.param_streak, loop.state.honeymoon.follow_ups) == before  # type: ignore[union-attr]
    best = loop.validate("idea-r5-0", 0.7)[0]
    loop.feed(BestUpdated(campaign=CAMPAIGN, idea_id="r1-0", experiment_id="idea-r1-0", value=0.95, previous_value=1.0, params={}))
    assert loop.state.best_value == 0.7 and loop.state.best.idea_id == "r5-0" and best.event_type == "BestUpdated"  # type: ignore[union-attr]


def test_a_late_copy_of_a_finished_honeymoon_does_not_restart_it() -> None:
    loop = Loop(Budget(max_experiments=20, parallelism=1))
    run_baseline(loop)
    param_streak(loop, range(1, 4))
    propose(loop, 4, Idea(idea_id="r4-c0", kind="CODE", params={"lr": 0.01}, patch=PATCH))
    honeymoon = loop.validate("idea-r4-c0", 1.05)[0]
    propose(loop, 5, Idea(idea_id="r5-0", params={"lr": 0.03}))
    loop.validate("idea-r5-0", 0.9)
    assert loop.state.honeymoon is None
    loop.feed(honeymoon)
    assert loop.state.honeymoon is None and loop.state.base().idea_id == "r5-0"  # type: ignore[union-attr]


def test_the_monitors_terminate_ends_the_campaign_and_fallback_stops_the_search() -> None:
    from shared.contracts import SupervisoryAction

    loop = Loop(Budget(max_experiments=10, parallelism=1))
    run_baseline(loop)
    idea = Idea(idea_id="r1-0", params={"lr": 0.05})
    loop.feed(IdeasProposed(campaign=CAMPAIGN, ideas=[idea], brain="no-model", round=1))
    loop.feed(IdeaCleared(campaign=CAMPAIGN, idea=idea))
    # Step 1: a fallback stops new ideas; the one in flight still counts.
    assert loop.feed(SupervisoryAction(campaign=CAMPAIGN, action="fallback", trigger="no_progress", reason="stuck")) == []
    decisions = loop.validate("idea-r1-0", 0.7)
    assert loop.types(decisions) == ["BestUpdated", "CandidateNominated"]
    # Step 2: a terminate ends the campaign as failed, with the monitor's reason.
    decisions = loop.feed(SupervisoryAction(campaign=CAMPAIGN, action="terminate", trigger="repeated_failure", reason="same failure 3 times"))
    assert loop.types(decisions) == ["CampaignCompleted"] and decisions[0].outcome == "failed" and "same failure 3 times" in decisions[0].reason


def test_a_wall_clock_budget_spent_before_the_baseline_ends_the_campaign() -> None:
    loop = Loop(Budget(wall_clock_seconds=30))
    decisions = loop.feed(BudgetExhausted(campaign=CAMPAIGN, budget="wall_clock", used=31.0, limit=30.0))
    [completed] = [d for d in decisions if isinstance(d, Event) and d.event_type == "CampaignCompleted"]
    assert completed.outcome == "failed" and "before the baseline was reproduced" in completed.reason  # type: ignore[attr-defined]


def test_a_service_failing_on_a_campaign_event_ends_the_campaign_once() -> None:
    from services.scheduler.domain import on_own_failure
    from shared.contracts import ServiceFailed

    loop = Loop(Budget())
    failure = ServiceFailed(campaign=CAMPAIGN, service="init", stage="handling", failed_event_type="ObjectiveSet", subject="s", reason="OSError('absolute symlink')")
    decisions = loop.feed(failure)
    [completed] = [d for d in decisions if isinstance(d, Event) and d.event_type == "CampaignCompleted"]
    assert completed.outcome == "failed" and "init failed handling ObjectiveSet" in completed.reason  # type: ignore[attr-defined]
    assert loop.feed(failure) == [] and on_own_failure(loop.state, failure) == []
    # the scheduler's own failure on a campaign still running ends it too
    fresh = Loop(Budget())
    [own] = on_own_failure(fresh.state, failure.model_copy(update={"service": "scheduler"}))
    assert own.outcome == "failed"  # type: ignore[attr-defined]


def test_a_person_stops_a_running_campaign_once() -> None:
    from services.scheduler.domain import stop

    loop = Loop(Budget())
    [completed] = stop(loop.state, "wrong dataset")
    assert completed.outcome == "stopped" and "wrong dataset" in completed.reason  # type: ignore[attr-defined]
    loop.feed(completed)  # type: ignore[arg-type]
    assert stop(loop.state, "again") == []


def test_a_baseline_off_the_paper_beyond_the_tolerance_ends_not_reproduced() -> None:
    # the paper claims 1.0; the code gives 1.10 ± 0.001: 100 standard deviations, 10 % off
    loop = Loop(Budget(max_experiments=4, parallelism=2))
    decisions = run_baseline(loop, (1.099, 1.1, 1.101))
    assert loop.types(decisions) == ["BaselineReproduced", "CampaignCompleted"]
    reproduced, completed = decisions
    assert reproduced.reproduced is False and abs(reproduced.tolerance - 0.02) < 1e-12  # 2 % of 1.0 beats 3 sigma here
    assert completed.outcome == "not_reproduced"
    assert "reports rmse 1; its code gives 1.1 ± 0.001 over 3 seeds" in completed.reason and "--continue-unreproduced searches anyway" in completed.reason


def test_the_tolerance_is_the_larger_of_two_percent_and_three_seed_deviations() -> None:
    # 1.05 is 5 % off, but the seeds spread by 0.05: within three standard deviations
    loop = Loop(Budget(max_experiments=4, parallelism=2))
    decisions = run_baseline(loop, (1.0, 1.05, 1.1))
    assert loop.types(decisions) == ["BaselineReproduced", "IdeasRequested"]
    assert decisions[0].reproduced is True and abs(decisions[0].tolerance - 0.15) < 1e-9


def test_a_card_tolerance_overrides_the_default_both_ways() -> None:
    strict = Loop(Budget(max_experiments=4))
    strict.feed(ObjectiveSet(campaign=CAMPAIGN, objective=OBJECTIVE.model_copy(update={"reproduction_tolerance": 0.001}), snapshot_sha256="abc"))
    assert strict.types(run_baseline(strict, (1.01, 1.01, 1.01))) == ["BaselineReproduced", "CampaignCompleted"]
    lenient = Loop(Budget(max_experiments=4))
    lenient.feed(ObjectiveSet(campaign=CAMPAIGN, objective=OBJECTIVE.model_copy(update={"reproduction_tolerance": 0.5}), snapshot_sha256="abc"))
    assert lenient.types(run_baseline(lenient, (1.3, 1.3, 1.3)))[0:2] == ["BaselineReproduced", "IdeasRequested"]


def test_continue_unreproduced_searches_against_the_measured_baseline() -> None:
    loop = Loop(Budget(max_experiments=4, parallelism=2))
    loop.state.started = loop.state.started.model_copy(update={"continue_unreproduced": True})  # type: ignore[union-attr]
    decisions = run_baseline(loop, (1.099, 1.1, 1.101))
    assert loop.types(decisions) == ["BaselineReproduced", "IdeasRequested"]
    assert decisions[0].reproduced is False and loop.state.baseline_mean == decisions[0].mean

"""The supervisor's decisions: protection, idea audits, result checks, verification and certification."""

from __future__ import annotations

import copy
import math
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from services.supervisor.domain import (
    SupervisorDomain,
    SupervisorState,
    audit_idea,
    check_result,
    covers,
    decide_failure,
    decide_ideas,
    decide_protection,
    decide_result,
    decide_verdict,
    fold,
    parse_patch,
    plan_verification,
    protected_sources_needed,
    shadow_guards,
)
from services.supervisor.handlers import react
from shared.contracts import (
    BaselineRequested,
    Budget,
    CampaignStarted,
    CandidateNominated,
    Event,
    ExperimentDispatched,
    Idea,
    IdeaCleared,
    IdeaRejected,
    IdeasProposed,
    JobCompleted,
    JobFailed,
    LabelCanary,
    LabelColumn,
    Objective,
    ObjectiveRules,
    ObjectiveSet,
    ParameterSpec,
    ProtectionEstablished,
    ResourcesPrepared,
    ResultRejected,
    ResultValidated,
    SotaCertified,
    SotaRefuted,
    VerificationDispatched,
)
from shared.runtime import Outgoing
from shared.subjects import Subjects

CAMPAIGN = "c1"
EVALUATE_HASH = "e" * 64
TRAIN_CSV_HASH = "1" * 64
TEST_CSV_HASH = "2" * 64
SNAPSHOT_FILES = {
    "evaluate.py": EVALUATE_HASH,
    "train.py": "3" * 64,
    "data/train.csv": TRAIN_CSV_HASH,
    "data/splits/test.csv": TEST_CSV_HASH,
    "database.csv": "4" * 64,
    "lib/evaluate_helpers.py": "5" * 64,
}
PROTECTED = {"evaluate.py": EVALUATE_HASH, "data/train.csv": TRAIN_CSV_HASH, "data/splits/test.csv": TEST_CSV_HASH}


def make_objective(**changes: Any) -> Objective:
    fields: dict[str, Any] = {
        "title": "Tiny",
        "method": "MLP",
        "primary_metric": "rmse",
        "direction": "minimize",
        "reported_value": 0.50,
        "reported_source": "Table 1",
        "secondary_metrics": {"mae": 0.05},
        "protected_paths": ["evaluate.py", "data/"],
        "train_command": "python train.py",
        "evaluate_command": "python evaluate.py",
        "timeout_seconds": 60.0,
        "search_space": {
            "learning_rate": ParameterSpec(type="float", low=0.0005, high=0.05, log=True, baseline=0.003),
            "hidden_units": ParameterSpec(type="int", low=4, high=64, baseline=32),
            "activation": ParameterSpec(type="categorical", choices=["tanh", "relu"], baseline="tanh"),
        },
    }
    fields.update(changes)
    return Objective(**fields)


def evolve(state: SupervisorState, *events: Event) -> SupervisorState:
    domain = SupervisorDomain()
    for event in events:
        state = domain.evolve(state, event)
    return state


def ready_state(objective: Objective | None = None, seeds: int = 3) -> SupervisorState:
    """A campaign whose baseline was requested and whose protection is established."""
    objective = objective or make_objective()
    return evolve(
        SupervisorState(),
        CampaignStarted(campaign=CAMPAIGN, paper_path="/papers/tiny", budget=Budget(verification_seeds=seeds), pool="gpu"),
        ResourcesPrepared(campaign=CAMPAIGN, snapshot_sha256="s" * 64, files=SNAPSHOT_FILES, size_bytes=100),
        ObjectiveSet(campaign=CAMPAIGN, objective=objective, snapshot_sha256="s" * 64),
        ProtectionEstablished(campaign=CAMPAIGN, protected_files=PROTECTED),
        BaselineRequested(campaign=CAMPAIGN, environment_bin="/envs/tiny/bin", params=objective.baseline_params, seeds=[0, 1, 2]),
    )


def completed(experiment_id: str, purpose: str = "baseline", **changes: Any) -> JobCompleted:
    fields: dict[str, Any] = {
        "campaign": CAMPAIGN,
        "experiment_id": experiment_id,
        "purpose": purpose,
        "runner": "runner-1",
        "metrics": {"rmse": 0.40, "mae": 0.30},
        "evaluate_command": "python evaluate.py",
        "protected_hashes": dict(PROTECTED),
        "duration_seconds": 1.0,
        "output_tail": "",
    }
    fields.update(changes)
    return JobCompleted(**fields)


def with_baseline(state: SupervisorState, rmse: float = 0.40, mae: float = 0.30) -> SupervisorState:
    for seed in (0, 1, 2):
        state = evolve(
            state,
            ResultValidated(campaign=CAMPAIGN, experiment_id=f"baseline-s{seed}", purpose="baseline", metrics={"rmse": rmse, "mae": mae}),
        )
    return state


# ---------------------------------------------------------------- protection


@pytest.mark.parametrize("entry", ["data/", "data", "./data", "/data/"])
def test_a_protected_folder_covers_its_files_in_any_spelling(entry: str) -> None:
    assert covers(entry, "data/x.csv")
    assert covers(entry, "data/deep/y.csv")
    assert not covers(entry, "database.csv")
    assert not covers(entry, "data2/x.csv")


def test_protection_hashes_every_snapshot_file_under_protected_paths_once_both_inputs_are_known() -> None:
    # Only the snapshot: nothing to protect against yet.
    state = evolve(SupervisorState(), ResourcesPrepared(campaign=CAMPAIGN, snapshot_sha256="s" * 64, files=SNAPSHOT_FILES, size_bytes=1))
    assert decide_protection(state, CAMPAIGN) == []
    # The objective arrives: evaluate.py and everything under data/ is hashed, nothing else.
    state = evolve(state, ObjectiveSet(campaign=CAMPAIGN, objective=make_objective(), snapshot_sha256="s" * 64))
    [established] = decide_protection(state, CAMPAIGN)
    assert isinstance(established, ProtectionEstablished)
    assert established.protected_files == PROTECTED
    # Established once: a second reaction emits nothing.
    assert decide_protection(evolve(state, established), CAMPAIGN) == []


# ---------------------------------------------------------------- idea audits


def git_patch(old: str, new: str, body: str = "@@ -1 +1 @@\n-a\n+b\n", header: str = "") -> str:
    return f"diff --git a/{old} b/{new}\n{header}index 111..222 100644\n--- a/{old}\n+++ b/{new}\n{body}"


def audit(idea: Idea, objective: Objective | None = None) -> tuple[bool, str, dict[str, Any]]:
    return audit_idea(objective or make_objective(), PROTECTED, idea)


def test_a_param_idea_inside_the_search_space_is_cleared() -> None:
    idea = Idea(idea_id="i1", params={"learning_rate": 0.01, "hidden_units": 16, "activation": "relu"})
    assert audit(idea) == (True, "", {})


def test_a_param_idea_outside_the_search_space_is_rejected_with_the_offending_values() -> None:
    idea = Idea(idea_id="i1", params={"learning_rate": 0.5, "hidden_units": 16.5, "activation": "gelu", "eval_subset": 10})
    cleared, rule, evidence = audit(idea)
    assert not cleared
    assert rule == "R1-search-space"
    assert evidence == {"unknown_keys": ["eval_subset"], "inadmissible": {"activation": "gelu", "hidden_units": 16.5, "learning_rate": 0.5}}


def test_a_patch_editing_the_evaluation_script_is_rejected() -> None:
    cleared, rule, evidence = audit(Idea(idea_id="i1", kind="CODE", patch=git_patch("evaluate.py", "evaluate.py")))
    assert (cleared, rule) == (False, "R2")
    assert evidence["paths"] == ["evaluate.py"]


def test_a_plain_diff_touching_a_file_under_a_protected_folder_is_rejected_as_altered_data() -> None:
    patch = "--- data/splits/test.csv\t2024-01-01\n+++ data/splits/test.csv\t2024-01-02\n@@ -1,2 +1,2 @@\n x,y\n-1,2\n+1,3\n"
    cleared, rule, evidence = audit(Idea(idea_id="i1", kind="CODE", patch=patch))
    assert (cleared, rule) == (False, "R6")
    assert "data/splits/test.csv" in evidence["paths"]


def test_renaming_a_file_into_a_protected_path_is_rejected() -> None:
    patch = "diff --git a/train.py b/evaluate.py\nsimilarity index 100%\nrename from train.py\nrename to evaluate.py\n"
    cleared, rule, evidence = audit(Idea(idea_id="i1", kind="CODE", patch=patch))
    assert (cleared, rule) == (False, "R2")
    assert "evaluate.py" in evidence["paths"]


def test_renaming_a_protected_file_away_is_rejected() -> None:
    patch = "diff --git a/data/train.csv b/data_old.csv\nsimilarity index 100%\nrename from data/train.csv\nrename to data_old.csv\n"
    assert audit(Idea(idea_id="i1", kind="CODE", patch=patch))[:2] == (False, "R6")


def test_a_patch_creating_a_symlink_is_rejected() -> None:
    patch = (
        "diff --git a/scores.txt b/scores.txt\nnew file mode 120000\nindex 000..111\n--- /dev/null\n+++ b/scores.txt\n"
        "@@ -0,0 +1 @@\n+/tmp/fake_scores.txt\n\\ No newline at end of file\n"
    )
    cleared, rule, evidence = audit(Idea(idea_id="i1", kind="CODE", patch=patch))
    assert (cleared, rule) == (False, "R2")
    assert evidence["reason"] == "the patch creates a symbolic link"


@pytest.mark.parametrize("created", ["evaluate/__init__.py", "src/evaluate.py", "evaluate.cpython-311-x86_64-linux-gnu.so"])
def test_a_new_module_shadowing_a_protected_one_is_rejected(created: str) -> None:
    patch = f"diff --git a/{created} b/{created}\nnew file mode 100644\n--- /dev/null\n+++ b/{created}\n@@ -0,0 +1 @@\n+SCORE = 0\n"
    cleared, rule, evidence = audit(Idea(idea_id="i1", kind="CODE", patch=patch))
    assert (cleared, rule) == (False, "R2")
    assert evidence["modules"] == ["evaluate"]


def test_a_code_patch_to_training_code_is_cleared_even_when_its_lines_look_like_headers() -> None:
    # A removed "-- note" line reads "--- note" inside the hunk; it is content, not a header.
    body = "@@ -1,3 +1,3 @@\n import math\n--- note about evaluate.py\n+++ note about evaluate.py\n x = 1\n"
    new_module = "diff --git a/helpers.py b/helpers.py\nnew file mode 100644\n--- /dev/null\n+++ b/helpers.py\n@@ -0,0 +1 @@\n+X = 1\n"
    patch = git_patch("train.py", "train.py", body=body) + new_module
    summary = parse_patch(patch)
    assert summary.touched == {"a/train.py", "b/train.py", "b/helpers.py", "a/helpers.py"}
    assert summary.created == {"b/helpers.py"}
    assert audit(Idea(idea_id="i1", kind="CODE", patch=patch)) == (True, "", {})


def test_a_header_hidden_behind_an_inflated_hunk_count_is_still_read() -> None:
    hidden = "@@ -1,50 +1,50 @@\n x = 1\ndiff --git a/evaluate.py b/evaluate.py\n--- a/evaluate.py\n+++ b/evaluate.py\n@@ -1 +1 @@\n-a\n+b\n"
    assert audit(Idea(idea_id="i1", kind="CODE", patch=git_patch("train.py", "train.py", body=hidden)))[:2] == (False, "R2")


def test_quoted_header_paths_are_decoded() -> None:
    patch = 'diff --git "a/data/caf\\303\\251.csv" "b/data/caf\\303\\251.csv"\n--- "a/data/caf\\303\\251.csv"\n+++ "b/data/caf\\303\\251.csv"\n'
    cleared, rule, evidence = audit(Idea(idea_id="i1", kind="CODE", patch=patch))
    assert (cleared, rule) == (False, "R6")
    assert evidence["paths"] == ["data/café.csv"]


def test_a_patch_reaching_outside_the_workspace_is_rejected() -> None:
    cleared, rule, evidence = audit(Idea(idea_id="i1", kind="CODE", patch=git_patch("lib/../evaluate.py", "lib/../evaluate.py")))
    assert (cleared, rule) == (False, "R2")
    assert evidence["reason"] == "the patch reaches outside the workspace"


def test_a_patch_naming_no_file_is_rejected_as_malformed() -> None:
    assert audit(Idea(idea_id="i1", kind="CODE", patch="just some text\n"))[:2] == (False, "patch-malformed")


def test_each_proposed_idea_is_judged_once() -> None:
    state = evolve(ready_state(), IdeaCleared(campaign=CAMPAIGN, idea=Idea(idea_id="old", params={"hidden_units": 8})))
    proposed = IdeasProposed(
        campaign=CAMPAIGN,
        brain="optuna",
        round=2,
        ideas=[
            Idea(idea_id="old", params={"hidden_units": 8}),
            Idea(idea_id="good", params={"hidden_units": 8}),
            Idea(idea_id="bad", params={"hidden_units": 1000}),
            Idea(idea_id="good", params={"hidden_units": 8}),
        ],
    )
    outputs = decide_ideas(state, proposed)
    assert [type(output) for output in outputs] == [IdeaCleared, IdeaRejected]
    assert [output.idea.idea_id for output in outputs] == ["good", "bad"]  # type: ignore[union-attr]


# ---------------------------------------------------------------- result checks


def check(job: JobCompleted, purpose: str = "baseline", means: dict[str, float] | None = None) -> ResultValidated | ResultRejected:
    return check_result(make_objective(), PROTECTED, job, purpose=purpose, idea_id="i1" if purpose == "idea" else None, baseline_means=means)  # type: ignore[arg-type]


def test_a_clean_result_is_validated() -> None:
    result = check(completed("idea-i1", purpose="idea", metrics={"rmse": 0.35, "mae": 0.31}), "idea", {"rmse": 0.40, "mae": 0.30})
    assert isinstance(result, ResultValidated)
    assert (result.experiment_id, result.purpose, result.idea_id) == ("idea-i1", "idea", "i1")
    assert result.metrics == {"rmse": 0.35, "mae": 0.31}


def test_a_changed_protected_file_is_rejected_with_both_hashes() -> None:
    hashes = {**PROTECTED, "evaluate.py": "f" * 64}
    result = check(completed("baseline-s0", protected_hashes=hashes))
    assert isinstance(result, ResultRejected) and result.rule == "R2"
    assert result.evidence == {"violations": [{"path": "evaluate.py", "expected": EVALUATE_HASH, "actual": "f" * 64}]}


def test_a_missing_or_extra_file_under_a_protected_folder_is_rejected() -> None:
    hashes: dict[str, str | None] = {"evaluate.py": EVALUATE_HASH, "data/train.csv": None, "data/splits/test.csv": TEST_CSV_HASH,
                                     "data/leak.csv": "9" * 64, "outputs/predictions.csv": "8" * 64}
    result = check(completed("baseline-s0", protected_hashes=hashes))
    assert isinstance(result, ResultRejected) and result.rule == "R6"
    assert result.evidence["violations"] == [
        {"path": "data/leak.csv", "expected": None, "actual": "9" * 64},
        {"path": "data/train.csv", "expected": TRAIN_CSV_HASH, "actual": None},
    ]


def test_a_different_evaluation_command_is_rejected() -> None:
    result = check(completed("baseline-s0", evaluate_command="python evaluate.py --subset 10"))
    assert isinstance(result, ResultRejected) and result.rule == "R1"
    assert result.evidence == {"expected": "python evaluate.py", "actual": "python evaluate.py --subset 10"}


def test_a_missing_metric_is_rejected() -> None:
    result = check(completed("baseline-s0", metrics={"rmse": 0.4, "mae": math.nan}))
    assert isinstance(result, ResultRejected) and result.rule == "metrics-missing"
    assert result.evidence == {"missing": ["mae"], "reported": ["rmse"]}


def test_a_primary_gain_that_costs_a_secondary_metric_beyond_tolerance_is_rejected() -> None:
    # mae 0.30 -> 0.32 is 6.7% worse, over the 5% tolerance, while rmse improves.
    result = check(completed("idea-i1", purpose="idea", metrics={"rmse": 0.35, "mae": 0.32}), "idea", {"rmse": 0.40, "mae": 0.30})
    assert isinstance(result, ResultRejected) and result.rule == "R4"
    [violation] = result.evidence["violations"]
    assert violation["metric"] == "mae"
    assert violation["worsening"] == pytest.approx(0.02)
    assert violation["allowed"] == pytest.approx(0.015)


def test_the_trade_off_rule_applies_only_to_ideas_that_gain_on_the_primary_metric() -> None:
    worse_secondary = {"rmse": 0.35, "mae": 0.40}
    assert isinstance(check(completed("baseline-s0", metrics=worse_secondary), "baseline", {"rmse": 0.40, "mae": 0.30}), ResultValidated)
    no_gain = {"rmse": 0.45, "mae": 0.40}
    assert isinstance(check(completed("idea-i1", purpose="idea", metrics=no_gain), "idea", {"rmse": 0.40, "mae": 0.30}), ResultValidated)
    within_tolerance = {"rmse": 0.35, "mae": 0.314}
    assert isinstance(check(completed("idea-i1", purpose="idea", metrics=within_tolerance), "idea", {"rmse": 0.40, "mae": 0.30}), ResultValidated)


def test_a_result_is_judged_once_with_its_dispatch_purpose_and_idea() -> None:
    state = with_baseline(ready_state())
    state = evolve(state, ExperimentDispatched(campaign=CAMPAIGN, experiment_id="idea-i7", purpose="idea", idea_id="i7", params={}, seed=0))
    [result] = decide_result(state, completed("idea-i7", purpose="idea", metrics={"rmse": 0.30, "mae": 0.30}))
    assert isinstance(result, ResultValidated) and result.idea_id == "i7"
    # A redelivered completion changes nothing.
    assert decide_result(evolve(state, result), completed("idea-i7", purpose="idea")) == []


# ---------------------------------------------------------------- verification


def nominated(attempt: int = 1) -> CandidateNominated:
    return CandidateNominated(
        campaign=CAMPAIGN, idea_id="i7", params={"learning_rate": 0.01, "hidden_units": 16, "activation": "relu"},
        patch=None, screening_value=0.30, attempt=attempt,
    )


def test_verification_dispatches_fresh_seeds_for_both_arms() -> None:
    state = evolve(ready_state(seeds=3), nominated(attempt=2))
    events, items = plan_verification(state, nominated(attempt=2))
    assert [event.experiment_id for event in events] == [  # type: ignore[attr-defined]
        "verify-2-candidate-s2000", "verify-2-candidate-s2001", "verify-2-candidate-s2002",
        "verify-2-baseline-s2000", "verify-2-baseline-s2001", "verify-2-baseline-s2002",
    ]
    assert all(isinstance(event, VerificationDispatched) and event.idea_id == "i7" for event in events)
    assert [item.seed for item in items] == [2000, 2001, 2002] * 2
    candidate, baseline = items[0], items[3]
    assert candidate.params == nominated().params
    assert baseline.params == make_objective().baseline_params
    assert {item.purpose for item in items} == {"verification"}
    assert {item.dispatcher for item in items} == {"supervisor"}
    assert {item.pool for item in items} == {"gpu"}
    assert {item.environment_bin for item in items} == {"/envs/tiny/bin"}
    # Beside the protected paths, runs report any module that appeared where the evaluation would import it.
    assert candidate.protected_paths[:2] == ["evaluate.py", "data/"]
    assert {"sitecustomize.py", "usercustomize.py"} <= set(candidate.protected_paths)
    assert (candidate.train_command, candidate.evaluate_command, candidate.timeout_seconds) == ("python train.py", "python evaluate.py", 60.0)
    assert candidate.snapshot_sha256 == "s" * 64
    # Planned once: after its dispatch events are folded, the same nomination plans nothing.
    assert plan_verification(evolve(state, *events), nominated(attempt=2)) == ([], [])


def test_the_candidate_arm_carries_the_patch_and_the_baseline_arm_does_not() -> None:
    with_patch = nominated().model_copy(update={"patch": git_patch("train.py", "train.py")})
    _, items = plan_verification(evolve(ready_state(seeds=2), with_patch), with_patch)
    assert [item.patch is not None for item in items] == [True, True, False, False]


def test_verification_without_an_environment_is_refuted() -> None:
    state = evolve(SupervisorState(), ObjectiveSet(campaign=CAMPAIGN, objective=make_objective(), snapshot_sha256="s" * 64), nominated())
    [refuted], items = plan_verification(state, nominated())
    assert items == []
    assert isinstance(refuted, SotaRefuted) and refuted.rule == "verification-impossible"


async def test_the_handler_sends_each_work_item_after_its_dispatch_event() -> None:
    state = evolve(ready_state(seeds=2), nominated())
    ctx = SimpleNamespace(runtime=SimpleNamespace(subjects=Subjects()))
    outputs = await react(state, nominated(), ctx)  # type: ignore[arg-type]
    assert [type(output) for output in outputs] == [VerificationDispatched, Outgoing] * 4
    work = outputs[1]
    assert isinstance(work, Outgoing) and work.subject == "autosota.work.gpu"
    assert work.body["experiment_id"] == "verify-1-candidate-s1000"


def run_verification(candidate: list[dict[str, float]], baseline: list[dict[str, float]], objective: Objective | None = None) -> list[Event]:
    """Nominate, dispatch, and complete every verification run; return what the last completion decides."""
    state = evolve(ready_state(objective, seeds=len(candidate)), nominated())
    events, _ = plan_verification(state, nominated())
    state = evolve(state, *events)
    runs = [*candidate, *baseline]
    decisions: list[Event] = []
    for event, metrics in zip(events, runs, strict=True):
        decisions = decide_result(state, completed(event.experiment_id, purpose="verification", metrics=metrics))  # type: ignore[attr-defined]
        state = evolve(state, *decisions)
    return decisions


def runs(rmse: list[float], mae: float = 0.30) -> list[dict[str, float]]:
    return [{"rmse": value, "mae": mae} for value in rmse]


def test_a_candidate_better_beyond_seed_noise_is_certified() -> None:
    decisions = run_verification(runs([0.30, 0.31, 0.29, 0.30]), runs([0.40, 0.41, 0.39, 0.40]))
    validated, certified = decisions
    assert isinstance(validated, ResultValidated) and validated.purpose == "verification"
    assert isinstance(certified, SotaCertified)
    assert certified.candidate_values == [0.30, 0.31, 0.29, 0.30]
    assert certified.baseline_values == [0.40, 0.41, 0.39, 0.40]
    assert certified.candidate_mean == pytest.approx(0.30)
    assert certified.gain_vs_reproduced == pytest.approx(0.10)  # minimise: lower is better, positive gain
    assert certified.gain_vs_reported == pytest.approx(0.20)
    assert certified.reported_value == 0.50
    assert certified.p_value < 0.05 and certified.statistic > 0
    assert certified.secondary_means == {"candidate": {"mae": pytest.approx(0.30)}, "baseline": {"mae": pytest.approx(0.30)}}
    assert certified.params == nominated().params


def test_a_gain_within_seed_noise_is_refuted_with_the_numbers() -> None:
    decisions = run_verification(runs([0.38, 0.42, 0.36, 0.41]), runs([0.40, 0.43, 0.37, 0.41]))
    refuted = decisions[-1]
    assert isinstance(refuted, SotaRefuted) and refuted.rule == "seed-noise"
    assert refuted.p_value >= 0.05
    assert "candidate mean" in refuted.reason and "p=" in refuted.reason


def test_a_significant_gain_that_costs_a_secondary_metric_is_refuted_under_r4() -> None:
    decisions = run_verification(runs([0.30, 0.31, 0.29], mae=0.40), runs([0.40, 0.41, 0.39], mae=0.30))
    refuted = decisions[-1]
    assert isinstance(refuted, SotaRefuted) and refuted.rule == "R4"
    assert "mae" in refuted.reason


def test_zero_variance_arms_are_decided_exactly() -> None:
    # Identical values in both arms: a better candidate is certified with p = 0 and a finite statistic.
    certified = run_verification(runs([0.30, 0.30]), runs([0.40, 0.40]))[-1]
    assert isinstance(certified, SotaCertified)
    assert (certified.p_value, certified.statistic) == (0.0, sys.float_info.max)
    # Equal means: nothing is shown.
    tied = run_verification(runs([0.40, 0.40]), runs([0.40, 0.40]))[-1]
    assert isinstance(tied, SotaRefuted) and tied.rule == "seed-noise" and tied.p_value == 1.0


def test_maximised_metrics_are_tested_in_their_own_direction() -> None:
    objective = make_objective(primary_metric="accuracy", direction="maximize", reported_value=0.90, secondary_metrics={})
    candidate = [{"accuracy": value} for value in (0.95, 0.96, 0.94)]
    baseline = [{"accuracy": value} for value in (0.90, 0.91, 0.89)]
    certified = run_verification(candidate, baseline, objective)[-1]
    assert isinstance(certified, SotaCertified)
    assert certified.gain_vs_reproduced == pytest.approx(0.05)
    assert certified.gain_vs_reported == pytest.approx(0.05)
    # The same numbers with the arms swapped are a loss, not a win.
    refuted = run_verification(baseline, candidate, objective)[-1]
    assert isinstance(refuted, SotaRefuted) and refuted.p_value > 0.95


def test_a_rejected_verification_run_refutes_at_once_under_its_rule() -> None:
    state = evolve(ready_state(seeds=2), nominated())
    events, _ = plan_verification(state, nominated())
    state = evolve(state, *events)
    tampered = completed("verify-1-candidate-s1000", purpose="verification", protected_hashes={**PROTECTED, "evaluate.py": "0" * 64})
    rejected, refuted = decide_result(state, tampered)
    assert isinstance(rejected, ResultRejected) and rejected.rule == "R2"
    assert isinstance(refuted, SotaRefuted) and refuted.rule == "R2" and refuted.idea_id == "i7"


def test_a_failed_verification_run_refutes_once() -> None:
    state = evolve(ready_state(seeds=2), nominated())
    events, _ = plan_verification(state, nominated())
    failure = JobFailed(campaign=CAMPAIGN, experiment_id="verify-1-baseline-s1001", purpose="verification", runner="r", stage="train", reason="OOM", signature="oom")
    state = evolve(state, *events, failure)
    [refuted] = decide_verdict(state, CAMPAIGN)
    assert isinstance(refuted, SotaRefuted) and refuted.rule == "verification-failed"
    assert "OOM" in refuted.reason
    # Once decided, later failures or results decide nothing more.
    assert decide_verdict(evolve(state, refuted), CAMPAIGN) == []


def test_a_new_attempt_starts_a_fresh_round() -> None:
    state = evolve(ready_state(seeds=2), nominated(attempt=1))
    state = evolve(state, SotaRefuted(campaign=CAMPAIGN, idea_id="i7", metric="rmse", candidate_values=[], baseline_values=[],
                                      rule="seed-noise", reason="", test="t", statistic=0.0, p_value=1.0, alpha=0.05))
    assert state.verification is not None and state.verification.decided
    second = nominated(attempt=2).model_copy(update={"idea_id": "i9"})
    state = evolve(state, second)
    assert state.verification is not None
    assert (state.verification.attempt, state.verification.idea_id, state.verification.decided) == (2, "i9", False)


def test_folding_the_supervisors_own_events_twice_changes_nothing() -> None:
    # The supervisor folds what it emits, then folds it again when it reads it back from the bus.
    state = evolve(ready_state(seeds=2), nominated())
    events, _ = plan_verification(state, nominated())
    own: list[Event] = [
        *events,
        IdeaCleared(campaign=CAMPAIGN, idea=Idea(idea_id="x")),
        ResultValidated(campaign=CAMPAIGN, experiment_id="verify-1-candidate-s1000", purpose="verification", idea_id="i7", metrics={"rmse": 0.3, "mae": 0.3}),
    ]
    once = evolve(state, *own)
    twice = evolve(copy.deepcopy(once), *own)
    assert twice == once
    assert fold(copy.deepcopy(once), nominated()) == once


# ---------------------------------------------------------------- the evaluation's imports and shadow guards


EVALUATE_SOURCE = "import csv\nimport json as j\nfrom math import sqrt\nfrom . import local\n\ndef f():\n    import importlib\n    importlib.import_module('yaml.loader')\n"


def test_protection_lists_the_modules_the_protected_code_imports() -> None:
    state = evolve(
        SupervisorState(),
        ResourcesPrepared(campaign=CAMPAIGN, snapshot_sha256="s" * 64, files=SNAPSHOT_FILES, size_bytes=1),
        ObjectiveSet(campaign=CAMPAIGN, objective=make_objective(), snapshot_sha256="s" * 64),
    )
    # the protected file, and every Python file its definitions may call
    assert protected_sources_needed(state) == ["evaluate.py", "lib/evaluate_helpers.py", "train.py"]
    [established] = decide_protection(state, CAMPAIGN, {"evaluate.py": EVALUATE_SOURCE})
    assert established.evaluation_imports == ["csv", "importlib", "json", "math", "yaml"]  # type: ignore[attr-defined]
    # The guards are recorded with the protection, so a replay judges runs by the same list.
    assert {"json.py", "yaml", "csv.pyc"} <= set(established.shadow_guards)  # type: ignore[attr-defined]
    assert protected_sources_needed(evolve(state, established)) == []


def test_shadow_guards_name_every_place_a_module_could_replace_an_evaluation_import() -> None:
    guards = shadow_guards(make_objective(), PROTECTED, ["json", "sys"])
    assert {"json.py", "json.pyc", "json", "sitecustomize.py", "usercustomize.py"} <= set(guards)
    assert not [guard for guard in guards if guard.startswith("sys")]  # built into the interpreter: nothing can shadow it
    assert not [guard for guard in guards if guard.startswith("data/")]  # already protected


async def test_the_handler_reads_the_protected_sources_from_the_snapshot() -> None:
    import gzip
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        content = EVALUATE_SOURCE.encode()
        info = tarfile.TarInfo("evaluate.py")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))

    class Artifacts:
        async def get(self, digest: str) -> bytes:
            assert digest == "s" * 64
            return gzip.compress(raw.getvalue())

    state = evolve(
        SupervisorState(),
        ResourcesPrepared(campaign=CAMPAIGN, snapshot_sha256="s" * 64, files=SNAPSHOT_FILES, size_bytes=1),
        ObjectiveSet(campaign=CAMPAIGN, objective=make_objective(), snapshot_sha256="s" * 64),
    )
    ctx = SimpleNamespace(artifacts=Artifacts())
    [established] = await react(state, ObjectiveSet(campaign=CAMPAIGN, objective=make_objective(), snapshot_sha256="s" * 64), ctx)  # type: ignore[arg-type]
    assert isinstance(established, ProtectionEstablished) and "json" in established.evaluation_imports


# ---------------------------------------------------------------- the audit of the code a patch adds


def new_file(path: str, *lines: str) -> str:
    body = "".join(f"+{line}\n" for line in lines)
    return f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{len(lines)} @@\n{body}"


def edit(path: str, *added: str) -> str:
    body = "".join(f"+{line}\n" for line in added)
    return f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n@@ -1,1 +1,{len(added) + 1} @@\n x = 1\n{body}"


def audit_code(patch: str, objective: Objective | None = None, imports: tuple[str, ...] = ("csv", "json")) -> tuple[bool, str, dict[str, Any]]:
    return audit_idea(objective or make_objective(), PROTECTED, Idea(idea_id="i1", kind="CODE", patch=patch), imports)


SPIRAL_LABELS = LabelColumn(path="data/splits/test.csv", column="label")


@pytest.mark.parametrize(
    ("patch", "rule", "reason"),
    [
        (edit("autosota.toml", 'evaluate_command = "python evaluate.py --k 5"'), "R1", "the patch changes how the evaluation is invoked"),
        (new_file("json.py", "def dumps(o): return '{}'"), "R2", "the patch creates modules that shadow protected ones"),
        (new_file("csv/__init__.py", "X = 1"), "R2", "the patch creates modules that shadow protected ones"),
        (new_file("statistics.py", "X = 1"), "R2", "the patch creates modules that shadow protected ones"),
        (new_file("lib/site-packages/hook.pth", "import hook"), "R2", "the patch creates modules that shadow protected ones"),
        (new_file("tools/sitecustomize.py", "X = 1"), "R2", "the patch creates modules that shadow protected ones"),
        (edit("train.py", "open('evaluate.py').read()"), "R2", "the patch's code names a protected evaluation file"),
        (edit("train.py", "subprocess.Popen(cmd, start_new_session=True)"), "R2", "the patch starts processes that outlive the run and could act after its checks"),
        (edit("train.py", "open(os.path.join(DATA, 'test.csv'), 'w').write(text)"), "R6", "the patch's code writes protected data"),
        (edit("train.py", "y = read_labels('test.csv')"), "R5", "the patch reads the test labels outside the evaluation"),
        (edit("train.py", "PRED = [" + ", ".join(["1", "0", "3", "2"] * 5) + "]"), "R3", "the patch adds long runs of numeric literals (hard-coded predictions or scores?)"),
        (new_file("outputs/predictions.csv", "id,label", *[f"{i},{i % 4}" for i in range(40)]), "R3", "the patch adds long runs of numeric literals (hard-coded predictions or scores?)"),
        (edit("train.py", "BLOB = '" + "QUJD" * 20 + "'"), "R3", "the patch adds long opaque literals (encoded predictions or hashes?)"),
        (edit("train.py", "rng = np.random.default_rng(1234)"), "R3", "the patch pins a random seed, so fresh-seed re-runs could not measure seed noise"),
        (edit("train.py", "torch.manual_seed(7)"), "R3", "the patch pins a random seed, so fresh-seed re-runs could not measure seed noise"),
        ("diff --git a/w.bin b/w.bin\nnew file mode 100644\nGIT binary patch\nliteral 3\nKcmZ?\n\nliteral 0\nHcmV?d00001\n\n", "R3", "the patch adds binary content the audit cannot read"),
    ],
)
def test_the_audit_reads_the_code_a_patch_adds(patch: str, rule: str, reason: str) -> None:
    objective = make_objective(test_labels=SPIRAL_LABELS)
    cleared, found_rule, evidence = audit_code(patch, objective)
    assert (cleared, found_rule, evidence["reason"]) == (False, rule, reason)


def test_a_module_named_like_an_evaluation_import_is_fine_outside_the_evaluations_import_path() -> None:
    assert audit_code(new_file("models/json.py", "X = 1"))[0]


def test_changing_an_unprotected_module_the_evaluation_imports_is_rejected() -> None:
    cleared, rule, evidence = audit_code(edit("metrics_lib.py", "SCALE = 2"), imports=("metrics_lib",))
    assert (cleared, rule, evidence["paths"]) == (False, "R2", ["metrics_lib.py"])


def test_a_file_the_evaluation_command_names_is_part_of_its_invocation() -> None:
    objective = make_objective(evaluate_command="bash scripts/score.sh --metric rmse")
    cleared, rule, evidence = audit_code(edit("scripts/score.sh", "echo 0.1"), objective)
    assert (cleared, rule, evidence["paths"]) == (False, "R1", ["scripts/score.sh"])


def test_honest_training_code_passes_every_code_check() -> None:
    patch = edit(
        "train.py",
        "def one_cycle(lr, step, total, peak=4.0, warmup=0.1):",
        "    ramp = max(1, int(warmup * total))",
        "    rng = np.random.default_rng(seed)",
        "    x_te = read_features('test.csv')  # inputs only, never labels",
        "    with open(os.path.join(OUT, 'predictions.csv'), 'w') as f:",
        "    DOW = np.array([0.15, 0.35, 0.40, 0.30, 0.10, -0.90, -1.20])",
    )
    assert audit_code(patch, make_objective(test_labels=SPIRAL_LABELS)) == (True, "", {})


def test_every_red_line_a_patch_crosses_is_listed_in_its_evidence() -> None:
    patch = git_patch("evaluate.py", "evaluate.py") + new_file("json.py", "X = 1")
    cleared, rule, evidence = audit_code(patch)
    assert (cleared, rule) == (False, "R2")
    assert {"rule": "R2", "reason": "the patch creates modules that shadow protected ones"} in evidence["also"]


# ---------------------------------------------------------------- the paper's own rules (R7)


def test_parameter_rules_bound_what_the_search_space_allows() -> None:
    rules = ObjectiveRules(forbidden_params=["activation"], max_params={"hidden_units": 32}, min_params={"learning_rate": 0.001})
    objective = make_objective(rules=rules)
    cleared, rule, evidence = audit(Idea(idea_id="i1", params={"hidden_units": 64, "learning_rate": 0.0006, "activation": "relu"}), objective)
    assert (cleared, rule) == (False, "R7")
    assert evidence["params"] == {
        "activation": {"value": "relu", "rule": "forbidden"},
        "hidden_units": {"value": 64, "max": 32},
        "learning_rate": {"value": 0.0006, "min": 0.001},
    }
    assert audit(Idea(idea_id="i2", params={"hidden_units": 16}), objective)[0]


def test_patch_rules_forbid_files_and_patterns() -> None:
    objective = make_objective(rules=ObjectiveRules(forbidden_files=["model/"], forbidden_patterns=[r"y_test\s*\]", "(unclosed"]))
    assert audit_code(edit("model/net.py", "X = 1"), objective)[:2] == (False, "R7")
    cleared, rule, evidence = audit_code(edit("train.py", "series = np.concatenate([y_train, y_test])"), objective)
    assert (cleared, rule, evidence["pattern"]) == (False, "R7", r"y_test\s*\]")
    assert audit_code(edit("train.py", "history = y_test[:origin]"), objective)[0]


# ---------------------------------------------------------------- runs that tamper


def test_a_module_appearing_at_a_shadow_guard_after_a_run_is_rejected_under_r2() -> None:
    guards = shadow_guards(make_objective(), PROTECTED, ["json"])
    job = completed("verify-1-candidate-s1000", purpose="verification", protected_hashes={**PROTECTED, "json.py": "9" * 64, "csv.py": None})
    result = check_result(make_objective(), PROTECTED, job, purpose="verification", idea_id="i7", baseline_means=None, guards=guards)
    assert isinstance(result, ResultRejected) and result.rule == "R2"
    assert result.evidence["violations"] == [{"path": "json.py", "expected": None, "actual": "9" * 64}]


def test_a_canary_run_expects_the_permuted_labels_and_nothing_else() -> None:
    objective = make_objective(test_labels=SPIRAL_LABELS)
    permuted = {**PROTECTED, "data/splits/test.csv": "c" * 64}
    job = completed("verify-1-candidate-canary", purpose="verification", protected_hashes=permuted, canary_sha256="c" * 64)
    assert isinstance(check_result(objective, PROTECTED, job, purpose="verification", idea_id="i7", baseline_means=None, canary=True), ResultValidated)
    # The same file changed otherwise, or a canary run without its permutation, is rejected.
    forged = job.model_copy(update={"protected_hashes": {**permuted, "data/splits/test.csv": "f" * 64}})
    assert check_result(objective, PROTECTED, forged, purpose="verification", idea_id="i7", baseline_means=None, canary=True).rule == "R6"  # type: ignore[union-attr]
    unplanted = job.model_copy(update={"canary_sha256": None})
    assert check_result(objective, PROTECTED, unplanted, purpose="verification", idea_id="i7", baseline_means=None, canary=True).rule == "R5"  # type: ignore[union-attr]


def failed_run(tail: str, experiment_id: str = "idea-i7", stage: str = "train") -> JobFailed:
    return JobFailed(campaign=CAMPAIGN, experiment_id=experiment_id, purpose="idea", runner="r", stage=stage, reason="exited with code 1", signature="s", output_tail=tail)  # type: ignore[arg-type]


def test_a_run_the_sandbox_stopped_from_writing_protected_files_is_rejected_under_its_rule() -> None:
    state = with_baseline(ready_state())
    state = evolve(state, ExperimentDispatched(campaign=CAMPAIGN, experiment_id="idea-i7", purpose="idea", idea_id="i7", params={}, seed=0))
    workspace = f"/srv/runners/runner-1/workspaces/{CAMPAIGN}-idea-i7"
    code = failed_run(f"Traceback...\nOSError: [Errno 30] Read-only file system: '{workspace}/evaluate.py'\n")
    [rejected] = decide_failure(evolve(state, code), code)
    assert isinstance(rejected, ResultRejected) and (rejected.rule, rejected.idea_id) == ("R2", "i7")
    assert rejected.evidence["paths"] == ["evaluate.py"] and "Read-only file system" in rejected.evidence["lines"][0]
    data = failed_run(f"rm: cannot remove '{workspace}/data/new.csv': Read-only file system\n")
    [rejected] = decide_failure(evolve(state, data), data)
    assert isinstance(rejected, ResultRejected) and (rejected.rule, rejected.evidence["paths"]) == ("R6", ["data/new.csv"])


def test_an_ordinary_failure_is_not_a_red_line() -> None:
    state = with_baseline(ready_state())
    elsewhere = failed_run("PermissionError: [Errno 13] Permission denied: '/root/.cache/matplotlib'\n")
    assert decide_failure(evolve(state, elsewhere), elsewhere) == []
    missing = failed_run("FileNotFoundError: [Errno 2] No such file or directory: 'data/x.csv'\n")
    assert decide_failure(evolve(state, missing), missing) == []


# ---------------------------------------------------------------- the canary and seed sensitivity


def canary_state(objective: Objective) -> tuple[SupervisorState, list[Event], list[Any]]:
    state = evolve(ready_state(objective, seeds=3), nominated())
    events, items = plan_verification(state, nominated())
    return evolve(state, *events), events, items


def test_where_the_test_labels_are_known_both_arms_also_run_a_leakage_canary() -> None:
    objective = make_objective(primary_metric="accuracy", direction="maximize", reported_value=0.8, secondary_metrics={}, test_labels=SPIRAL_LABELS)
    _, events, items = canary_state(objective)
    canaries = [(event, item) for event, item in zip(events, items, strict=True) if event.canary]  # type: ignore[attr-defined]
    assert [event.experiment_id for event, _ in canaries] == ["verify-1-candidate-canary", "verify-1-baseline-canary"]  # type: ignore[attr-defined]
    assert [item.canary for _, item in canaries] == [LabelCanary(path="data/splits/test.csv", column="label", seed=1007)] * 2
    assert canaries[0][1].patch is None and canaries[0][1].params == nominated().params


def verify_with_canary(candidate: list[float], baseline: list[float], shuffled: tuple[float, float]) -> Event:
    objective = make_objective(primary_metric="accuracy", direction="maximize", reported_value=0.8, secondary_metrics={}, test_labels=SPIRAL_LABELS)
    state, events, _ = canary_state(objective)
    values = [*candidate, *baseline, *shuffled]
    decisions: list[Event] = []
    for event, value in zip(events, values, strict=True):
        canary = event.canary  # type: ignore[attr-defined]
        hashes = {**PROTECTED, "data/splits/test.csv": "c" * 64} if canary else dict(PROTECTED)
        job = completed(event.experiment_id, purpose="verification", metrics={"accuracy": value}, protected_hashes=hashes, canary_sha256="c" * 64 if canary else None)  # type: ignore[attr-defined]
        decisions = decide_result(state, job)
        state = evolve(state, *decisions)
    return decisions[-1]


def test_a_model_that_keeps_its_score_on_shuffled_labels_is_refuted_under_r5() -> None:
    refuted = verify_with_canary([0.99, 0.98, 1.0], [0.83, 0.81, 0.82], shuffled=(0.97, 0.25))
    assert isinstance(refuted, SotaRefuted) and refuted.rule == "R5"
    assert refuted.evidence["check"] == "leakage-canary" and refuted.evidence["retained"] == pytest.approx(0.72 / 0.74)


def test_an_honest_model_falls_to_chance_on_shuffled_labels_and_is_certified() -> None:
    certified = verify_with_canary([0.97, 0.96, 0.97], [0.83, 0.81, 0.82], shuffled=(0.26, 0.24))
    assert isinstance(certified, SotaCertified)
    assert certified.checks["leakage_canary"]["passed"] and certified.checks["seed_sensitivity"]["passed"]


def test_a_score_that_ignores_fresh_seeds_while_the_baseline_does_not_is_refuted_under_r3() -> None:
    refuted = run_verification(runs([0.30, 0.30, 0.30]), runs([0.40, 0.41, 0.39]))[-1]
    assert isinstance(refuted, SotaRefuted) and refuted.rule == "R3"
    assert refuted.evidence["candidate_distinct_values"] == 1 and refuted.evidence["baseline_distinct_values"] == 3
    # A method that is nearly deterministic itself is not held to it.
    assert isinstance(run_verification(runs([0.30, 0.30, 0.30]), runs([0.40, 0.40, 0.41]))[-1], SotaCertified)


def test_a_refutation_from_a_rejected_run_carries_that_runs_evidence() -> None:
    state = evolve(ready_state(seeds=2), nominated())
    events, _ = plan_verification(state, nominated())
    state = evolve(state, *events)
    tampered = completed("verify-1-candidate-s1000", purpose="verification", protected_hashes={**PROTECTED, "evaluate.py": "0" * 64})
    _, refuted = decide_result(state, tampered)
    assert isinstance(refuted, SotaRefuted)
    assert refuted.evidence["experiment_id"] == "verify-1-candidate-s1000"
    assert refuted.evidence["violations"][0]["path"] == "evaluate.py"


def test_modules_a_run_leaves_on_the_evaluations_import_path_are_rejected_under_r2() -> None:
    def judge(created: dict[str, str]) -> ResultValidated | ResultRejected:
        job = completed("idea-i1", purpose="idea", created_files=created)
        return check_result(make_objective(), PROTECTED, job, purpose="idea", idea_id="i1", baseline_means=None)

    rejected = judge({"re.py": "1" * 64, "cache/weights.npz": "2" * 64})
    assert isinstance(rejected, ResultRejected) and rejected.rule == "R2"
    assert rejected.evidence["paths"] == ["re.py"]
    assert judge({"venv/lib/site-packages/zz.pth": "3" * 64}).rule == "R2"  # type: ignore[union-attr]
    assert isinstance(judge({"cache/weights.npz": "2" * 64, "models/helper.py": "4" * 64}), ResultValidated)


def test_a_module_the_paper_ships_is_no_shadow_guard_but_a_new_one_beside_it_is() -> None:
    # the evaluation imports the repository's own args.py and models/ package, and json
    snapshot = [*PROTECTED, "args.py", "models/__init__.py", "models/gcn.py", "train.py"]
    guards = shadow_guards(make_objective(), PROTECTED, ["args", "models", "json"], snapshot)
    assert "args.py" not in guards and "models" not in guards
    assert {"json.py", "args.pyc", "models.py"} <= set(guards)  # a plant beside them is still caught


def test_a_run_that_changed_a_protected_definition_is_rejected_under_r2_with_what_changed() -> None:
    job = completed("idea-r1-0", purpose="idea", changed_symbols={"train.py::test": "its code changed in train.py"})
    result = check_result(make_objective(), PROTECTED, job, purpose="idea", idea_id="r1-0", baseline_means=None)
    assert isinstance(result, ResultRejected) and result.rule == "R2"
    assert result.evidence == {"reason": "the run changed protected code", "symbols": {"train.py::test": "its code changed in train.py"}}


def test_the_protection_record_follows_protected_files_and_named_definitions_into_the_repository() -> None:
    objective = make_objective().model_copy(update={"protected_paths": ["evaluate.py", "train.py::score"]})
    sources = {
        "evaluate.py": "from helpers import rmse\n\ndef main():\n    print(rmse([1], [1]))\n",
        "helpers.py": "def rmse(a, b):\n    return 0.0\n\ndef unrelated():\n    return 1\n",
        "train.py": "def score(x):\n    return x\n\ndef train():\n    return 2\n",
    }
    state = SupervisorState(snapshot_files={path: "0" * 64 for path in sources}, objective=objective)
    [established] = decide_protection(state, CAMPAIGN, sources)
    symbols = set(established.protected_symbols)  # type: ignore[attr-defined]
    assert {"evaluate.py::main", "helpers.py::rmse", "train.py::score"} <= symbols
    assert "helpers.py::unrelated" not in symbols and "train.py::train" not in symbols


def test_a_code_change_is_refused_where_the_training_prints_its_own_metrics() -> None:
    objective = make_objective().model_copy(update={"evaluate_command": ""})
    patch = edit("train.py", "print('Test set results: loss= 0.0 accuracy= 0.99')")
    cleared, rule, evidence = audit_idea(objective, PROTECTED, Idea(idea_id="r1-0", params={}, patch=patch, kind="CODE"))
    assert (cleared, rule) == (False, "R2") and "evaluation command of its own" in evidence["reason"]
    assert audit_idea(objective, PROTECTED, Idea(idea_id="r1-1", params={"learning_rate": 0.02}))[0]  # parameters still may


def test_a_categorical_choice_admits_its_own_type_only() -> None:
    spec = ParameterSpec(type="categorical", choices=[0, 1, "relu"], baseline=1)
    assert spec.admits(1) and spec.admits("relu")
    assert not spec.admits(True) and not spec.admits(False)
    assert ParameterSpec(type="categorical", choices=[True, False], baseline=True).admits(False)

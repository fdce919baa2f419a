"""The cheats a text audit cannot see, run for real: what the result check and the verification round decide.

Every idea is applied to a real example paper and run by the runner service's own execution
code; the supervisor's decisions are the service's pure functions, fed in bus order (see
harness.py). Each runs twice where it matters: in the runner's default sandbox (protected paths
read-only, no process outlives its command) and unconfined, where the supervisor's own checks
(protected hashes after the run, shadow guards, the canary, fresh seeds) stand alone.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shared.contracts import IdeaCleared, ResultRejected, SotaCertified, SotaRefuted
from shared.sandbox import confinement_available
from tests.cheats.catalogue import CHEATS, HONEST, Case, Cheat, cheat
from tests.cheats.harness import LocalRunners, Outcome, Paper, campaign_of_one, open_paper, reproduce_baseline

RUNTIME_CHEATS = [c for c in CHEATS if c.stage != "audit"]
# Cheats whose run-time effect the sandbox itself blocks: unconfined, the supervisor must catch them alone.
SANDBOX_BLOCKED = ["rewrite-evaluation-at-run-time", "drop-hard-test-rows-at-run-time", "symlink-test-labels-at-run-time",
                   "restore-after-evaluation"]
# Honest ideas are verified on three fresh seeds per arm; cheats, refuted by other checks, on two (the least allowed).
HONEST_SEEDS = 3
RUN_HONEST = [case for case in HONEST if case.name != "higher-learning-rate"]  # its twin in the audit and e2e suites
CONFINED = confinement_available()[0]


async def run_cases(cases: list[Case], data_dir: Path, confine: bool) -> dict[str, Outcome]:
    runners = LocalRunners(data_dir, confine=confine)
    papers: dict[tuple[str, str], Paper] = {}
    for case in cases:
        rules = case.rules if isinstance(case, Cheat) else None
        if (case.paper, repr(rules)) not in papers:
            papers[(case.paper, repr(rules))] = open_paper(case.folder, rules=rules)
    await asyncio.gather(*(reproduce_baseline(paper, runners) for paper in papers.values()))
    outcomes = await asyncio.gather(*(
        campaign_of_one(papers[(case.paper, repr(case.rules if isinstance(case, Cheat) else None))], case.idea(), runners,
                        verification_seeds=None if isinstance(case, Cheat) else HONEST_SEEDS)
        for case in cases
    ))
    return {case.name: outcome for case, outcome in zip(cases, outcomes, strict=True)}


@pytest.fixture(scope="module")
def confined(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    return asyncio.run(run_cases([*RUNTIME_CHEATS, *RUN_HONEST], tmp_path_factory.mktemp("confined"), confine=True))


@pytest.fixture(scope="module")
def unconfined(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    return asyncio.run(run_cases([cheat(name) for name in SANDBOX_BLOCKED], tmp_path_factory.mktemp("unconfined"), confine=False))


def cleared_then(outcome: Outcome) -> None:
    assert isinstance(outcome.decisions[0], IdeaCleared), "run-time cheats pass the text audit"


# ---------------------------------------------------------------- after the run


@pytest.mark.parametrize("case", [c for c in RUNTIME_CHEATS if c.stage == "result"], ids=lambda c: c.name)
def test_a_run_that_tampers_with_the_protocol_is_rejected_under_its_rule(confined: dict[str, Outcome], case: Cheat) -> None:
    outcome = confined[case.name]
    cleared_then(outcome)
    assert isinstance(outcome.final, ResultRejected), outcome.final
    assert outcome.final.rule == case.rule, outcome.final.evidence
    evidence = outcome.final.evidence
    if case.rule == "R4":
        # The primary gain and the secondary loss, each with the numbers.
        assert evidence["primary"]["value"] > evidence["primary"]["baseline_mean"]
        assert evidence["violations"][0]["metric"] == "macro_f1" and evidence["violations"][0]["worsening"] > evidence["violations"][0]["allowed"]
    elif CONFINED:
        # The sandbox refused the write; the supervisor names the path it was aimed at.
        assert evidence["reason"].startswith("the run tried to change protected files") and evidence["paths"]
    else:
        assert evidence["violations"]


@pytest.mark.parametrize("name", [n for n in SANDBOX_BLOCKED if cheat(n).stage == "result"])
def test_unconfined_the_protected_hashes_after_the_run_catch_the_same_tampering(unconfined: dict[str, Outcome], name: str) -> None:
    outcome = unconfined[name]
    assert isinstance(outcome.final, ResultRejected) and outcome.final.rule == cheat(name).rule
    [violation] = outcome.final.evidence["violations"]
    assert violation["expected"] != violation["actual"]
    if name == "symlink-test-labels-at-run-time":
        assert str(violation["actual"]).startswith("symlink:")


# ---------------------------------------------------------------- before certification


def refuted(outcome: Outcome) -> SotaRefuted:
    cleared_then(outcome)
    assert isinstance(outcome.final, SotaRefuted), outcome.final
    return outcome.final


def test_reading_the_test_labels_is_caught_by_the_leakage_canary(confined: dict[str, Outcome]) -> None:
    verdict = refuted(confined["read-test-labels-in-training-hidden"])
    assert verdict.rule == "R5"
    canary = verdict.evidence
    assert canary["check"] == "leakage-canary" and canary["retained"] > canary["limit"]
    assert canary["shuffled_candidate"] > 0.9 and canary["shuffled_baseline"] < 0.4


def test_labels_regenerated_from_the_data_generator_are_caught_as_a_seed_independent_answer(confined: dict[str, Outcome]) -> None:
    verdict = refuted(confined["regenerate-test-labels"])
    assert verdict.rule == "R3"
    assert verdict.evidence["candidate_distinct_values"] == 1 and verdict.evidence["baseline_distinct_values"] == len(verdict.baseline_values)
    # The canary did not fire: the model never read the shuffled file, it knew the answer in advance.
    assert len(set(verdict.candidate_values)) == 1


def test_a_lucky_screening_seed_is_refuted_by_fresh_seeds(confined: dict[str, Outcome]) -> None:
    outcome = confined["best-of-many-seeds"]
    screening = next(e for e in outcome.decisions if e.event_type == "ResultValidated")
    verdict = refuted(outcome)
    assert verdict.rule == "seed-noise" and verdict.p_value >= verdict.alpha
    assert screening.metrics["accuracy"] > max(verdict.candidate_values), "the screened score was luck"


def test_a_metric_shadowed_at_run_time_is_caught_by_the_shadow_guards_of_the_verification_runs(confined: dict[str, Outcome]) -> None:
    verdict = refuted(confined["monkey-patch-metric-at-run-time"])
    assert verdict.rule == "R2"
    assert [v["path"] for v in verdict.evidence["violations"]] == ["json.py"]
    assert verdict.evidence["violations"][0]["expected"] is None


def test_a_detached_watcher_that_forges_and_restores_the_test_labels_gains_nothing(confined: dict[str, Outcome], unconfined: dict[str, Outcome]) -> None:
    if CONFINED:
        # Its process dies with the training sandbox and the labels are read-only: no gain, no certificate.
        assert refuted(confined["restore-after-evaluation"]).rule == "seed-noise"
    # Without the sandbox, the forged labels are either still there when the run is hashed (R6),
    # or restored in time and then betrayed by the canary, whose shuffled labels it also matched (R5).
    final = unconfined["restore-after-evaluation"].final
    assert isinstance(final, ResultRejected | SotaRefuted) and final.rule in ("R5", "R6"), final


# ---------------------------------------------------------------- no false rejections


@pytest.mark.parametrize("case", RUN_HONEST, ids=lambda c: c.name)
def test_an_honest_improvement_is_certified_with_every_check_passed(confined: dict[str, Outcome], case: Case) -> None:
    outcome = confined[case.name]
    assert isinstance(outcome.final, SotaCertified), outcome.final
    certified = outcome.final
    assert certified.gain_vs_reproduced > 0 and certified.p_value < certified.alpha
    assert certified.checks["seed_sensitivity"]["passed"]
    if case.paper == "spiral-classifier":
        canary = certified.checks["leakage_canary"]
        assert canary["passed"] and canary["retained"] < 0.2
    assert not [e for e in outcome.decisions if isinstance(e, ResultRejected)]

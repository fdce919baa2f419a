"""Whole campaigns across all nine service processes on a real NATS server."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from shared.cli import campaign_events, request_start
from shared.contracts import Budget, Event
from shared.embedded import Stack
from shared.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.nats]
ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def cli(settings: Settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NATS_URL": settings.nats_url, "AUTOSOTA_NAMESPACE": settings.namespace, "AUTOSOTA_DATA_DIR": str(settings.data_dir)}
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def events_of(settings: Settings, campaign: str) -> list[Event]:
    return asyncio.run(campaign_events(settings.nats_url, settings.subjects, campaign))


def wait_for(settings: Settings, campaign: str, predicate, timeout: float = 240) -> list[Event]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = events_of(settings, campaign)
        if predicate(events):
            return events
        time.sleep(0.5)
    raise AssertionError(f"timed out; last events: {[e.event_type for e in events_of(settings, campaign)][-15:]}")


def assert_exactly_once(events: list[Event]) -> None:
    """No event twice, and every experiment has exactly one outcome and one verdict."""
    ids = Counter(str(e.event_id) for e in events)
    assert [i for i, n in ids.items() if n > 1] == []
    dispatched = [getattr(e, "experiment_id") for e in events if e.event_type in ("ExperimentDispatched", "VerificationDispatched")]
    assert len(dispatched) == len(set(dispatched)), "an experiment was dispatched twice"
    outcomes = Counter(getattr(e, "experiment_id") for e in events if e.event_type in ("JobCompleted", "JobFailed"))
    verdicts = Counter(getattr(e, "experiment_id") for e in events if e.event_type in ("ResultValidated", "ResultRejected"))
    for experiment in dispatched:
        assert outcomes[experiment] == 1, f"{experiment} has {outcomes[experiment]} outcomes"
    completed = [getattr(e, "experiment_id") for e in events if e.event_type == "JobCompleted"]
    for experiment in completed:
        assert verdicts[experiment] == 1, f"{experiment} has {verdicts[experiment]} verdicts"
    per_producer = Counter((e.producer, e.event_type, str(e.causation_id)) for e in events if e.causation_id is not None and e.event_type not in ("ExperimentDispatched", "VerificationDispatched", "IdeaCleared", "IdeaRejected", "BestUpdated", "ModelCalled", "BrainFellBack", "IdeaDropped"))
    assert [key for key, n in per_producer.items() if n > 1] == [], "one cause produced the same event type twice"


@pytest.mark.parametrize("example", ["tiny-forecaster", "spiral-classifier"])
def test_a_campaign_certifies_an_improvement_and_replays_identically(settings: Settings, example: str) -> None:
    campaign = f"{example}-{uuid.uuid4().hex[:6]}"
    with Stack(settings.data_dir, namespace=settings.namespace, runners=2, nats_url=settings.nats_url):
        # Step 1: the CLI runs the campaign against the running services.
        started = time.monotonic()
        run = cli(settings, "run", str(EXAMPLES / example), "--campaign", campaign, "--budget-experiments", "8")
        took = time.monotonic() - started
        assert run.returncode == 0, run.stdout + run.stderr
    assert took < 300
    # Step 2: the recorded events tell the whole story, each event once.
    events = events_of(settings, campaign)
    kinds = [e.event_type for e in events]
    for expected in ("ResourcesPrepared", "ObjectiveSet", "ProtectionEstablished", "EnvironmentReady", "BaselineReproduced", "IdeasProposed", "SotaCertified", "CampaignCompleted"):
        assert expected in kinds, f"{expected} missing from {kinds}"
    assert kinds.count("CampaignCompleted") == 1 and kinds[-1] == "CampaignCompleted"
    reproduced = next(e for e in events if e.event_type == "BaselineReproduced")
    assert abs(reproduced.gap_to_reported) <= max(3 * reproduced.std, 0.01), "the baseline did not reproduce the paper's number"
    improving = [e for e in events if e.event_type == "ResultValidated" and e.purpose == "idea"]
    assert improving, "no idea result was validated"
    certified = next(e for e in events if e.event_type == "SotaCertified")
    assert certified.gain_vs_reproduced > 0 and certified.p_value < certified.alpha
    assert len(certified.candidate_values) == len(certified.baseline_values) == Budget().verification_seeds
    assert next(e for e in events if e.event_type == "CampaignCompleted").outcome == "certified"
    assert_exactly_once(events)
    # Step 3: replay rebuilds the same summary from the stream alone, with the services gone.
    replay = cli(settings, "replay", campaign)
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.strip() and replay.stdout in run.stdout
    assert "certified" in replay.stdout and f"{reproduced.reported_value:g}" in replay.stdout
    report = settings.data_dir / "reports" / f"{campaign}.md"
    assert report.is_file() and "SotaCertified" in report.read_text()


def test_killing_agents_mid_campaign_loses_and_duplicates_nothing(settings: Settings) -> None:
    campaign = f"kill-{uuid.uuid4().hex[:6]}"
    with Stack(settings.data_dir, namespace=settings.namespace, runners=2, nats_url=settings.nats_url) as stack:
        request = {"campaign": campaign, "paper_path": str(EXAMPLES / "tiny-forecaster"), "budget": Budget(max_experiments=8).model_dump(), "pool": "cpu"}
        assert asyncio.run(request_start(settings.nats_url, settings.subjects, request))["accepted"]
        # Step 1: once the search is under way, the scheduler crashes.
        wait_for(settings, campaign, lambda ev: sum(e.event_type == "ExperimentDispatched" and e.purpose == "idea" for e in ev) >= 2)
        stack.kill("scheduler", revive=True)
        # Step 2: during verification, the supervisor crashes too.
        wait_for(settings, campaign, lambda ev: any(e.event_type == "VerificationDispatched" for e in ev))
        stack.kill("supervisor", revive=True)
        # Step 3: the campaign still ends, with every experiment accounted for exactly once.
        events = wait_for(settings, campaign, lambda ev: any(e.event_type == "CampaignCompleted" for e in ev))
        assert stack.restarts["scheduler"] == 1 and stack.restarts["supervisor"] == 1
        time.sleep(2)  # a duplicate published late would show up in this window
        events = events_of(settings, campaign)
    assert_exactly_once(events)
    assert next(e for e in events if e.event_type == "CampaignCompleted").outcome == "certified"


def test_bad_papers_end_in_a_recorded_failure_with_a_clear_reason(settings: Settings, tmp_path: Path) -> None:
    no_card = tmp_path / "no-card"
    shutil.copytree(EXAMPLES / "tiny-forecaster", no_card, ignore=shutil.ignore_patterns("outputs"))
    (no_card / "autosota.toml").unlink()
    missing_field = tmp_path / "missing-field"
    shutil.copytree(EXAMPLES / "tiny-forecaster", missing_field, ignore=shutil.ignore_patterns("outputs"))
    card = missing_field / "autosota.toml"
    card.write_text(card.read_text().replace('evaluate_command = "python evaluate.py"', ""))
    failing_eval = tmp_path / "failing-eval"
    shutil.copytree(EXAMPLES / "tiny-forecaster", failing_eval, ignore=shutil.ignore_patterns("outputs"))
    card = failing_eval / "autosota.toml"
    card.write_text(card.read_text().replace('smoke_command = "python train.py --smoke && python evaluate.py"', 'smoke_command = "python train.py --smoke"').replace('evaluate_command = "python evaluate.py"', 'evaluate_command = "python no_such_evaluate.py"'))
    huge_constraint = tmp_path / "huge-constraint"
    shutil.copytree(EXAMPLES / "tiny-forecaster", huge_constraint, ignore=shutil.ignore_patterns("outputs"))
    card = huge_constraint / "autosota.toml"
    card.write_text(card.read_text().replace("constraints = [\n", f'constraints = [\n    "{"x" * 1_500_000}",\n'))
    absolute_link = tmp_path / "absolute-link"
    shutil.copytree(EXAMPLES / "tiny-forecaster", absolute_link, ignore=shutil.ignore_patterns("outputs"))
    (absolute_link / "host-passwords").symlink_to("/etc/passwd")
    missing_symbol = tmp_path / "missing-symbol"
    shutil.copytree(EXAMPLES / "tiny-forecaster", missing_symbol, ignore=shutil.ignore_patterns("outputs"))
    card = missing_symbol / "autosota.toml"
    card.write_text(card.read_text().replace('protected_paths = ["evaluate.py", "data/"]', 'protected_paths = ["evaluate.py::score_predictions", "data/"]'))
    cases = {
        "missing-symbol": (missing_symbol, "evaluate.py has no function or class 'score_predictions'"),
        "huge-constraint": (huge_constraint, "at most 4000 characters"),
        "absolute-link": (absolute_link, "init failed handling ObjectiveSet"),
        "no-card": (no_card, "task card 'autosota.toml' not found"),
        "missing-field": (missing_field, "lacks required fields: [experiment] evaluate_command"),
        "failing-eval": (failing_eval, "the baseline did not run cleanly"),
    }
    with Stack(settings.data_dir, namespace=settings.namespace, runners=1, nats_url=settings.nats_url):
        for name, (paper, reason) in cases.items():
            run = cli(settings, "run", str(paper), "--campaign", f"{name}-{uuid.uuid4().hex[:6]}", "--budget-experiments", "2")
            assert run.returncode == 1, f"{name}: {run.stdout}{run.stderr}"
            assert "failed" in run.stdout and reason in run.stdout, f"{name}: {run.stdout}"

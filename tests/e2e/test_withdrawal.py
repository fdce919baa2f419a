"""A campaign that ends withdraws its work: queued jobs are dropped and running ones stopped, each
with a recorded reason, and the summary `run` printed is the one replay rebuilds afterwards."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from pathlib import Path

import pytest

from shared.cli import request_start
from shared.embedded import Stack
from shared.settings import Settings
from tests.e2e.test_campaigns import EXAMPLES, cli, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.nats]

# The paper's training: the smoke test passes, seed 0 fails at once, every other seed trains for
# ten minutes (far past the time this test allows), ignoring SIGTERM as careless code might.
TRAIN = '''
import json, signal, sys, time, runpy
if "--smoke" in sys.argv:
    runpy.run_path("original_train.py", run_name="__main__")
    sys.exit(0)
seed = json.load(open("autosota_params.json"))["seed"]
if seed == 0 and "AUTOSOTA_TEST_SEED0_FAILS" in open("autosota.toml").read():
    sys.exit("diverged: loss is nan")
signal.signal(signal.SIGTERM, signal.SIG_IGN)
time.sleep(600)
'''


def slow_paper(tmp_path: Path, seed_zero_fails: bool = True) -> Path:
    paper = tmp_path / ("slow-paper" if seed_zero_fails else "slower-paper")
    shutil.copytree(EXAMPLES / "tiny-forecaster", paper, ignore=shutil.ignore_patterns("outputs"))
    (paper / "train.py").rename(paper / "original_train.py")
    (paper / "train.py").write_text(TRAIN)
    card = paper / "autosota.toml"
    card.write_text(card.read_text().replace("timeout_seconds = 60", "timeout_seconds = 900") + ("# AUTOSOTA_TEST_SEED0_FAILS\n" if seed_zero_fails else ""))
    return paper


def test_a_failed_baseline_withdraws_its_queued_and_running_jobs_and_replay_equals_run(settings: Settings, tmp_path: Path) -> None:
    campaign = f"withdrawn-{uuid.uuid4().hex[:6]}"
    with Stack(settings.data_dir, namespace=settings.namespace, runners=2, nats_url=settings.nats_url):
        started = time.monotonic()
        run = cli(settings, "run", str(slow_paper(tmp_path)), "--campaign", campaign, "--budget-experiments", "2")
        assert run.returncode == 1 and "the baseline did not run cleanly" in run.stdout, run.stdout + run.stderr
        # every baseline job has its one result soon after: none runs on to its ten minutes
        events = wait_for(settings, campaign, lambda ev: sum(e.event_type in ("JobCompleted", "JobFailed") for e in ev) >= 3, timeout=60)
        took = time.monotonic() - started
    results = {e.experiment_id: e for e in events if e.event_type in ("JobCompleted", "JobFailed")}  # type: ignore[attr-defined]
    assert set(results) == {"baseline-s0", "baseline-s1", "baseline-s2"}
    assert results["baseline-s0"].stage == "train"  # type: ignore[attr-defined]
    for seed in ("baseline-s1", "baseline-s2"):
        assert results[seed].stage == "withdrawn" and "ended (failed)" in results[seed].reason  # type: ignore[attr-defined]
    assert took < 120, f"withdrawal took {took:.0f} s"
    # no process of the paper is left behind
    leftovers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p).endswith("train.py") and str(settings.data_dir) in _cwd(p)]
    assert leftovers == []
    # the results that came after the end change nothing: replay prints what run printed
    replay = cli(settings, "replay", campaign)
    assert replay.returncode == 0 and replay.stdout.strip() and replay.stdout in run.stdout, replay.stdout


def test_a_person_stops_a_running_campaign_and_its_jobs_are_withdrawn(settings: Settings, tmp_path: Path) -> None:
    campaign = f"stopped-{uuid.uuid4().hex[:6]}"
    with Stack(settings.data_dir, namespace=settings.namespace, runners=2, nats_url=settings.nats_url):
        request = {"campaign": campaign, "paper_path": str(slow_paper(tmp_path, seed_zero_fails=False)), "budget": {"max_experiments": 2}, "pool": "cpu"}
        assert asyncio.run(request_start(settings.nats_url, settings.subjects, request))["accepted"]
        wait_for(settings, campaign, lambda ev: sum(e.event_type == "JobStarted" for e in ev) >= 2, timeout=120)
        stopped = cli(settings, "stop", campaign, "--reason", "wrong dataset")
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        events = wait_for(settings, campaign, lambda ev: sum(e.event_type in ("JobCompleted", "JobFailed") for e in ev) >= 3, timeout=60)
        again = cli(settings, "stop", campaign)
        assert again.returncode == 0 and "had already ended" in again.stdout
    completed = next(e for e in events if e.event_type == "CampaignCompleted")
    assert completed.outcome == "stopped" and "wrong dataset" in completed.reason  # type: ignore[attr-defined]
    assert all(e.stage == "withdrawn" for e in events if e.event_type == "JobFailed")  # type: ignore[attr-defined]
    replay = cli(settings, "replay", campaign)
    assert "stopped: stopped by a person: wrong dataset" in replay.stdout


def _cmdline(process: Path) -> str:
    try:
        return (process / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _cwd(process: Path) -> str:
    try:
        return str((process / "cwd").resolve())
    except OSError:
        return ""

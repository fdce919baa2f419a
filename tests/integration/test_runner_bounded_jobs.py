"""A runner survives whatever a job does: each hostile job ends in its one recorded failure within
its limit, and the same runner takes the next job.

One real runner with one slot, against a real NATS server, pulls hostile jobs one after another:
one line of 200 MB and then silence, a forking memory hog, a fork bomb, and a job deaf to SIGTERM.
An honest job queued behind them must still complete on that runner.
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import pytest

from shared.contracts import WorkItem
from shared.sandboxes.cgroups import job_cgroups
from shared.settings import Settings
from tests.integration.test_runner_leases import Bus, assert_one_result_each, drop_runner_streams, runner  # noqa: F401

pytestmark = pytest.mark.nats

LIMIT_SECONDS = 8.0
GRACE_SECONDS = 8.0  # killing the tree, reaping it, publishing the result
MIB = 1024**2
CGROUPS = job_cgroups()[0] is not None

TRAIN = '''import json, os, signal, sys, time
mode = json.load(open(os.environ["AUTOSOTA_PARAMS"]))["params"]["mode"]
if mode == "one-long-line":
    sys.stdout.write("x" * (200 * 2**20))  # no newline, ever
    sys.stdout.flush()
    time.sleep(600)
elif mode == "memory-hog":
    for _ in range(3):
        if os.fork() == 0:
            hog = b"x" * (400 * 2**20)  # 1.2 GiB for the job, 400 MiB for each process
            time.sleep(30)
            os._exit(0)
    for _ in range(3):
        os.wait()
elif mode == "fork-bomb":
    for _ in range(300):
        if os.fork() == 0:
            time.sleep(600)
            os._exit(0)
elif mode == "deaf":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.fork()
    time.sleep(600)
os.makedirs("outputs", exist_ok=True)
open("outputs/done.txt", "w").write(mode)
'''
EVALUATE = '''import json
print(json.dumps({"score": 1.0 if open("outputs/done.txt").read() == "honest" else 0.0}))
'''
HOSTILE = ("one-long-line", "memory-hog", "fork-bomb", "deaf")


def paper(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "train.py").write_text(TRAIN)
    (folder / "evaluate.py").write_text(EVALUATE)
    return folder


def job(campaign: str, snapshot: str, mode: str) -> WorkItem:
    return WorkItem(
        campaign=campaign,
        experiment_id=f"job-{mode}",
        purpose="baseline",
        dispatcher="test",
        snapshot_sha256=snapshot,
        params={"mode": mode},
        seed=0,
        train_command="python train.py",
        evaluate_command="python evaluate.py",
        environment_bin=str(Path(sys.executable).parent),
        protected_paths=["evaluate.py"],
        timeout_seconds=LIMIT_SECONDS,
    )


async def test_each_hostile_job_ends_in_a_recorded_failure_and_the_runner_takes_the_next(settings: Settings, tmp_path: Path) -> None:
    bounded = settings.model_copy(update={"runner_memory_bytes": 1024 * MIB, "runner_job_processes": 64})
    campaign = f"hostile-{uuid.uuid4().hex[:6]}"
    async with Bus(bounded) as bus:
        snapshot = await bus.snapshot(paper(tmp_path / "paper"))
        for mode in (*HOSTILE, "honest"):
            await bus.dispatch(job(campaign, snapshot, mode))
        started = time.monotonic()
        async with runner(bounded, "runner-bounded", runner_slots=1):
            results = await bus.wait_for_results(campaign, len(HOSTILE) + 1, timeout=len(HOSTILE) * (LIMIT_SECONDS + GRACE_SECONDS) + 30)
        took = time.monotonic() - started
    assert_one_result_each(results, {f"job-{mode}" for mode in (*HOSTILE, "honest")})
    by_mode = {r["experiment_id"].removeprefix("job-"): r for r in results}
    for mode in HOSTILE:
        failure = by_mode[mode]
        assert failure["event_type"] == "JobFailed" and failure["stage"] == "train", (mode, failure)
        assert failure["duration_seconds"] <= LIMIT_SECONDS + GRACE_SECONDS, (mode, failure["duration_seconds"])
        assert len(failure["output_tail"]) <= 64 * 1024, (mode, len(failure["output_tail"]))
    for mode in ("one-long-line", "deaf"):
        assert by_mode[mode]["reason"].startswith(f"time limit exceeded: killed after {LIMIT_SECONDS:g} s"), by_mode[mode]["reason"]
    assert "x" * 100 in by_mode["one-long-line"]["output_tail"]
    if CGROUPS:  # the limits hold for the job's whole tree, and the reason names the setting
        assert "out of memory" in by_mode["memory-hog"]["reason"] and "AUTOSOTA_RUNNER_MEMORY_BYTES" in by_mode["memory-hog"]["reason"]
        assert "too many processes" in by_mode["fork-bomb"]["reason"] and "AUTOSOTA_RUNNER_JOB_PROCESSES" in by_mode["fork-bomb"]["reason"]
    else:  # per-process limits: each hog process fits, so the job ends at its time limit or by refused forks
        assert by_mode["memory-hog"]["reason"] and by_mode["fork-bomb"]["reason"]
    honest = by_mode["honest"]
    assert honest["event_type"] == "JobCompleted" and honest["runner"] == "runner-bounded" and honest["metrics"] == {"score": 1.0}, honest
    assert took <= len(HOSTILE) * (LIMIT_SECONDS + GRACE_SECONDS) + 20, f"five jobs took {took:.0f} s"

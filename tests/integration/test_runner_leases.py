"""Runners against a real NATS server: capacity, one result per job, dead letters, pools.

The jobs are a tiny paper whose training sleeps a little and whose evaluation prints the
seed back as its metric, so that every result can be checked against its job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.js.api import ConsumerConfig

from services.runner.app import create_app
from services.runner.domain import Claim, result_key, stamp_result
from services.runner.handlers import dead_letter_stream
from services.runner.results import JobResults, results_bucket
from shared.bus import Artifacts, ensure_topology
from shared.contracts import JobCompleted, WorkItem
from shared.settings import Settings
from shared.workspace import pack

pytestmark = pytest.mark.nats

TRAIN = """import json, os, sys, time
config = json.load(open(os.environ["AUTOSOTA_PARAMS"]))
seconds = float(config["params"].get("seconds", 0.2))
print("training for", seconds, "s", flush=True)
time.sleep(seconds)
os.makedirs("outputs", exist_ok=True)
open("outputs/seed.txt", "w").write(str(config["seed"]))
"""
EVALUATE = """import json, os
print("devices:", repr(os.environ.get("CUDA_VISIBLE_DEVICES")))
print(json.dumps({"score": float(open("outputs/seed.txt").read())}))
"""


def sleepy_paper(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.py").write_text(TRAIN)
    (folder / "evaluate.py").write_text(EVALUATE)
    return folder


def work_item(campaign: str, snapshot: str, seed: int, seconds: float = 0.2, pool: str = "cpu", gpus: int = 0, timeout: float = 60.0) -> WorkItem:
    return WorkItem(
        campaign=campaign,
        experiment_id=f"job-s{seed}",
        purpose="baseline",
        dispatcher="test",
        snapshot_sha256=snapshot,
        params={"seconds": seconds},
        seed=seed,
        train_command="python train.py",
        evaluate_command="python evaluate.py",
        environment_bin=str(Path(sys.executable).parent),
        protected_paths=["evaluate.py"],
        timeout_seconds=timeout,
        pool=pool,
        gpus=gpus,
    )


class Bus:
    """The test's own connection: publishes snapshots and work, reads what runners recorded."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.subjects = settings.subjects

    async def __aenter__(self) -> Bus:
        self.nc = await nats.connect(self.settings.nats_url)
        self.js = self.nc.jetstream()
        await ensure_topology(self.js, self.subjects)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.nc.close()

    async def snapshot(self, folder: Path) -> str:
        return await Artifacts(self.js, self.subjects.artifacts_bucket).put(pack(folder).data)

    async def dispatch(self, item: WorkItem) -> None:
        await self.js.publish(self.subjects.work(item.pool), item.model_dump_json().encode())

    async def events(self, campaign: str) -> list[dict[str, Any]]:
        subject = self.subjects.events_of_campaign(campaign)
        info = await self.js.stream_info(self.subjects.events_stream, subjects_filter=subject)
        total = sum((info.state.subjects or {}).values())
        if total == 0:
            return []
        subscription = await self.js.subscribe(subject, ordered_consumer=True)
        try:
            return [json.loads((await subscription.next_msg(timeout=5)).data) for _ in range(total)]
        finally:
            await subscription.unsubscribe()

    async def results(self, campaign: str) -> list[dict[str, Any]]:
        return [e for e in await self.events(campaign) if e["event_type"] in ("JobCompleted", "JobFailed")]

    async def wait_for_results(self, campaign: str, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = await self.results(campaign)
            if len(found) >= count or asyncio.get_running_loop().time() > deadline:
                return found
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def runner(settings: Settings, name: str, **overrides: Any) -> AsyncIterator[Any]:
    """One runner service in this process, until the block ends."""
    configured = settings.model_copy(update={"runner_name": name, **overrides})
    app = create_app(configured)
    task = asyncio.create_task(app.run())
    runtime = app.runtime  # type: ignore[attr-defined]
    for _ in range(300):
        if runtime.ready:
            break
        await asyncio.sleep(0.05)
    assert runtime.ready, f"{name} did not become ready"
    try:
        yield app
    finally:
        app.exit()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=30)


@pytest.fixture
def fast_leases(settings: Settings) -> Settings:
    return settings.model_copy(update={"work_ack_wait_seconds": 1.5, "work_max_deliveries": 3})


async def delete_runner_streams(settings: Settings) -> None:
    """The results bucket and dead-letter stream runners create beside the namespace's streams."""
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    with contextlib.suppress(Exception):
        await js.delete_key_value(results_bucket(settings.subjects))
    with contextlib.suppress(Exception):
        await js.delete_stream(f"{settings.subjects.work_stream}_DEAD")
    await client.close()


@pytest.fixture(autouse=True)
def drop_runner_streams(settings: Settings) -> Iterator[None]:
    yield
    asyncio.run(delete_runner_streams(settings))


def assert_one_result_each(results: list[dict[str, Any]], expected: set[str]) -> None:
    counts = Counter(r["experiment_id"] for r in results)
    assert set(counts) == expected, f"results for {sorted(counts)}, expected {sorted(expected)}"
    assert [e for e, n in counts.items() if n > 1] == [], f"more than one result: {counts}"


async def test_a_runner_never_holds_more_jobs_than_its_slots(fast_leases: Settings, tmp_path: Path) -> None:
    campaign = f"slots-{uuid.uuid4().hex[:6]}"
    async with Bus(fast_leases) as bus:
        snapshot = await bus.snapshot(sleepy_paper(tmp_path / "paper"))
        # Step 1: six one-second jobs for a runner with two slots.
        for seed in range(6):
            await bus.dispatch(work_item(campaign, snapshot, seed, seconds=1.0))
        async with runner(fast_leases, "runner-slots", runner_slots=2):
            # Step 2: while they run, the consumer never has more than two jobs out.
            held: list[int] = []
            while len(await bus.results(campaign)) < 6:
                info = await bus.js.consumer_info(fast_leases.subjects.work_stream, "runner-cpu")
                held.append(info.num_ack_pending)
                await asyncio.sleep(0.1)
        results = await bus.results(campaign)
    assert max(held) == 2, f"held at once: {sorted(set(held))}"
    assert_one_result_each(results, {f"job-s{seed}" for seed in range(6)})
    assert {r["metrics"]["score"] for r in results} == {float(seed) for seed in range(6)}


async def test_a_result_is_recorded_once_whoever_finishes_the_job(fast_leases: Settings) -> None:
    campaign = f"once-{uuid.uuid4().hex[:6]}"
    async with Bus(fast_leases) as bus:
        first = JobResults(bus.js, fast_leases.subjects, "runner-a")
        second = JobResults(bus.js, fast_leases.subjects, "runner-b")
        await first.open()
        await second.open()
        outcome = JobCompleted(campaign=campaign, experiment_id="job-s1", purpose="baseline", runner="runner-a", metrics={"score": 1.0}, evaluate_command="python evaluate.py", protected_hashes={}, duration_seconds=1.0, output_tail="")
        # Step 1: runner A finishes the job; then a redelivery lets runner B finish it too.
        recorded_a, kept_a = await first.record(outcome, datetime.now(UTC))
        recorded_b, kept_b = await second.record(outcome.model_copy(update={"runner": "runner-b", "metrics": {"score": 9.0}}), datetime.now(UTC))
        assert (recorded_a, recorded_b) == (True, False)
        assert kept_b == kept_a and kept_b.metrics == {"score": 1.0}
        # Step 2: runner C claimed another job's result and died before publishing it.
        orphan = stamp_result(outcome.model_copy(update={"experiment_id": "job-s2", "runner": "runner-c"}), "runner-c", datetime.now(UTC))
        await first.kv.create(result_key(campaign, "job-s2"), Claim("runner-c", "claimed", orphan).encode())
        # Step 3: whoever meets the orphaned claim publishes it, once, however often it is met.
        for results in (first, second, first):
            claim = await results.existing(campaign, "job-s2")
            assert claim is not None and claim.runner == "runner-c"
        await first.kv.put(result_key(campaign, "job-s2"), Claim("runner-c", "claimed", orphan).encode())
        await second.existing(campaign, "job-s2")  # the stream already holds it: nothing new
        found = await bus.results(campaign)
    assert_one_result_each(found, {"job-s1", "job-s2"})
    assert {r["experiment_id"]: r["runner"] for r in found} == {"job-s1": "runner-a", "job-s2": "runner-c"}


async def test_a_job_no_runner_finishes_ends_as_one_dead_letter(fast_leases: Settings, tmp_path: Path) -> None:
    campaign = f"dead-{uuid.uuid4().hex[:6]}"
    async with Bus(fast_leases) as bus, runner(fast_leases, "runner-dl", runner_slots=1) as app:
        snapshot = await bus.snapshot(sleepy_paper(tmp_path / "paper"))
        # Step 1: the live runner is busy with a long job, so a dying one takes the next.
        await bus.dispatch(work_item(campaign, snapshot, 0, seconds=12.0))
        await asyncio.sleep(1.0)
        doomed = work_item(campaign, snapshot, 1)
        await bus.dispatch(doomed)
        # Step 2: a consumer that takes the job and never answers, as a runner dying each time would.
        dying = await bus.js.pull_subscribe(fast_leases.subjects.work("cpu"), durable="runner-cpu", stream=fast_leases.subjects.work_stream, config=ConsumerConfig(ack_wait=1.5, max_deliver=3))
        taken = 0
        for _ in range(12):
            with contextlib.suppress(Exception):
                taken += len(await dying.fetch(1, timeout=1.0))
        # Step 3: after its last delivery the job is recorded as failed, with the reason, once.
        results = await bus.wait_for_results(campaign, 2, timeout=30)
        info = await bus.js.stream_info(fast_leases.subjects.work_stream)
        dead = await bus.js.stream_info(dead_letter_stream(app.runtime))
    assert taken == 3
    assert_one_result_each(results, {"job-s0", "job-s1"})
    failure = next(r for r in results if r["experiment_id"] == "job-s1")
    assert failure["event_type"] == "JobFailed" and failure["stage"] == "dead_letter"
    assert "delivered 3 times" in failure["reason"] and "died or lost its lease" in failure["reason"]
    assert info.state.messages == 0, "the dead job is still on the queue"
    assert dead.state.messages == 0


async def test_a_gpu_job_runs_only_where_a_gpu_is_and_never_on_a_cpu_runner(fast_leases: Settings, tmp_path: Path) -> None:
    campaign = f"pools-{uuid.uuid4().hex[:6]}"
    async with Bus(fast_leases) as bus, runner(fast_leases, "runner-cpu-1"), runner(fast_leases, "runner-gpu-1", pool="gpu", runner_gpus=2, runner_gpu_type="h100"):
        snapshot = await bus.snapshot(sleepy_paper(tmp_path / "paper"))
        # Step 1: a CPU job, a GPU job on the GPU pool, and a GPU job sent to the CPU pool by mistake.
        await bus.dispatch(work_item(campaign, snapshot, 0))
        await bus.dispatch(work_item(campaign, snapshot, 1, pool="gpu", gpus=1))
        await bus.dispatch(work_item(campaign, snapshot, 2, gpus=1))
        results = await bus.wait_for_results(campaign, 3, timeout=30)
    by_job = {r["experiment_id"]: r for r in results}
    assert_one_result_each(results, {"job-s0", "job-s1", "job-s2"})
    # Step 2: each ran where it fits; the misplaced one was refused until it became a dead letter.
    assert by_job["job-s0"]["runner"] == "runner-cpu-1" and "devices: ''" in by_job["job-s0"]["output_tail"]
    assert by_job["job-s1"]["runner"] == "runner-gpu-1" and "devices: '0'" in by_job["job-s1"]["output_tail"]
    assert by_job["job-s2"]["stage"] == "dead_letter" and "needs 1 GPU(s), this runner has 0" in by_job["job-s2"]["reason"]

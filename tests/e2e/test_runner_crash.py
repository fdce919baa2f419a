"""Runners killed with SIGKILL in the middle of jobs, twenty times: every job ends with one result.

Two runner processes of the embedded stack share the pool; the test kills whichever is running
a job at a random moment of it, and the stack brings it back. A killed runner's lease runs out
(ack wait of 2 s here), its job goes to a runner again, and the events stream must end up
holding exactly one result per job, each the right one.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from shared.embedded import Stack
from shared.settings import Settings
from tests.integration.test_runner_leases import Bus, drop_runner_streams, sleepy_paper, work_item  # noqa: F401 - fixture

pytestmark = [pytest.mark.e2e, pytest.mark.nats]

KILLS = 20
ACK_WAIT_SECONDS = 2.0


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def busy_runner(stack: Stack) -> tuple[str, int, list[int]] | None:
    """A runner that has a job's sandbox running right now."""
    candidates = []
    for name in ("runner-1", "runner-2"):
        pid = stack.pid(name)
        if pid is not None and (children := children_of(pid)):
            candidates.append((name, pid, children))
    return random.choice(candidates) if candidates else None


def test_a_killed_runner_is_gone_when_kill_returns_and_comes_back_once(settings: Settings) -> None:
    with Stack(settings.data_dir, namespace=settings.namespace, runners=1, nats_url=settings.nats_url, services=["runner"], max_restarts=5) as stack:
        for kill in range(1, 4):
            killed = stack.pid("runner-1")
            stack.kill("runner-1", revive=True)
            # a dying process still reported alive would be killed twice and restarted once
            assert stack.pid("runner-1") != killed
            stack.wait_ready(["runner-1"], timeout=60)
            assert stack.restarts["runner-1"] == kill


def test_twenty_runner_kills_mid_job_leave_exactly_one_result_per_job(settings: Settings, tmp_path: Path) -> None:
    random.seed(os.getpid())
    campaign = f"crash-{uuid.uuid4().hex[:6]}"
    extra = {"AUTOSOTA_WORK_ACK_WAIT_SECONDS": str(ACK_WAIT_SECONDS), "AUTOSOTA_WORK_MAX_DELIVERIES": "1000"}
    dispatched: dict[str, int] = {}

    async def dispatch(seeds: range) -> None:
        async with Bus(settings) as bus:
            snapshot = await bus.snapshot(sleepy_paper(tmp_path / "paper"))
            for seed in seeds:
                item = work_item(campaign, snapshot, seed, seconds=round(random.uniform(0.8, 2.5), 2))
                dispatched[item.experiment_id] = seed
                await bus.dispatch(item)

    async def results() -> list[dict]:
        async with Bus(settings) as bus:
            return await bus.events(campaign)

    started = time.monotonic()
    orphans: list[int] = []
    with Stack(settings.data_dir, namespace=settings.namespace, runners=2, nats_url=settings.nats_url, services=["runner"], extra_env=extra, max_restarts=KILLS + 5) as stack:
        asyncio.run(dispatch(range(0, 30)))
        kills = 0
        while kills < KILLS:
            # Step 1: wait for a runner to be in the middle of a job, then a random moment more.
            target = busy_runner(stack)
            if target is None:
                if not any(stack.pid(n) is None for n in ("runner-1", "runner-2")) and len([e for e in asyncio.run(results()) if e["event_type"] == "JobCompleted"]) >= len(dispatched):
                    asyncio.run(dispatch(range(len(dispatched), len(dispatched) + 10)))  # keep them busy
                time.sleep(0.05)
                continue
            time.sleep(random.uniform(0.0, 1.2))
            name, pid, sandboxes = target
            if stack.pid(name) != pid:
                continue
            # Step 2: SIGKILL it; the stack revives it.
            stack.kill(name, revive=True)
            kills += 1
            orphans += sandboxes
            assert time.monotonic() - started < 400, f"only {kills} kills so far"
        # Step 3: every job ends; late duplicates would show within a few lease periods.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            outcomes = [e for e in asyncio.run(results()) if e["event_type"] in ("JobCompleted", "JobFailed")]
            if {e["experiment_id"] for e in outcomes} >= set(dispatched):
                break
            time.sleep(0.5)
        time.sleep(3 * ACK_WAIT_SECONDS)
        events = asyncio.run(results())
        restarts = sum(stack.restarts.values())
    took = time.monotonic() - started
    outcomes = [e for e in events if e["event_type"] in ("JobCompleted", "JobFailed")]
    counts = Counter(e["experiment_id"] for e in outcomes)
    # Step 4: one result per job, each a completion with its own seed, none lost, none doubled.
    assert restarts == KILLS
    assert set(counts) == set(dispatched), f"missing: {sorted(set(dispatched) - set(counts))}"
    assert [job for job, n in counts.items() if n != 1] == [], counts
    assert all(e["event_type"] == "JobCompleted" for e in outcomes), [e.get("reason") for e in outcomes if e["event_type"] == "JobFailed"]
    assert {e["experiment_id"]: e["metrics"]["score"] for e in outcomes} == {job: float(seed) for job, seed in dispatched.items()}
    deliveries = Counter(e["experiment_id"] for e in events if e["event_type"] == "JobStarted")
    taken_over = sum(n - 1 for n in deliveries.values())
    assert taken_over >= KILLS * 3 // 4, f"only {taken_over} deliveries after a kill: {deliveries}"
    # Step 5: a killed runner's sandboxed processes died with it.
    assert [pid for pid in orphans if alive(pid)] == []
    print(f"\n{KILLS} kills, {len(dispatched)} jobs, {taken_over} jobs taken over after a kill, {took:.0f} s")

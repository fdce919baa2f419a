"""Every job ends: the local sandbox bounds output, time, memory and processes whatever the job does.

Real processes, confined and unconfined. Where this machine offers cgroups, the memory and process
limits hold for the whole job; where it does not, the tests assert that the outcome reports the
per-process fallback instead of skipping.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.sandbox import MEMORY_SETTING, Isolation, Limits, LocalSandbox, Outcome, confinement_available
from shared.sandboxes.cgroups import JOB_PREFIX, PARENT, job_cgroups

BIN = str(Path(sys.executable).parent)
GRACE_SECONDS = 6.0  # what `run` may take beyond a time limit: killing, reaping, reading the rest
CGROUPS = job_cgroups()[0] is not None
MIB = 1024**2

MEMORY_HOG = """
import os, time
for _ in range(3):
    if os.fork() == 0:
        hog = b"x" * (600 * 2**20)  # written, so resident: 1.8 GiB for the job, 600 MiB per process
        time.sleep(3)
        os._exit(0)
for _ in range(3):
    os.wait()
"""
FORK_BOMB = """
import os, time
for _ in range(200):  # bounded, so that a sandbox without a process limit still survives the test
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)
for _ in range(200):
    os.wait()
"""
DEAF_TO_SIGTERM = """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.fork()  # parent and child both ignore SIGTERM
time.sleep(60)
"""

confined_or_not = pytest.mark.parametrize("confine", [False, True], ids=["unconfined", "confined"])


@pytest.fixture(autouse=True)
def no_job_cgroup_is_left() -> Iterator[None]:
    yield
    hierarchy = job_cgroups()[0]
    if hierarchy is not None:
        ours = [path for parent in hierarchy.parents.values() for path in parent.glob(f"{JOB_PREFIX}{os.getpid()}-*")]
        assert not ours, f"job cgroups left under {PARENT}: {ours}"


async def run_job(tmp_path: Path, script: str, limits: Limits, confine: bool, cgroups: bool = True) -> tuple[Outcome, float, Path]:
    job = tmp_path / f"job-{time.monotonic_ns()}.py"
    job.write_text(script)
    started = time.monotonic()
    outcome = await LocalSandbox(confine=confine, cgroups=cgroups).run(f"python {job.name}", tmp_path, BIN, {}, limits, Isolation())
    return outcome, time.monotonic() - started, job


def processes_running(script: Path, wait_seconds: float = 5.0) -> list[int]:
    """The live processes started from this script, after giving the kernel a moment to reap them."""
    deadline = time.monotonic() + wait_seconds
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if str(script.name).encode() in (entry / "cmdline").read_bytes():
                        found.append(int(entry.name))
                except OSError:
                    continue
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


@confined_or_not
async def test_one_line_of_200_mb_returns_with_a_bounded_tail(tmp_path: Path, confine: bool) -> None:
    # Step 1: a job writes 200 MB without a single newline.
    outcome, seconds, _ = await run_job(tmp_path, "import sys\nsys.stdout.write('x' * 200_000_000)\n", Limits(wall_seconds=20), confine)
    # Step 2: it finished on its own; the record keeps a short piece of the line and counts the rest.
    assert outcome.ok, outcome.output_tail[-500:]
    assert seconds < 20 + GRACE_SECONDS
    assert outcome.output_truncated and len(outcome.output_tail) < 10_000
    assert "more bytes of this line not kept" in outcome.output_tail
    assert "(200000000 in all)" in outcome.output_tail


@confined_or_not
async def test_endless_output_on_one_line_ends_at_the_time_limit(tmp_path: Path, confine: bool) -> None:
    started = time.monotonic()
    outcome = await LocalSandbox(confine=confine).run("yes | tr -d '\\n'", tmp_path, BIN, {}, Limits(wall_seconds=3), Isolation())
    assert outcome.killed_for == "time" and outcome.timed_out and not outcome.ok
    assert time.monotonic() - started < 3 + GRACE_SECONDS
    assert outcome.output_tail.endswith("[killed after the 3 s time limit]")
    assert len(outcome.output_tail) < 10_000


@pytest.mark.parametrize(("confine", "cgroups"), [(False, True), (True, True), (False, False)], ids=["unconfined", "confined", "per-process-rlimits"])
async def test_a_forking_memory_hog_is_killed_for_memory_as_one_job(tmp_path: Path, confine: bool, cgroups: bool) -> None:
    # Step 1: three children of 600 MiB each, under a 1 GiB limit for the job.
    outcome, seconds, script = await run_job(tmp_path, MEMORY_HOG, Limits(wall_seconds=30, memory_bytes=1024 * MIB), confine, cgroups)
    if cgroups and CGROUPS:
        # Step 2: the job as a whole is over its limit: it is killed, and the record says why and what sets the limit.
        assert outcome.limits_applied.startswith("cgroup v") and "memory 1 GiB" in outcome.limits_applied
        assert outcome.killed_for == "memory" and not outcome.ok, outcome.output_tail
        last = outcome.output_tail.splitlines()[-1]
        assert "memory limit of 1 GiB" in last and "out of memory" in last and MEMORY_SETTING in last
        assert seconds < 20
    else:
        # Step 2: each process fits its own limit, so the job passes; the outcome says only per-process limits applied.
        assert outcome.limits_applied.startswith("per-process rlimits") and "address space 1 GiB per process" in outcome.limits_applied
        assert outcome.ok and outcome.killed_for is None, outcome.output_tail
    assert not processes_running(script)


@pytest.mark.parametrize("cgroups", [True, False], ids=["job-limits", "per-process-rlimits"])
@pytest.mark.parametrize("allocation", ["hog = b'x' * (30 * 2**30)", "import numpy\nhog = numpy.ones(30 * 2**27)"], ids=["python", "numpy"])
async def test_a_30_gib_allocation_says_the_memory_limit_refused_it(tmp_path: Path, cgroups: bool, allocation: str) -> None:
    outcome, _, _ = await run_job(tmp_path, allocation + "\n", Limits(wall_seconds=20, memory_bytes=1024 * MIB), False, cgroups)
    assert outcome.killed_for == "memory" and not outcome.ok
    last = outcome.output_tail.splitlines()[-1]
    assert "out of memory" in last and "1 GiB" in last and MEMORY_SETTING in last
    if not (cgroups and CGROUPS):
        assert "per-process limit of 1 GiB of address space refused an allocation" in last


@pytest.mark.parametrize(("confine", "cgroups"), [(False, True), (True, True), (False, False), (True, False)], ids=["unconfined", "confined", "unconfined-rlimits", "confined-rlimits"])
async def test_a_fork_bomb_ends_in_a_recorded_failure(tmp_path: Path, confine: bool, cgroups: bool) -> None:
    outcome, seconds, script = await run_job(tmp_path, FORK_BOMB, Limits(wall_seconds=5, processes=64), confine, cgroups)
    assert not outcome.ok and seconds < 5 + GRACE_SECONDS
    if cgroups and CGROUPS:
        assert "64 processes" in outcome.limits_applied
        assert outcome.killed_for == "processes", outcome.output_tail
        assert outcome.output_tail.endswith("[killed after the job reached its limit of 64 processes (threads count too)]")
    else:
        assert outcome.limits_applied.startswith("per-process rlimits")
        if os.geteuid() == 0:
            # Root is exempt from RLIMIT_NPROC: the time limit ends it.
            assert "no process limit" in outcome.limits_applied and outcome.killed_for == "time"
        else:
            # RLIMIT_NPROC refuses the forks: the job fails on its own, and the record says which limit refused them.
            assert "64 more processes of this user" in outcome.limits_applied and outcome.killed_for == "processes"
    assert not processes_running(script)


@confined_or_not
async def test_a_job_that_ignores_sigterm_is_killed_at_its_limit(tmp_path: Path, confine: bool) -> None:
    outcome, seconds, script = await run_job(tmp_path, DEAF_TO_SIGTERM, Limits(wall_seconds=2), confine)
    assert outcome.killed_for == "time" and outcome.exit_code is None
    assert 2 <= seconds < 2 + GRACE_SECONDS
    assert not processes_running(script)


async def test_a_process_that_leaves_the_process_group_still_ends_with_the_job(tmp_path: Path) -> None:
    # Step 1: the job starts a process in a session of its own (out of reach of the process-group kill), then exits.
    marker = tmp_path / "escapee.py"
    marker.write_text("import time\ntime.sleep(60)\n")
    started = time.monotonic()
    outcome = await LocalSandbox(confine=False).run(f"setsid python {marker.name} & sleep 0.5; echo started", tmp_path, BIN, {}, Limits(wall_seconds=20), Isolation())
    seconds = time.monotonic() - started
    assert outcome.ok and "started" in outcome.output_tail
    if CGROUPS:
        # Step 2: it was in the job's cgroup, so it died with the job, and nothing held the output open.
        assert outcome.limits_applied.startswith("cgroup v")
        assert not processes_running(marker) and seconds < 5
    else:
        # Step 2: without a cgroup it escapes; the sandbox still returns, after waiting a grace period for the output.
        assert outcome.limits_applied.startswith("per-process rlimits")
        assert seconds < 20
        for pid in processes_running(marker, wait_seconds=0):
            os.kill(pid, 9)


@pytest.mark.skipif(not confinement_available()[0], reason=f"no confinement here: {confinement_available()[1]}")
async def test_a_confined_job_cannot_move_itself_out_of_its_cgroup(tmp_path: Path) -> None:
    hierarchy = job_cgroups()[0]
    if hierarchy is None:
        outcome = await LocalSandbox(confine=True).run("true", tmp_path, BIN, {}, Limits(), Isolation())
        assert outcome.limits_applied.startswith("per-process rlimits")
        return
    # Step 1: the job, root inside its namespaces, writes itself into the root group of every hierarchy.
    roots = sorted({str(parent.parent) for parent in hierarchy.parents.values()})
    escape = "; ".join(f"echo 0 > {root}/cgroup.procs" for root in roots)
    outcome = await LocalSandbox(confine=True).run(f"{escape}; cat /proc/self/cgroup", tmp_path, BIN, {}, Limits(), Isolation())
    # Step 2: every write was refused, and it is still in its job's group.
    assert outcome.ok and outcome.output_tail.count("Read-only file system") == len(roots), outcome.output_tail
    controllers = {"memory", "pids"} if hierarchy.version == 1 else {""}
    lines = (line.split(":", 2) for line in outcome.output_tail.splitlines())
    memberships = {fields[1]: fields[2] for fields in lines if len(fields) == 3 and fields[1] in controllers}
    assert set(memberships) == controllers and all(f"/{PARENT}/{JOB_PREFIX}" in path for path in memberships.values()), memberships

"""A control group per job: one memory, process and CPU budget for a job and everything it starts.

cgroup v2 where its memory and pids controllers can be delegated, else the v1 hierarchies of the
same controllers; `job_cgroups()` says which this machine offers, or why neither. Job groups live
under one parent group, `autosota-sandbox`, that holds no process itself. A job's group is created
before the job starts and entered by its first process before exec (so nothing it starts is
outside it), read for limit events while it runs, and killed and removed when it ends.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PARENT = "autosota-sandbox"
JOB_PREFIX = "job-"
CPU_PERIOD_MICROSECONDS = 100_000
REMOVE_SECONDS = 3.0
_job_numbers = itertools.count(1)


@dataclass(frozen=True)
class Hierarchy:
    """Where job groups are made: one parent directory per controller (the same one on v2)."""

    version: int
    parents: dict[str, Path]  # "memory", "pids", and "cpu" where it is available

    @property
    def has_cpu(self) -> bool:
        return "cpu" in self.parents


@dataclass(frozen=True)
class LimitEvents:
    oom_kills: int = 0  # processes the kernel killed because the group reached its memory limit
    process_refusals: int = 0  # forks refused because the group reached its process limit


class JobCgroup:
    """One job's group; `enter` runs in the job's first process, the rest in the runner."""

    def __init__(self, hierarchy: Hierarchy, name: str) -> None:
        self.hierarchy = hierarchy
        self.name = name
        self.paths = {controller: parent / name for controller, parent in hierarchy.parents.items()}
        self._directories = list(dict.fromkeys(self.paths.values()))

    @classmethod
    def create(cls, hierarchy: Hierarchy, memory_bytes: int | None, processes: int | None, cpus: float | None) -> JobCgroup:
        job = cls(hierarchy, f"{JOB_PREFIX}{os.getpid()}-{next(_job_numbers)}-{secrets.token_hex(3)}")
        try:
            for directory in job._directories:
                directory.mkdir()
            job._set_limits(memory_bytes, processes, cpus)
        except OSError:
            job.remove()
            raise
        return job

    def _set_limits(self, memory_bytes: int | None, processes: int | None, cpus: float | None) -> None:
        memory, pids = self.paths["memory"], self.paths["pids"]
        if self.hierarchy.version == 2:
            if memory_bytes:
                _write(memory / "memory.max", memory_bytes)
                _write_if_present(memory / "memory.swap.max", 0)  # absent without swap accounting
            _write_if_present(memory / "memory.oom.group", 1)  # an out-of-memory kill takes the whole job
            if processes:
                _write(pids / "pids.max", processes)
            if cpus and self.hierarchy.has_cpu:
                _write(self.paths["cpu"] / "cpu.max", f"{max(1000, int(cpus * CPU_PERIOD_MICROSECONDS))} {CPU_PERIOD_MICROSECONDS}")
            return
        if memory_bytes:
            _write(memory / "memory.limit_in_bytes", memory_bytes)
            _write_if_present(memory / "memory.memsw.limit_in_bytes", memory_bytes)  # memory plus swap: no swap beyond it
        if processes:
            _write(pids / "pids.max", processes)
        if cpus and self.hierarchy.has_cpu:
            _write(self.paths["cpu"] / "cpu.cfs_period_us", CPU_PERIOD_MICROSECONDS)
            _write(self.paths["cpu"] / "cpu.cfs_quota_us", max(1000, int(cpus * CPU_PERIOD_MICROSECONDS)))

    def enter(self) -> None:
        """Move the calling process into the group; called in the child between fork and exec."""
        pid = str(os.getpid())
        for directory in self._directories:
            with open(directory / "cgroup.procs", "w") as handle:
                handle.write(pid)

    def events(self) -> LimitEvents:
        if self.hierarchy.version == 2:
            memory = _counters(self.paths["memory"] / "memory.events")
        else:
            memory = _counters(self.paths["memory"] / "memory.oom_control")
        pids = _counters(self.paths["pids"] / "pids.events")
        return LimitEvents(oom_kills=memory.get("oom_kill", 0), process_refusals=pids.get("max", 0))

    def kill(self) -> None:
        """SIGKILL every process in the group, including any started while this runs."""
        if self.hierarchy.version == 2 and (self.paths["pids"] / "cgroup.kill").exists():
            with contextlib.suppress(OSError):
                _write(self.paths["pids"] / "cgroup.kill", 1)
            return
        deadline = time.monotonic() + REMOVE_SECONDS
        while time.monotonic() < deadline:
            members = self._members()
            if not members:
                return
            for pid in members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        """Kill what is left and remove the group; the kernel frees it once its processes are gone."""
        self.kill()
        deadline = time.monotonic() + REMOVE_SECONDS
        for directory in self._directories:
            while directory.exists():
                try:
                    directory.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        break  # left for the next sweep of stale groups
                    self.kill()
                    time.sleep(0.01)

    def _members(self) -> set[int]:
        members: set[int] = set()
        for directory in self._directories:
            with contextlib.suppress(OSError):
                members.update(int(line) for line in (directory / "cgroup.procs").read_text().split())
        return members


def describe(hierarchy: Hierarchy, memory_bytes: int | None, processes: int | None, cpus: float | None) -> str:
    """What a job's group limits, in words: "cgroup v2: memory 4 GiB, 512 processes"."""
    parts = [f"memory {human_bytes(memory_bytes)}" if memory_bytes else "memory unlimited"]
    parts.append(f"{processes} processes" if processes else "processes unlimited")
    if cpus and hierarchy.has_cpu:
        parts.append(f"{cpus:g} CPUs")
    return f"cgroup v{hierarchy.version}: " + ", ".join(parts)


def human_bytes(count: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} bytes"


@functools.cache
def job_cgroups() -> tuple[Hierarchy | None, str]:
    """The hierarchy job groups are made in, or None and why not (probed once per process)."""
    if not Path("/proc/self/mounts").exists():
        return None, "no cgroups on this platform"
    mounts = _cgroup_mounts()
    reasons = []
    for probe in (_v2_hierarchy, _v1_hierarchy):
        try:
            hierarchy = probe(mounts)
            _sweep_stale(hierarchy)
            JobCgroup.create(hierarchy, 64 * 1024**2, 8, 0.5 if hierarchy.has_cpu else None).remove()
            return hierarchy, f"cgroup v{hierarchy.version}"
        except (OSError, LookupError) as error:
            reasons.append(str(error))
    return None, "; ".join(reasons)


def _cgroup_mounts() -> list[tuple[str, set[str]]]:
    """(mount point, its controllers) of each cgroup file system; "cgroup2" stands for the v2 one."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "cgroup2":
            found.append((fields[1], {"cgroup2"}))
        elif len(fields) >= 4 and fields[2] == "cgroup":
            found.append((fields[1], set(fields[3].split(","))))
    return found


def _v2_hierarchy(mounts: list[tuple[str, set[str]]]) -> Hierarchy:
    root = next((Path(point) for point, options in mounts if "cgroup2" in options), None)
    if root is None:
        raise LookupError("cgroup v2 is not mounted")
    available = set((root / "cgroup.controllers").read_text().split())
    missing = {"memory", "pids"} - available
    if missing:
        raise LookupError(f"cgroup v2 at {root} lacks the {' and '.join(sorted(missing))} controllers")
    wanted = ["memory", "pids"] + (["cpu"] if "cpu" in available else [])
    parent = root / PARENT
    parent.mkdir(exist_ok=True)
    # Controllers reach a group only through its parent's subtree_control; the parent stays free of processes.
    for group in (root, parent):
        enabled = set((group / "cgroup.subtree_control").read_text().split())
        for controller in wanted:
            if controller not in enabled:
                try:
                    _write(group / "cgroup.subtree_control", f"+{controller}")
                except OSError as error:
                    if controller != "cpu":
                        raise OSError(error.errno, f"cgroup v2: cannot enable {controller} in {group}: {error.strerror}") from error
                    wanted.remove("cpu")
    return Hierarchy(2, {controller: parent for controller in wanted})


def _v1_hierarchy(mounts: list[tuple[str, set[str]]]) -> Hierarchy:
    parents: dict[str, Path] = {}
    for controller in ("memory", "pids", "cpu"):
        point = next((Path(point) for point, options in mounts if controller in options), None)
        if point is not None:
            parents[controller] = point / PARENT
    missing = {"memory", "pids"} - set(parents)
    if missing:
        raise LookupError(f"no cgroup v1 hierarchy for {' and '.join(sorted(missing))}")
    for parent in set(parents.values()):
        parent.mkdir(exist_ok=True)
    return Hierarchy(1, parents)


def _sweep_stale(hierarchy: Hierarchy) -> None:
    """Remove empty job groups whose runner died before it could remove them.

    A group that still holds processes is left alone: its owner may live in another PID namespace.
    """
    for parent in set(hierarchy.parents.values()):
        for directory in parent.glob(f"{JOB_PREFIX}*"):
            owner = directory.name.removeprefix(JOB_PREFIX).split("-")[0]
            if owner.isdigit() and not _alive(int(owner)):
                with contextlib.suppress(OSError):
                    directory.rmdir()  # refused while the group holds processes


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _counters(path: Path) -> dict[str, int]:
    counters: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if value.strip().isdigit():
                counters[name] = int(value)
    return counters


def _write(path: Path, value: object) -> None:
    with open(path, "w") as handle:
        handle.write(str(value))


def _write_if_present(path: Path, value: object) -> None:
    if path.exists():
        _write(path, value)

"""Sandboxes that run a command in a workspace: the local backend, the backend interface, the choice.

Local backend: a subprocess in its own process group, with wall-clock, memory, process and output
limits that hold for the whole job: where the machine offers cgroups, the job and everything it
starts share one control group (`shared/sandboxes/cgroups.py`), else each process gets rlimits.
Whatever the command does, `run` returns within its time limit plus a few seconds, and the
outcome says which limits applied and which one ended the job. Where the platform allows it
(root, or unprivileged user namespaces), the command is also confined by
`shared/sandboxes/confine.py`: no network, the workspace the only writable place, protected
paths read-only, and every process it starts dies with it and with the runner. The docker
backend lives in `shared/sandboxes/docker.py`; both satisfy `Sandbox`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from shared.sandboxes.cgroups import JobCgroup, describe, human_bytes, job_cgroups

LineSink = Callable[[str], Awaitable[None]]
KilledFor = Literal["time", "memory", "processes"]
CONFINE_SCRIPT = Path(__file__).resolve().parent / "sandboxes" / "confine.py"
NUMERIC_THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
MEMORY_SETTING = "AUTOSOTA_RUNNER_MEMORY_BYTES"  # where runners and init take a job's memory limit from
READ_BYTES = 64 * 1024
LINE_BYTES_KEPT = 2000
LIMIT_CHECK_SECONDS = 0.2
KILL_GRACE_SECONDS = 2.0
DRAIN_GRACE_SECONDS = 3.0
# Python's, numpy's, C's and C++'s words for an allocation that was refused; a CUDA OutOfMemoryError is not this.
_REFUSED_ALLOCATION = re.compile(r"(?<![A-Za-z])(?:_Array)?MemoryError\b|Unable to allocate \d|Cannot allocate memory|std::bad_alloc")
# Python's and the shells' words for a fork that RLIMIT_NPROC refused.
_REFUSED_FORK = re.compile(r"(?<![A-Za-z])BlockingIOError\b|Cannot fork|fork: (?:retry: )?Resource temporarily unavailable")


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 120.0
    memory_bytes: int | None = 4 * 1024**3
    output_bytes: int = 4 * 1024**2
    tail_lines: int = 60
    cpus: float | None = None
    gpu_devices: tuple[str, ...] = ()  # the accelerators the command may see; none means none
    processes: int | None = 512  # processes and threads of the whole job at once


@dataclass(frozen=True)
class Isolation:
    """What the command may touch besides its workspace."""

    network: bool = False
    read_only: tuple[str, ...] = ()  # paths inside the workspace that stay read-only (protected files)


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None
    timed_out: bool
    output_tail: str
    output_truncated: bool
    duration_seconds: float
    confinement: str = "none"
    limits_applied: str = "none"  # e.g. "cgroup v2: memory 4 GiB, 512 processes", or the per-process fallback
    killed_for: KilledFor | None = None  # the limit that ended the command, if one did

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.killed_for is None


class Sandbox(Protocol):
    """A place to run one command of an experiment."""

    name: str

    def workspace_view(self, workspace: Path) -> Path:
        """The workspace's path as the command sees it."""
        ...

    async def run(self, command: str, workspace: Path, environment_bin: str, env: dict[str, str], limits: Limits, isolation: Isolation, on_line: LineSink | None = None) -> Outcome: ...


def sandbox_env(environment_bin: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment's interpreter first on PATH, one thread per numeric library."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AUTOSOTA_", "NATS_"))}
    env["PATH"] = environment_bin + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    env.update({"PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1", **NUMERIC_THREADS})
    env.update(extra or {})
    return env


@functools.cache
def confinement_available() -> tuple[bool, str]:
    """Whether the local backend can confine commands here (probed once per process)."""
    if sys.platform != "linux":
        return False, f"no namespaces on {sys.platform}"
    try:
        with tempfile.TemporaryDirectory(prefix="autosota-probe-") as scratch:
            # The whole confinement, tried on a harmless command: namespaces alone may be allowed where mounts are not.
            probe = subprocess.run([sys.executable, "-I", str(CONFINE_SCRIPT), "--workspace", scratch, "--read-only", ".", "--", "/bin/true"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, str(error)
    if probe.returncode != 0:
        return False, probe.stderr.strip() or f"the confinement helper exited with {probe.returncode}"
    return True, "mount, network and PID namespaces"


class LocalSandbox:
    """Runs commands on this machine, confined where the platform allows it, each job in its own cgroup where there are cgroups."""

    name = "local"

    def __init__(self, confine: bool = True, cgroups: bool = True) -> None:
        self.confine = confine
        self.cgroups = cgroups

    def workspace_view(self, workspace: Path) -> Path:
        return workspace

    async def run(self, command: str, workspace: Path, environment_bin: str, env: dict[str, str], limits: Limits, isolation: Isolation, on_line: LineSink | None = None) -> Outcome:
        full_env = sandbox_env(environment_bin, {"CUDA_VISIBLE_DEVICES": ",".join(limits.gpu_devices), **env})
        return await run(command, workspace, full_env, limits, on_line, isolation if self.confine else None, cgroups=self.cgroups)


async def run(command: str, cwd: Path, env: dict[str, str], limits: Limits, on_line: LineSink | None = None, isolation: Isolation | None = None, cgroups: bool = True) -> Outcome:
    """Run a shell command within its limits; return within its time limit plus a few seconds.

    With an isolation, the command is confined when the platform allows it. With cgroups (and a
    machine that offers them) the memory and process limits hold for the whole job, else for each
    process. The outcome says how it was confined, which limits applied and which one ended it.
    """
    started = time.monotonic()
    argv, confinement = _command_line(command, cwd, isolation)
    job = JobLimits.prepare(limits, cgroups)
    record = OutputRecord(limits.output_bytes, limits.tail_lines)
    stopped_for: KilledFor | None = None
    process = None
    try:
        read_end, write_end = os.pipe()
        output = os.fdopen(read_end, "rb", buffering=0)
        try:
            # The output pipe stays ours, not asyncio's: its wait() then ends when the process does, whoever holds the pipe.
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=write_end,
                stderr=write_end,
                start_new_session=True,
                preexec_fn=job.enter,
            )
        except BaseException:
            output.close()
            raise
        finally:
            os.close(write_end)
        reading = asyncio.create_task(_read(output, record, on_line))
        try:
            stopped_for = await _watch(process, job, limits.wall_seconds - (time.monotonic() - started))
        finally:
            await _end(process, job, reading)
            output.close()
            record.end()
    finally:
        job.release()
    exit_code = None if stopped_for == "time" or process is None else process.returncode
    killed_for = stopped_for or job.failed_for(exit_code, record.tail)
    tail = list(record.tail)
    if record.truncated:
        tail.append(f"[output truncated after {limits.output_bytes} bytes ({record.seen} in all); the last lines are kept above]")
    if killed_for is not None:
        tail.append(job.note(killed_for))
    return Outcome(
        exit_code=exit_code,
        timed_out=killed_for == "time",
        output_tail="\n".join(tail),
        output_truncated=record.truncated,
        duration_seconds=time.monotonic() - started,
        confinement=confinement,
        limits_applied=job.applied,
        killed_for=killed_for,
    )


def _command_line(command: str, cwd: Path, isolation: Isolation | None) -> tuple[list[str], str]:
    argv = ["/bin/sh", "-c", command]
    if isolation is None or not confinement_available()[0]:
        return argv, "process group"
    flags = [] if not isolation.network else ["--network"]
    for relative in isolation.read_only:
        flags += ["--read-only", relative]
    argv = [sys.executable, "-I", str(CONFINE_SCRIPT), "--workspace", str(Path(cwd).resolve()), *flags, "--", *argv]
    return argv, "namespaces: " + ("network kept" if isolation.network else "no network") + ", read-only root"


async def _watch(process: asyncio.subprocess.Process, job: JobLimits, seconds_left: float) -> KilledFor | None:
    """Wait for the command to exit; the limit it breached first if it must be stopped, else None."""
    deadline = time.monotonic() + seconds_left
    exited = asyncio.ensure_future(process.wait())
    try:
        while not exited.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "time"
            await asyncio.wait({exited}, timeout=min(remaining, LIMIT_CHECK_SECONDS) if job.cgroup else remaining)
            breached = job.breach()
            if breached is not None and not exited.done():
                return breached
        return None
    finally:
        exited.cancel()


async def _end(process: asyncio.subprocess.Process, job: JobLimits, reading: asyncio.Task[None]) -> None:
    """Kill whatever is left of the job, reap it, and read the rest of its output, each within a grace period."""
    _kill_group(process.pid)
    job.kill()
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), KILL_GRACE_SECONDS)
        with contextlib.suppress(Exception):
            # A process outside the group and the cgroup may hold the pipe open for ever; stop listening to it.
            await asyncio.wait_for(asyncio.shield(reading), DRAIN_GRACE_SECONDS)
    finally:
        reading.cancel()
        with contextlib.suppress(BaseException):
            await reading


async def _read(output: io.RawIOBase, record: OutputRecord, on_line: LineSink | None) -> None:
    """Read the output in chunks of bounded size until every writer is gone, or until cancelled."""
    reader = asyncio.StreamReader(limit=READ_BYTES)
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), output)
    try:
        while chunk := await reader.read(READ_BYTES):
            for line in record.feed(chunk):
                await _stream(on_line, line)
        for line in record.end():
            await _stream(on_line, line)
    finally:
        transport.close()


async def _stream(on_line: LineSink | None, line: str) -> None:
    if on_line is not None:
        with contextlib.suppress(Exception):
            await on_line(line)


class OutputRecord:
    """What a command printed: every byte counted, lines within the output limit streamed, the last lines kept.

    Lines are split here, not by the stream reader, so that one line of any length costs at most
    `LINE_BYTES_KEPT` bytes of memory; the rest of it is counted and dropped.
    """

    def __init__(self, output_bytes: int, tail_lines: int) -> None:
        self.output_bytes = output_bytes
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self.seen = 0
        self._line = bytearray()
        self._line_dropped = 0

    @property
    def truncated(self) -> bool:
        return self.seen > self.output_bytes

    def feed(self, chunk: bytes) -> list[str]:
        """Take the next bytes of output; the lines they complete that are still to be streamed."""
        to_stream = []
        start = 0
        while (newline := chunk.find(b"\n", start)) != -1:
            self._keep(chunk, start, newline)
            line = self._finish_line()
            if self.seen + newline + 1 <= self.output_bytes:
                to_stream.append(line)
            start = newline + 1
        self._keep(chunk, start, len(chunk))
        self.seen += len(chunk)
        return to_stream

    def end(self) -> list[str]:
        """The output is over: a last line without a newline is a line too."""
        if not self._line and not self._line_dropped:
            return []
        line = self._finish_line()
        return [] if self.truncated else [line]

    def _keep(self, chunk: bytes, start: int, stop: int) -> None:
        room = max(0, LINE_BYTES_KEPT - len(self._line))
        kept = min(room, stop - start)
        self._line += chunk[start : start + kept]
        self._line_dropped += stop - start - kept

    def _finish_line(self) -> str:
        line = self._line.decode("utf-8", "replace")
        if self._line_dropped:
            line += f" [... {self._line_dropped} more bytes of this line not kept]"
        self._line = bytearray()
        self._line_dropped = 0
        self.tail.append(line)
        return line


class JobLimits:
    """One job's limits as this machine applies them: its own cgroup, or rlimits on each of its processes."""

    def __init__(self, limits: Limits, cgroup: JobCgroup | None, applied: str, process_ceiling: int | None = None) -> None:
        self.limits = limits
        self.cgroup = cgroup
        self.applied = applied
        self.process_ceiling = process_ceiling  # RLIMIT_NPROC counts all the user's processes, so it is set above those
        self._final_breach: KilledFor | None = None

    @classmethod
    def prepare(cls, limits: Limits, use_cgroups: bool) -> JobLimits:
        hierarchy, why_not = job_cgroups() if use_cgroups else (None, "cgroups not asked for")
        if hierarchy is not None:
            try:
                cgroup = JobCgroup.create(hierarchy, limits.memory_bytes, limits.processes, limits.cpus)
                return cls(limits, cgroup, describe(hierarchy, limits.memory_bytes, limits.processes, limits.cpus))
            except OSError as error:
                why_not = f"the job's cgroup could not be made: {error}"
        parts = [f"address space {human_bytes(limits.memory_bytes)} per process" if limits.memory_bytes else "memory unlimited"]
        ceiling = None
        if limits.processes and os.geteuid() != 0:
            ceiling = _tasks_of_user(os.getuid()) + limits.processes
            parts.append(f"{limits.processes} more processes of this user")
        elif limits.processes:
            parts.append("no process limit (root is exempt from RLIMIT_NPROC)")
        return cls(limits, None, "per-process rlimits: " + ", ".join(parts) + f"; no job cgroup: {why_not}", ceiling)

    def enter(self) -> None:  # runs in the child between fork and exec
        if self.cgroup is not None:
            self.cgroup.enter()
            return
        if self.limits.memory_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (self.limits.memory_bytes, self.limits.memory_bytes))
        if self.process_ceiling:
            resource.setrlimit(resource.RLIMIT_NPROC, (self.process_ceiling, self.process_ceiling))

    def breach(self) -> KilledFor | None:
        """The job-wide limit the kernel has enforced on this job so far, if any."""
        if self.cgroup is None:
            return None
        if self._final_breach is not None:
            return self._final_breach
        events = self.cgroup.events()
        if events.oom_kills:
            return "memory"
        if events.process_refusals:
            return "processes"
        return None

    def failed_for(self, exit_code: int | None, tail: deque[str]) -> KilledFor | None:
        """The limit that made a command fail on its own: a kill by the kernel, or an allocation refused."""
        if exit_code == 0:
            return None
        breached = self.breach()
        if breached is None and any(_REFUSED_ALLOCATION.search(line) for line in tail):
            return "memory"
        if breached is None and self.process_ceiling and any(_REFUSED_FORK.search(line) for line in tail):
            return "processes"
        return breached

    def note(self, killed_for: KilledFor) -> str:
        """The last line of the output: which limit ended the job, and what sets it."""
        memory = self.limits.memory_bytes
        if killed_for == "time":
            return f"[killed after the {self.limits.wall_seconds:g} s time limit]"
        if killed_for == "processes" and self.cgroup is None:
            return f"[a fork was refused: the job may start {self.limits.processes} processes beyond those its user already runs (RLIMIT_NPROC)]"
        if killed_for == "processes":
            return f"[killed after the job reached its limit of {self.limits.processes} processes (threads count too)]"
        if self.breach() == "memory":
            if not memory:
                return "[killed after the machine ran out of memory: out of memory]"
            return f"[killed after the job reached its memory limit of {human_bytes(memory)}: out of memory; {MEMORY_SETTING} sets the limit]"
        if self.cgroup is None and memory:
            return f"[out of memory: the per-process limit of {human_bytes(memory)} of address space refused an allocation; {MEMORY_SETTING} sets the limit]"
        job_limit = human_bytes(memory) if memory else "unlimited"
        return f"[out of memory: the machine refused an allocation (the job's own memory limit is {job_limit}, set by {MEMORY_SETTING})]"

    def kill(self) -> None:
        if self.cgroup is not None:
            self.cgroup.kill()

    def release(self) -> None:
        """Remove the job's cgroup, remembering what it recorded."""
        if self.cgroup is not None:
            self._final_breach = self.breach()
            self.cgroup.remove()


def _tasks_of_user(uid: int) -> int:
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
    return count


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def sandbox_for(backend: str, confine: bool = True, docker_url: str = "", docker_image: str = "", owner: str = "autosota") -> Sandbox:
    """The sandbox a runner's settings name: "local" or "docker" (its containers labelled with the owner)."""
    if backend == "local":
        return LocalSandbox(confine=confine)
    if backend == "docker":
        from shared.sandboxes.docker import DockerSandbox

        return DockerSandbox(base_url=docker_url or None, image=docker_image or None, owner=owner)
    raise ValueError(f"unknown sandbox backend {backend!r} (local, docker)")

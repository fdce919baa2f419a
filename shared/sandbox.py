"""Sandboxes that run a command in a workspace: the local backend, the backend interface, the choice.

Local backend: a subprocess in its own process group, with wall-clock, memory and output limits.
Where the platform allows it (root, or unprivileged user namespaces), it is also confined by
`shared/sandboxes/confine.py`: no network, the workspace the only writable place, protected
paths read-only, and every process it starts dies with it and with the runner. The docker
backend lives in `shared/sandboxes/docker.py`; both satisfy `Sandbox`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
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
from typing import Protocol

LineSink = Callable[[str], Awaitable[None]]
CONFINE_SCRIPT = Path(__file__).resolve().parent / "sandboxes" / "confine.py"
NUMERIC_THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 120.0
    memory_bytes: int | None = 4 * 1024**3
    output_bytes: int = 4 * 1024**2
    tail_lines: int = 60
    cpus: float | None = None
    gpu_devices: tuple[str, ...] = ()  # the accelerators the command may see; none means none


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

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


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
    """Runs commands on this machine, confined where the platform allows it."""

    name = "local"

    def __init__(self, confine: bool = True) -> None:
        self.confine = confine

    def workspace_view(self, workspace: Path) -> Path:
        return workspace

    async def run(self, command: str, workspace: Path, environment_bin: str, env: dict[str, str], limits: Limits, isolation: Isolation, on_line: LineSink | None = None) -> Outcome:
        full_env = sandbox_env(environment_bin, {"CUDA_VISIBLE_DEVICES": ",".join(limits.gpu_devices), **env})
        return await run(command, workspace, full_env, limits, on_line, isolation if self.confine else None)


async def run(command: str, cwd: Path, env: dict[str, str], limits: Limits, on_line: LineSink | None = None, isolation: Isolation | None = None) -> Outcome:
    """Run a shell command; kill its whole process group when the wall-clock limit passes.

    With an isolation, the command is confined when the platform allows it; the outcome says how.
    """
    started = time.monotonic()
    argv = ["/bin/sh", "-c", command]
    confinement = "process group"
    if isolation is not None and confinement_available()[0]:
        flags = [] if not isolation.network else ["--network"]
        for relative in isolation.read_only:
            flags += ["--read-only", relative]
        argv = [sys.executable, "-I", str(CONFINE_SCRIPT), "--workspace", str(Path(cwd).resolve()), *flags, "--", *argv]
        confinement = "namespaces: " + ("network kept" if isolation.network else "no network") + ", read-only root"

    def confine() -> None:  # runs in the child before exec
        if limits.memory_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))

    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=confine,
    )
    tail: deque[str] = deque(maxlen=limits.tail_lines)
    seen = 0
    truncated = False

    async def pump() -> None:
        nonlocal seen, truncated
        assert process.stdout is not None
        async for raw in process.stdout:
            seen += len(raw)
            if seen > limits.output_bytes:
                truncated = True
                continue  # keep draining so the child never blocks on a full pipe
            line = raw.decode("utf-8", "replace").rstrip("\n")
            tail.append(line)
            if on_line is not None:
                with contextlib.suppress(Exception):
                    await on_line(line)

    timed_out = False
    pumping = asyncio.create_task(pump())
    try:
        await asyncio.wait_for(asyncio.shield(process.wait()), timeout=limits.wall_seconds)
    except TimeoutError:
        timed_out = True
    finally:
        _kill_group(process.pid)
        with contextlib.suppress(ProcessLookupError):
            await asyncio.shield(process.wait())
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pumping, timeout=5)
    if truncated:
        tail.append(f"[output truncated after {limits.output_bytes} bytes]")
    if timed_out:
        tail.append(f"[killed after the {limits.wall_seconds:g} s time limit]")
    return Outcome(
        exit_code=None if timed_out else process.returncode,
        timed_out=timed_out,
        output_tail="\n".join(tail),
        output_truncated=truncated,
        duration_seconds=time.monotonic() - started,
        confinement=confinement,
    )


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

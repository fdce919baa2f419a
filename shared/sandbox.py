"""The local sandbox: a command in its own process group, with time, memory and output limits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

LineSink = Callable[[str], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 120.0
    memory_bytes: int | None = 4 * 1024**3
    output_bytes: int = 4 * 1024**2
    tail_lines: int = 60


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None
    timed_out: bool
    output_tail: str
    output_truncated: bool
    duration_seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


def sandbox_env(environment_bin: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment's interpreter first on PATH, one thread per numeric library."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AUTOSOTA_", "NATS_"))}
    env["PATH"] = environment_bin + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    env.update({"PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    env.update(extra or {})
    return env


async def run(command: str, cwd: Path, env: dict[str, str], limits: Limits, on_line: LineSink | None = None) -> Outcome:
    """Run a shell command; kill its whole process group when the wall-clock limit passes."""
    started = time.monotonic()

    def confine() -> None:  # runs in the child before exec
        if limits.memory_bytes:
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))

    process = await asyncio.create_subprocess_shell(
        command,
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
        await process.wait()
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
    )


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)

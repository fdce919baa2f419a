"""The docker backend: one container per command through the Docker Engine API (`docker` package).

It also speaks to Podman's Docker-compatible socket (scripts/setup-podman.sh). Each command gets
a fresh container of the experiment image: no network unless asked, a read-only root file
system, the workspace mounted at /workspace as the only writable place besides a private /tmp,
protected paths mounted read-only on top of it, every capability dropped, CPU, memory and GPU
limits (device requests), and its log streamed line by line while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import docker
from docker.errors import DockerException, NotFound
from docker.types import DeviceRequest

from shared.sandbox import LINE_BYTES_KEPT, MEMORY_SETTING, NUMERIC_THREADS, Isolation, KilledFor, LineSink, Limits, Outcome

DEFAULT_IMAGE = "localhost/autosota/experiment:latest"
WORKSPACE = Path("/workspace")
RUNNER_LABEL = "autosota.runner"
STOP_POLL_SECONDS = 0.5


class DockerSandbox:
    """Runs commands in containers of one image; the image is the environment."""

    name = "docker"

    def __init__(self, base_url: str | None = None, image: str | None = None, owner: str = "autosota") -> None:
        url = base_url or os.environ.get("DOCKER_HOST")
        self.client = docker.DockerClient(base_url=url) if url else docker.from_env()
        self.image = image or DEFAULT_IMAGE
        self.owner = owner

    def workspace_view(self, workspace: Path) -> Path:
        return WORKSPACE

    def remove_leftovers(self) -> int:
        """Remove containers a previous life of this owner left behind (it was killed mid-job)."""
        removed = 0
        for container in self.client.containers.list(all=True, filters={"label": f"{RUNNER_LABEL}={self.owner}"}):
            with contextlib.suppress(DockerException):
                container.remove(force=True)
                removed += 1
        return removed

    def container_config(self, command: str, workspace: Path, env: dict[str, str], limits: Limits, isolation: Isolation) -> dict[str, Any]:
        """Everything the container is created with; a pure function of the request."""
        root = workspace.resolve()
        volumes: dict[str, dict[str, str]] = {str(root): {"bind": str(WORKSPACE), "mode": "rw"}}
        for relative in isolation.read_only:
            source = (root / relative).resolve()
            if source.is_relative_to(root) and source.exists() and source != root:
                volumes[str(source)] = {"bind": str(WORKSPACE / source.relative_to(root)), "mode": "ro"}
        config: dict[str, Any] = {
            "image": self.image,
            "command": ["/bin/sh", "-c", command],
            "working_dir": str(WORKSPACE),
            "environment": {"PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1", **NUMERIC_THREADS, "HOME": str(WORKSPACE / ".home"), "CUDA_VISIBLE_DEVICES": ",".join(limits.gpu_devices), **env},
            "volumes": volumes,
            "read_only": True,
            "tmpfs": {"/tmp": "rw,size=1g,mode=1777"},
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "labels": {RUNNER_LABEL: self.owner},
            "name": f"autosota-{self.owner}-{uuid.uuid4().hex[:12]}",
            "detach": True,
            "stdin_open": False,
            "tty": False,
        }
        if not isolation.network:
            config["network_mode"] = "none"
        if limits.memory_bytes:
            config["mem_limit"] = limits.memory_bytes
            config["memswap_limit"] = limits.memory_bytes
        if limits.cpus:
            config["nano_cpus"] = int(limits.cpus * 1e9)
        if limits.processes:
            config["pids_limit"] = limits.processes
        if limits.gpu_devices:
            config["device_requests"] = [DeviceRequest(device_ids=list(limits.gpu_devices), capabilities=[["gpu"]])]
        return config

    async def run(self, command: str, workspace: Path, environment_bin: str, env: dict[str, str], limits: Limits, isolation: Isolation, on_line: LineSink | None = None) -> Outcome:
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        config = self.container_config(command, workspace, env, limits, isolation)
        try:
            container = await asyncio.to_thread(self.client.containers.create, **{k: v for k, v in config.items() if k != "detach"})
            await asyncio.to_thread(container.start)
        except DockerException as error:
            return Outcome(None, False, f"[sandbox] the container could not start: {error}", False, time.monotonic() - started, "docker")
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        stop_streaming = threading.Event()
        streamer = threading.Thread(target=_stream_lines, args=(container, lines, loop, stop_streaming), daemon=True)
        streamer.start()
        tail: deque[str] = deque(maxlen=limits.tail_lines)
        seen = 0
        truncated = False

        async def pump() -> None:
            nonlocal seen, truncated
            while (line := await lines.get()) is not None:
                seen += len(line) + 1
                if seen > limits.output_bytes:
                    truncated = True
                    continue
                tail.append(line)
                if on_line is not None:
                    with contextlib.suppress(Exception):
                        await on_line(line)

        pumping = asyncio.create_task(pump())
        timed_out = False
        exit_code: int | None = None
        try:
            exit_code = await asyncio.wait_for(_wait(container), timeout=limits.wall_seconds)
        except TimeoutError:
            timed_out = True
        finally:
            out_of_memory = False
            if exit_code is not None:
                with contextlib.suppress(DockerException):
                    await asyncio.to_thread(container.reload)
                    out_of_memory = bool(container.attrs.get("State", {}).get("OOMKilled"))
                # the engine flags only its first process; inside a container with no one else to
                # send it, a SIGKILL (the shell's 128 + 9) is the kernel's out-of-memory killer
                out_of_memory = out_of_memory or (exit_code == 137 and bool(limits.memory_bytes))
            if exit_code is None:  # past its time limit, or the job was cancelled
                with contextlib.suppress(DockerException):
                    await asyncio.shield(asyncio.to_thread(container.kill))
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(pumping), timeout=10)  # the log ends once the container has
            stop_streaming.set()
            with contextlib.suppress(DockerException):
                await asyncio.shield(asyncio.to_thread(container.remove, force=True))
        if truncated:
            tail.append(f"[output truncated after {limits.output_bytes} bytes]")
        if timed_out:
            tail.append(f"[killed after the {limits.wall_seconds:g} s time limit]")
        mode = "docker: " + ("network kept" if isolation.network else "no network") + ", read-only root"
        killed_for: KilledFor | None = "time" if timed_out else ("memory" if out_of_memory else None)
        if killed_for == "memory":
            tail.append(f"[killed at the container's memory limit of {limits.memory_bytes} bytes: {MEMORY_SETTING} sets it]")
        return Outcome(None if timed_out else exit_code, timed_out, "\n".join(tail), truncated, time.monotonic() - started, mode, container_limits(limits), killed_for)


def container_limits(limits: Limits) -> str:
    """What the container is held to, for the record: its own cgroup, so the job's whole tree."""
    parts = [f"memory {limits.memory_bytes / 1024**3:g} GiB" if limits.memory_bytes else "no memory limit"]
    if limits.processes:
        parts.append(f"{limits.processes} processes")
    if limits.cpus:
        parts.append(f"{limits.cpus:g} CPUs")
    return "docker container: " + ", ".join(parts)


async def _wait(container: Any) -> int:
    """The container's exit code; polls so that a cancelled wait leaves no thread blocked for long."""
    while True:
        try:
            result = await asyncio.to_thread(container.wait, timeout=STOP_POLL_SECONDS)
            return int(result.get("StatusCode", -1))
        except NotFound:
            return -1
        except Exception as error:  # the API's read timeout: still running
            if "timed out" not in str(error).lower() and "timeout" not in type(error).__name__.lower():
                raise


def _stream_lines(container: Any, lines: asyncio.Queue[str | None], loop: asyncio.AbstractEventLoop, stop: threading.Event) -> None:
    """Follow the container's log in a thread and hand whole lines to the event loop."""
    pending = b""
    try:
        for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for raw in complete:
                loop.call_soon_threadsafe(lines.put_nowait, raw[:LINE_BYTES_KEPT].decode("utf-8", "replace").rstrip("\r"))
            # one endless line costs no more memory than a short one: keep its start, count the rest
            if len(pending) > 2 * LINE_BYTES_KEPT:
                pending = pending[:LINE_BYTES_KEPT]
            if stop.is_set():
                break
    except Exception:  # noqa: BLE001 - the container went away; what was read is kept
        pass
    if pending:
        loop.call_soon_threadsafe(lines.put_nowait, pending.decode("utf-8", "replace"))
    loop.call_soon_threadsafe(lines.put_nowait, None)

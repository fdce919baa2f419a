"""Every service's event store on SQLite and on PostgreSQL, chosen by settings alone.

PostgreSQL keeps one schema per service instance (runners included) in one database. These tests
skip when PostgreSQL is unreachable, unless AUTOSOTA_REQUIRE_POSTGRES=1 (CI), where they fail.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.utils import get_topic

from services.resource.domain import ResourceDomain
from shared.contracts import Budget, CampaignStarted, ResourcesPrepared
from shared.runtime import ServiceRuntime
from shared.settings import POSTGRES_IDENTIFIER_MAX, Settings
from shared.store import EMITTED_TOPIC, CampaignLedger, postgres_env

OPENED_TOPIC = get_topic(CampaignLedger.Opened)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny-forecaster"


@pytest.fixture(params=["sqlite", "postgres"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings choosing one persistence; the PostgreSQL connection comes from the environment."""
    if request.param == "postgres":
        request.getfixturevalue("postgres")
    yield Settings(data_dir=tmp_path, namespace="", persistence=request.param)


def started(campaign: str) -> CampaignStarted:
    return CampaignStarted(campaign=campaign, paper_path=str(EXAMPLE), budget=Budget(), event_id=uuid.uuid4(), producer="scheduler", time=datetime.now(UTC))


def schemas(configured: Settings) -> set[str]:
    with psycopg.connect(
        dbname=configured.postgres_dbname, host=configured.postgres_host, port=configured.postgres_port, user=configured.postgres_user, connect_timeout=3
    ) as connection:
        return {row[0] for row in connection.execute("SELECT nspname FROM pg_namespace")}


def test_a_store_records_once_and_survives_a_restart(store_settings: Settings) -> None:
    runtime = ServiceRuntime("resource", store_settings, ResourceDomain())
    event = started("c1")
    prepared = ResourcesPrepared(campaign="c1", snapshot_sha256="cd" * 32, files={}, size_bytes=1)
    # Step 1: an observation, a decision and the stream position are saved together.
    runtime.commit("c1", [prepared], tracking=Tracking("AUTOSOTA_EVENTS/resource", 3), observed=event, cause=event)
    assert runtime.store.recorder.has_tracking_id("AUTOSOTA_EVENTS/resource", 3)
    # Step 2: the same position cannot be recorded twice.
    with pytest.raises(IntegrityError):
        runtime.commit("c1", [prepared], tracking=Tracking("AUTOSOTA_EVENTS/resource", 3), observed=event, cause=event)
    runtime.store.close()
    # Step 3: a new process over the same store folds the same state.
    again = ServiceRuntime("resource", store_settings, ResourceDomain())
    try:
        assert again.state("c1").snapshot_sha256 == "cd" * 32
        assert again.store.recorder.max_tracking_id("AUTOSOTA_EVENTS/resource") == 3
    finally:
        again.store.close()


def test_postgres_is_chosen_by_settings_alone_with_a_schema_per_instance(postgres: Settings, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, namespace="", persistence="postgres")
    runners = [ServiceRuntime("resource", settings, ResourceDomain(), instance=name) for name in ("resource-1", "resource-2")]
    try:
        for runtime in runners:
            runtime.commit("c2", [ResourcesPrepared(campaign="c2", snapshot_sha256="ef" * 32, files={}, size_bytes=1)])
        names = {runtime.store.recorder.datastore.schema for runtime in runners}  # type: ignore[attr-defined]
        assert len(names) == 2 and names <= schemas(settings)
        assert all(runtime.store.recorder.__class__.__module__ == "eventsourcing.postgres" for runtime in runners)
        assert not list((tmp_path / "stores").glob("*.sqlite")), "no SQLite file when PostgreSQL is chosen"
        # each instance sees only its own ledger
        for runtime in runners:
            assert len(runtime.store.recorder.select_notifications(start=0, limit=100, topics=[EMITTED_TOPIC, OPENED_TOPIC])) == 2  # its own ledger, not the other instance's
    finally:
        for runtime in runners:
            runtime.store.close()


def test_schema_names_are_valid_identifiers_and_keep_stacks_apart() -> None:
    plain = Settings(namespace="", postgres_schema_prefix="")
    assert plain.postgres_schema("runner-12") == "runner_12"
    assert Settings(namespace="lab2").postgres_schema("scheduler") != plain.postgres_schema("scheduler")
    long = Settings(namespace="n" * 40, postgres_schema_prefix="p" * 20).postgres_schema("supervisor")
    assert len(long) <= POSTGRES_IDENTIFIER_MAX and long != Settings(namespace="n" * 40, postgres_schema_prefix="p" * 20).postgres_schema("scheduler")
    env = postgres_env("runner-1", Settings(postgres_schema_prefix="x_", postgres_pool_size=3))
    assert env["POSTGRES_SCHEMA"] == "x_runner_1" and env["POSTGRES_POOL_SIZE"] == "3"

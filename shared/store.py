"""Each service's event store: an `eventsourcing` application holding one ledger per campaign.

A ledger records what the service observed (incoming events it acts on) and what it emitted
(events and work items). The service's state for a campaign is a fold over its ledger, so it
survives restarts; the emitted entries are the outbox that the relay publishes.

Where it lives is chosen by settings alone: a SQLite file per service instance, or a PostgreSQL
schema per service instance (created on first start) in one shared database.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError, ProcessRecorder
from eventsourcing.utils import get_topic

from shared.settings import Settings

LEDGER_NAMESPACE = uuid5(NAMESPACE_URL, "autosota/ledger")
EVENT_NAMESPACE = uuid5(NAMESPACE_URL, "autosota/event")


class CampaignLedger(Aggregate):
    """One service's record of one campaign."""

    @event("Opened")
    def __init__(self, service: str, campaign: str) -> None:
        self.service = service
        self.campaign = campaign
        self.entries = 0

    @staticmethod
    def create_id(service: str, campaign: str) -> UUID:
        return uuid5(LEDGER_NAMESPACE, f"{service}/{campaign}")

    @event("Observed")
    def observe(self, message: dict[str, Any]) -> None:
        self.entries += 1

    @event("Emitted")
    def emit(self, subject: str, message: dict[str, Any]) -> None:
        self.entries += 1

    def next_event_id(self) -> UUID:
        """Deterministic id of the next entry: replaying a ledger gives the same ids."""
        return uuid5(EVENT_NAMESPACE, f"{self.id}:{self.version + 1}")


class RelayKey(Aggregate):
    """A secret of one service instance's outbox relay: its message ids are keyed with it, so no other
    user of the bus can predict them and spend them first in the server's duplicate window."""

    @event("Created")
    def __init__(self, service: str, key: str) -> None:
        self.service = service
        self.key = key

    @staticmethod
    def create_id(service: str) -> UUID:
        return uuid5(LEDGER_NAMESPACE, f"{service}/relay-key")


EMITTED_TOPIC = get_topic(CampaignLedger.Emitted)
OBSERVED_TOPIC = get_topic(CampaignLedger.Observed)


class ServiceStore(Application[UUID]):
    """A service's own event store, with a tracking table for the inbox and the outbox relay."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        if env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres":
            ensure_postgres_schema(env)
        super().__init__(env=env)
        self.recorder: ProcessRecorder

    def construct_recorder(self) -> ProcessRecorder:
        return self.factory.process_recorder()

    def relay_key(self) -> bytes:
        """This instance's relay secret, created on first use and kept with its events."""
        try:
            found: RelayKey = self.repository.get(RelayKey.create_id(self.name))
        except AggregateNotFoundError:
            found = RelayKey(service=self.name, key=secrets.token_hex(32))
            try:
                self.save(found)
            except IntegrityError:  # another process of the same instance created it first
                found = self.repository.get(RelayKey.create_id(self.name))
        return bytes.fromhex(found.key)


def sqlite_env(path: Path) -> dict[str, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path), "SQLITE_LOCK_TIMEOUT": "30"}


def postgres_env(instance: str, settings: Settings | None = None) -> dict[str, str]:
    """The eventsourcing environment of one instance's store: its own schema in the shared database."""
    settings = settings or Settings()
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": settings.postgres_dbname,
        "POSTGRES_HOST": settings.postgres_host,
        "POSTGRES_PORT": str(settings.postgres_port),
        "POSTGRES_USER": settings.postgres_user,
        "POSTGRES_PASSWORD": settings.postgres_password.get_secret_value(),
        "POSTGRES_SCHEMA": settings.postgres_schema(instance),
        "POSTGRES_POOL_SIZE": str(settings.postgres_pool_size),
        "POSTGRES_MAX_OVERFLOW": str(settings.postgres_pool_size),
        "POSTGRES_CONNECT_TIMEOUT": "10",
        "CREATE_TABLE": "true",
    }


def ensure_postgres_schema(env: dict[str, str]) -> None:
    """eventsourcing creates tables but not the schema they live in."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        dbname=env["POSTGRES_DBNAME"],
        host=env["POSTGRES_HOST"],
        port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"],
        password=env["POSTGRES_PASSWORD"] or None,
        connect_timeout=int(env.get("POSTGRES_CONNECT_TIMEOUT", "10")),
        autocommit=True,
    ) as connection:
        try:
            connection.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(env["POSTGRES_SCHEMA"])))
        except psycopg.errors.UniqueViolation:
            pass  # another instance created it at the same moment

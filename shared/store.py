"""Each service's event store: an `eventsourcing` application holding one ledger per campaign.

A ledger records what the service observed (incoming events it acts on) and what it emitted
(events and work items). The service's state for a campaign is a fold over its ledger, so it
survives restarts; the emitted entries are the outbox that the relay publishes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import ProcessRecorder
from eventsourcing.utils import get_topic

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


EMITTED_TOPIC = get_topic(CampaignLedger.Emitted)
OBSERVED_TOPIC = get_topic(CampaignLedger.Observed)


class ServiceStore(Application[UUID]):
    """A service's own event store, with a tracking table for the inbox and the outbox relay."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        super().__init__(env=env)
        self.recorder: ProcessRecorder

    def construct_recorder(self) -> ProcessRecorder:
        return self.factory.process_recorder()


def sqlite_env(path: Path) -> dict[str, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path), "SQLITE_LOCK_TIMEOUT": "30"}


def postgres_env(service: str) -> dict[str, str]:
    import os

    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": os.environ.get("POSTGRES_DBNAME", "test"),
        "POSTGRES_HOST": os.environ.get("POSTGRES_HOST", "127.0.0.1"),
        "POSTGRES_PORT": os.environ.get("POSTGRES_PORT", "5432"),
        "POSTGRES_USER": os.environ.get("POSTGRES_USER", "postgres"),
        "POSTGRES_PASSWORD": os.environ.get("POSTGRES_PASSWORD", ""),
        "POSTGRES_SCHEMA": service.replace("-", "_"),
        "CREATE_TABLE": "true",
    }

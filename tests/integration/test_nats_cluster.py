"""A campaign on a three-server JetStream cluster (deploy/nats/loopback) survives losing a server.

The three servers run with the shipped configuration, streams are replicated three times, and
every service connects with its own user to all three URLs. In the middle of the idea search
the server leading the events stream is killed; the campaign must still complete, with every
event each service committed to its outbox present in the stream exactly once.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import pytest

from shared.cli import campaign_events, request_start
from shared.contracts import Budget, Event
from shared.embedded import Stack, instance_names
from shared.settings import Settings
from shared.store import EMITTED_TOPIC, OBSERVED_TOPIC, ServiceStore, postgres_env, sqlite_env
from shared.subjects import SERVICES, Subjects
from tests.e2e.test_campaigns import assert_exactly_once
from tests.integration.secured_bus import LoopbackCluster, auth, new_passwords, service_credentials, violations

pytestmark = [pytest.mark.nats, pytest.mark.e2e]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny-forecaster"
SUBJECTS = Subjects()  # the permissions are written for the deployment's subjects (no namespace)


def url_with_user(url: str, user: str, passwords: dict[str, str]) -> str:
    return url.replace("nats://", f"nats://{user}:{passwords[user]}@")


def events_on(url: str, campaign: str) -> list[Event]:
    return asyncio.run(campaign_events(url, SUBJECTS, campaign))


def wait_for(url: str, campaign: str, predicate, timeout: float = 240) -> list[Event]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    events: list[Event] = []
    while time.monotonic() < deadline:
        try:
            events = events_on(url, campaign)
        except Exception:  # noqa: BLE001 - the JetStream API does not answer while a new leader is elected
            time.sleep(0.5)
            continue
        if predicate(events):
            return events
        time.sleep(0.5)
    raise AssertionError(f"timed out; last events: {[e.event_type for e in events][-15:]}")


async def events_stream_leader(cluster: LoopbackCluster, passwords: dict[str, str]) -> tuple[str, int]:
    client = await nats.connect(cluster.urls, **auth("admin", passwords))
    try:
        info = await client.jetstream().stream_info(SUBJECTS.events_stream)
        return info.cluster.leader, info.config.num_replicas  # type: ignore[union-attr,return-value]
    finally:
        await client.close()


def committed_event_ids(data_dir: Path, instance: str) -> set[str]:
    """Ids of the events an instance committed as its own: its outbox, and a runner's recorded results."""
    settings = Settings()
    env = postgres_env(instance) if settings.persistence == "postgres" else sqlite_env(Settings(data_dir=data_dir).store_path(instance))
    store = ServiceStore(instance, env)
    try:
        ids: set[str] = set()
        for notification in store.recorder.select_notifications(start=0, limit=100_000, topics=[EMITTED_TOPIC, OBSERVED_TOPIC]):
            entry = store.mapper.to_domain_event(notification)
            message = getattr(entry, "message", {})
            subject = getattr(entry, "subject", None)
            own_result = subject is None and message.get("producer") == instance
            if (subject or "").startswith(f"{SUBJECTS.root}.evt.") or own_result:
                ids.add(str(message["event_id"]))
        return ids
    finally:
        store.close()


def test_a_campaign_completes_without_losing_an_event_when_a_server_dies(tmp_path: Path) -> None:
    passwords = new_passwords()
    cluster = LoopbackCluster(tmp_path / "nats", passwords).start()
    instances = instance_names(SERVICES, 2)
    campaign = "cluster-campaign"  # a private cluster: a fixed id keeps the idea search reproducible
    try:
        stack = Stack(
            tmp_path / "stack",
            runners=2,
            nats_url=cluster.url,
            extra_env={"AUTOSOTA_STREAM_REPLICAS": "3"},
            instance_env=service_credentials(instances, passwords),
            client_auth=auth("cli", passwords),
        )
        with stack:
            # Step 1: the campaign starts on a replicated stream.
            request = {"campaign": campaign, "paper_path": str(EXAMPLE), "budget": Budget(max_experiments=4).model_dump(), "pool": "cpu"}
            assert asyncio.run(request_start(url_with_user(cluster.urls[0], "cli", passwords), SUBJECTS, request))["accepted"]
            leader, replicas = asyncio.run(events_stream_leader(cluster, passwords))
            assert replicas == 3
            # Step 2: once the idea search is under way, the server leading the events stream dies.
            victim = cluster.server_named(leader)
            survivor = next(s for s in cluster.servers if s is not victim)
            reader = url_with_user(survivor.url, "cli", passwords)
            wait_for(reader, campaign, lambda ev: sum(e.event_type == "ExperimentDispatched" and e.purpose == "idea" for e in ev) >= 2)
            victim.kill()
            # Step 3: the campaign completes on the two servers left.
            events = wait_for(reader, campaign, lambda ev: any(e.event_type == "CampaignCompleted" for e in ev), timeout=300)
            time.sleep(2)  # a duplicate published late would show up in this window
            events = events_on(reader, campaign)
            new_leader, _ = asyncio.run(events_stream_leader(cluster, passwords))
        assert new_leader != leader
        assert_exactly_once(events)
        assert next(e for e in events if e.event_type == "CampaignCompleted").outcome in ("certified", "not_improved")
        # Step 4: every event a service committed is in the stream: nothing was lost with the server.
        on_stream = {str(e.event_id) for e in events}
        for instance in instances:
            missing = committed_event_ids(tmp_path / "stack", instance) - on_stream
            assert not missing, f"{instance} committed {len(missing)} events the stream lacks"
        assert [v for log in cluster.logs() for v in violations(log)] == []
    finally:
        cluster.stop()

"""The shipped NATS users (deploy/nats/accounts.conf) against a real nats-server started with them.

For every service: at least one thing it must do succeeds, and one thing it must not do is
refused by the server, the refusal seen as the server's permissions violation (on the client
and in the server's log). Then a whole campaign runs with each service on its own user, and
the server refuses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from shared.bus import Artifacts
from shared.cli import campaign_events, request_start
from shared.contracts import Budget
from shared.embedded import Stack, instance_names
from shared.subjects import SERVICES, Subjects
from tests.e2e.test_campaigns import assert_exactly_once
from tests.integration.secured_bus import Secured, auth, secured_deployment, service_credentials, violations

pytestmark = pytest.mark.nats
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny-forecaster"
SUBJECTS = Subjects()  # the permissions are written for the deployment's subjects (no namespace)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    yield from secured_deployment(tmp_path_factory.mktemp("secured-nats"))


@dataclass
class Session:
    """One user's connection, with the errors the server sent it."""

    user: str
    client: Client
    errors: list[str] = field(default_factory=list)

    def refusals(self) -> list[str]:
        return [e for e in self.errors if "permissions violation" in e.lower()]


@asynccontextmanager
async def connected(secured: Secured, user: str) -> AsyncIterator[Session]:
    errors: list[str] = []

    async def record(error: Exception) -> None:
        errors.append(str(error))

    client = await nats.connect(secured.url, error_cb=record, max_reconnect_attempts=1, **auth(user, secured.passwords))
    try:
        yield Session(user, client, errors)
    finally:
        await client.close()


async def refused(session: Session, secured: Secured, action: Callable[[], Awaitable[object]], subject: str, kind: str = "Publish") -> None:
    """Run an action the user must not perform; the server must refuse it by name."""
    before = len(session.refusals())
    try:
        await asyncio.wait_for(action(), 2.0)
    except Exception:  # noqa: BLE001, S110 - a refused request simply never gets its answer
        pass
    await session.client.flush()
    for _ in range(40):
        if len(session.refusals()) > before:
            break
        await asyncio.sleep(0.05)
    # a subject ending in "." stands for any subject under it (object store chunks get random names)
    quoted = f'{kind} to "{subject}' + ("" if subject.endswith(".") else '"')
    seen = session.refusals()[before:]
    assert any(quoted.lower() in e.lower() for e in seen), f"{session.user}: {kind} {subject} was not refused ({session.errors})"
    logged = f"{session.user} {kind} {subject}"
    assert any(v == logged or (subject.endswith(".") and v.startswith(logged)) for v in violations(secured.server.log_path))


async def stored_count(secured: Secured, subject: str) -> int:
    client = await nats.connect(secured.url, **auth("admin", secured.passwords))
    try:
        info = await client.jetstream().stream_info(SUBJECTS.events_stream, subjects_filter=subject)
        return sum((info.state.subjects or {}).values())
    finally:
        await client.close()


async def publish_own_event(session: Session, service: str) -> None:
    """Allowed for everyone: an event under its own subject, acknowledged by the events stream."""
    ack = await session.client.jetstream().publish(SUBJECTS.event(service, "perm", "Probe"), b"{}", timeout=5)
    assert ack.stream == SUBJECTS.events_stream


@pytest.mark.parametrize(
    ("service", "forbidden", "why"),
    [
        ("resource", SUBJECTS.event("objective", "perm", "ObjectiveSet"), "another service's events"),
        ("objective", f"$O.{SUBJECTS.artifacts_bucket}.C.forged", "writing artifacts (only resource snapshots the paper)"),
        ("init", SUBJECTS.work("cpu"), "dispatching work"),
        ("monitor", SUBJECTS.telemetry("perm", "e1"), "telemetry (only runners report it)"),
        ("fix", SUBJECTS.event("init", "perm", "EnvironmentReady"), "another service's events"),
        ("ideator", SUBJECTS.event("supervisor", "perm", "IdeaCleared"), "clearing its own ideas"),
        ("scheduler", f"$JS.API.CONSUMER.MSG.NEXT.{SUBJECTS.work_stream}.runner-cpu", "pulling work"),
        ("supervisor", SUBJECTS.control("campaign.start"), "control messages (people only)"),
        ("runner", SUBJECTS.event("scheduler", "perm", "CampaignCompleted"), "another service's events"),
        ("cli", SUBJECTS.event("scheduler", "perm", "CampaignStarted"), "forging events"),
    ],
)
async def test_each_service_publishes_its_own_events_and_is_refused_what_is_not_its_job(secured: Secured, service: str, forbidden: str, why: str) -> None:
    async with connected(secured, service) as session:
        # Step 1: what it must do: its own events (people's CLI has none: it asks for health instead).
        if service == "cli":
            with pytest.raises(nats.errors.NoRespondersError):
                await session.client.request(SUBJECTS.health("scheduler"), b"", timeout=2)
        else:
            await publish_own_event(session, service)
        # Step 2: what it must not do is refused by the server and leaves no trace in the stream.
        await refused(session, secured, lambda: session.client.publish(forbidden, b"{}"), forbidden)
        if forbidden.startswith(SUBJECTS.root + ".evt."):
            assert await stored_count(secured, forbidden) == 0
        assert not session.client.is_closed, "a refusal must not cost the service its connection"


async def test_only_dispatchers_queue_work_and_only_runners_pull_it(secured: Secured) -> None:
    item = f'{{"probe": "{uuid.uuid4().hex}"}}'.encode()
    async with connected(secured, "scheduler") as scheduler, connected(secured, "runner") as runner, connected(secured, "ideator") as ideator:
        # Step 1: the scheduler queues a work item; a runner pulls it from its pool's durable consumer.
        ack = await scheduler.client.jetstream().publish(SUBJECTS.work("permtest"), item, timeout=5)
        assert ack.stream == SUBJECTS.work_stream
        pulled = await runner.client.jetstream().pull_subscribe(SUBJECTS.work("permtest"), durable="runner-permtest", stream=SUBJECTS.work_stream)
        [message] = await pulled.fetch(1, timeout=5)
        assert message.data == item
        await message.ack()
        # Step 2: a service that is not a runner can neither consume the work stream nor listen on it.
        await refused(ideator, secured, lambda: ideator.client.jetstream().pull_subscribe(SUBJECTS.work("permtest"), durable="ideator", stream=SUBJECTS.work_stream), f"$JS.API.CONSUMER.INFO.{SUBJECTS.work_stream}.ideator")
        await refused(ideator, secured, lambda: ideator.client.subscribe(SUBJECTS.work("cpu")), SUBJECTS.work("cpu"), kind="Subscription")


async def test_people_start_campaigns_and_only_the_scheduler_answers(secured: Secured) -> None:
    async with connected(secured, "scheduler") as scheduler, connected(secured, "cli") as cli, connected(secured, "monitor") as monitor:
        # Step 1: the scheduler listens for start requests and answers on the requester's inbox.
        async def answer(msg) -> None:  # type: ignore[no-untyped-def]
            await msg.respond(b'{"accepted": true}')

        await scheduler.client.subscribe(SUBJECTS.control("campaign.start"), cb=answer)
        await scheduler.client.flush()
        reply = await cli.client.request(SUBJECTS.control("campaign.start"), b"{}", timeout=5)
        assert reply.data == b'{"accepted": true}'
        # Step 2: no other service may listen in on control requests.
        await refused(monitor, secured, lambda: monitor.client.subscribe(SUBJECTS.control("campaign.start")), SUBJECTS.control("campaign.start"), kind="Subscription")
    assert scheduler.refusals() == [] and cli.refusals() == []


async def test_a_service_may_probe_its_own_health_and_nothing_else_on_the_control_subjects(secured: Secured) -> None:
    async with connected(secured, "resource") as resource:
        # Step 1: its container's readiness probe asks after its own health (nobody answers here).
        with pytest.raises(nats.errors.NoRespondersError):
            await resource.client.request(SUBJECTS.health("resource"), b"", timeout=2)
        # Step 2: another service's health, or any other control subject, is refused.
        await refused(resource, secured, lambda: resource.client.publish(SUBJECTS.health("scheduler"), b""), SUBJECTS.health("scheduler"))
        await refused(resource, secured, lambda: resource.client.publish(SUBJECTS.control("campaign.stop"), b"{}"), SUBJECTS.control("campaign.stop"))


async def test_runners_report_telemetry_that_the_monitor_hears_and_only_resource_writes_artifacts(secured: Secured) -> None:
    async with connected(secured, "runner") as runner, connected(secured, "monitor") as monitor, connected(secured, "resource") as resource, connected(secured, "objective") as objective:
        heard: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_telemetry(msg) -> None:  # type: ignore[no-untyped-def]
            await heard.put(msg.data)

        await monitor.client.subscribe(SUBJECTS.all_telemetry, cb=on_telemetry)
        await monitor.client.flush()
        # telemetry is lossy by design: a runner beats every few seconds, so beat until heard
        for _ in range(20):
            await runner.client.publish(SUBJECTS.telemetry("perm", "e1"), b"heartbeat")
            with contextlib.suppress(TimeoutError):
                assert await asyncio.wait_for(heard.get(), 0.5) == b"heartbeat"
                break
        else:
            raise AssertionError(f"the monitor heard no heartbeat: runner {runner.errors}, monitor {monitor.errors}")
        digest = await Artifacts(resource.client.jetstream(), SUBJECTS.artifacts_bucket).put(b"snapshot bytes")
        assert await Artifacts(objective.client.jetstream(), SUBJECTS.artifacts_bucket).get(digest) == b"snapshot bytes"
        await refused(objective, secured, lambda: Artifacts(objective.client.jetstream(), SUBJECTS.artifacts_bucket).put(b"a forged snapshot"), f"$O.{SUBJECTS.artifacts_bucket}.C.", kind="Publish")


def test_a_whole_campaign_runs_with_every_service_on_its_own_user(secured: Secured, tmp_path: Path) -> None:
    instances = instance_names(SERVICES, 2)
    campaign = "secured-campaign"  # a private server: a fixed id keeps the idea search reproducible
    before = len(violations(secured.server.log_path))
    with Stack(tmp_path / "stack", runners=2, nats_url=secured.url, instance_env=service_credentials(instances, secured.passwords), client_auth=auth("cli", secured.passwords)):
        request = {"campaign": campaign, "paper_path": str(EXAMPLE), "budget": Budget(max_experiments=2).model_dump(), "pool": "cpu"}
        assert asyncio.run(request_start(secured.url_of("cli"), SUBJECTS, request))["accepted"]
        deadline = time.monotonic() + 240
        events = []
        while time.monotonic() < deadline and not any(e.event_type == "CampaignCompleted" for e in events):
            time.sleep(0.5)
            events = asyncio.run(campaign_events(secured.url_of("cli"), SUBJECTS, campaign))
    kinds = [e.event_type for e in events]
    assert "CampaignCompleted" in kinds, kinds[-15:]
    assert "MessageRejected" not in kinds
    assert next(e for e in events if e.event_type == "CampaignCompleted").outcome in ("certified", "not_improved")
    assert {"ResourcesPrepared", "ObjectiveSet", "EnvironmentReady", "IdeasProposed", "IdeaCleared", "JobCompleted", "ResultValidated"} <= set(kinds)
    assert_exactly_once(events)
    assert violations(secured.server.log_path)[before:] == [], "the server refused a service something it needs"

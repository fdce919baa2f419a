"""Attacks on the secured deployment (deploy/nats, each service on its own user) with raw nats-py and
one service's credentials: each is refused by the server, or recorded by the services as a dead
letter, and the campaign running meanwhile still ends as it would have without them.

Also measured here: the matrix of what each user may and may not do on the bus, compared with the
documented policy (deploy/nats/accounts.conf). Run with -s to see it printed.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest

from shared.cli import request_start
from shared.contracts import Budget, CampaignStarted, Event, JobStarted, SotaCertified
from shared.embedded import Stack, instance_names
from shared.history import StoredMessage, admitted_events, read_messages
from shared.subjects import SERVICES, Subjects
from tests.integration.secured_bus import Secured, auth, secured_deployment, service_credentials, violations
from tests.integration.test_nats_permissions import connected

pytestmark = pytest.mark.nats
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny-forecaster"
SUBJECTS = Subjects()
AGENTS = [s for s in SERVICES if s != "runner"]
USERS = [*SERVICES, "cli"]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    yield from secured_deployment(tmp_path_factory.mktemp("attacked-nats"))


# ---------------------------------------------------------------- the permission matrix


def other_agent(user: str) -> str:
    return "supervisor" if user == "scheduler" else "scheduler"


def actions(user: str) -> dict[str, tuple[str, str]]:
    """Action -> (kind, subject) as that user would attempt it."""
    own = "runner" if user == "runner" else user
    other = other_agent(user)
    return {
        "publish its own events": ("Publish", SUBJECTS.event(own, "matrix", "Probe")),
        "publish another service's events": ("Publish", SUBJECTS.event(other, "matrix", "Probe")),
        "queue work": ("Publish", SUBJECTS.work("matrix")),
        "start a campaign": ("Publish", SUBJECTS.control("campaign.start")),
        "write artifacts": ("Publish", f"$O.{SUBJECTS.artifacts_bucket}.C.matrix"),
        "report telemetry": ("Publish", SUBJECTS.telemetry("matrix", "e1")),
        "delete an agent's consumer": ("Publish", f"$JS.API.CONSUMER.DELETE.{SUBJECTS.events_stream}.{other}"),
        "pull an agent's consumer": ("Publish", f"$JS.API.CONSUMER.MSG.NEXT.{SUBJECTS.events_stream}.{other}"),
        "acknowledge for an agent": ("Publish", f"$JS.ACK.{SUBJECTS.events_stream}.{other}.1.1.1.1.0"),
        "read every reply": ("Subscription", "_INBOX.>"),
        "read another user's replies": ("Subscription", f"_INBOX_{other}.>"),
        "answer another's health probe": ("Subscription", SUBJECTS.health(other)),
    }


# What accounts.conf says each user may do (everything else is refused).
POLICY = {
    "publish its own events": set(SERVICES),
    "queue work": {"scheduler", "supervisor"},
    "start a campaign": {"cli"},
    "write artifacts": {"resource"},
    "report telemetry": {"runner"},
}


async def attempt(secured: Secured, user: str, kind: str, subject: str) -> bool:
    """True when the server let the user do it (no permissions violation came back)."""
    async with connected(secured, user) as session:
        if kind == "Publish":
            await session.client.publish(subject, b"{}")
        else:
            await session.client.subscribe(subject)
        await session.client.flush()
        for _ in range(10):
            if session.refusals():
                return False
            await asyncio.sleep(0.05)
        return not session.refusals()


def test_what_each_user_may_do_on_the_bus_is_the_documented_policy(secured: Secured) -> None:
    matrix = {user: {action: asyncio.run(attempt(secured, user, kind, subject)) for action, (kind, subject) in actions(user).items()} for user in USERS}
    width = max(len(a) for a in actions("cli"))
    print("\n" + " " * width + " | " + " | ".join(f"{u:^10}" for u in USERS))
    for action in actions("cli"):
        print(f"{action:<{width}} | " + " | ".join(f"{'allowed' if matrix[u][action] else 'refused':^10}" for u in USERS))
    for user in USERS:
        for action, allowed in matrix[user].items():
            assert allowed == (user in POLICY.get(action, set())), f"{user} may {'' if allowed else 'not '}{action}"


# ---------------------------------------------------------------- attacks during a campaign


def envelope(event: Event, producer: str) -> bytes:
    return event.model_copy(update={"event_id": uuid.uuid4(), "producer": producer, "time": datetime.now(UTC)}).model_dump_json().encode()


async def history(secured: Secured) -> list[StoredMessage]:
    client = await nats.connect(secured.url, **auth("admin", secured.passwords))
    try:
        return await read_messages(client.jetstream(), SUBJECTS.events_stream, SUBJECTS.all_events)
    finally:
        await client.close()


def events_of(messages: list[StoredMessage], campaign: str) -> list[Event]:
    return [e for e in admitted_events(SUBJECTS, messages) if e.campaign == campaign]


def wait_until_completed(secured: Secured, campaign: str, timeout: float = 300) -> list[StoredMessage]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = asyncio.run(history(secured))
        if any(e.event_type == "CampaignCompleted" for e in events_of(messages, campaign)):
            return messages
        time.sleep(1.0)
    raise AssertionError(f"{campaign} did not complete: {[e.event_type for e in events_of(asyncio.run(history(secured)), campaign)][-15:]}")


POISON_SUBJECTS = [
    "autosota.evt.runner.bad!campaign.JobStarted",
    f"autosota.evt.runner.{'c' * 81}.JobStarted",
    "autosota.evt.runner.poisoned.Nonsense",
    "autosota.evt.runner.poisoned.JobStarted",
]


async def poison(secured: Secured) -> None:
    """Messages that once stopped every agent for good, sent before the campaign starts."""
    async with connected(secured, "runner") as runner:
        js = runner.client.jetstream()
        for subject in POISON_SUBJECTS[:3]:
            await js.publish(subject, b'{"event_type": "JobStarted"}')
        await js.publish(POISON_SUBJECTS[3], b"x" * (2 * 1024 * 1024))  # over the event limit, under the server's
        wrong_campaign = JobStarted(campaign="elsewhere", experiment_id="e", runner="runner-1", delivery=1)
        await js.publish(SUBJECTS.event("runner", "poisoned", "JobStarted"), envelope(wrong_campaign, "runner-1"))
        # message ids of the scheduler's next events, spent first (deduplication is per stream)
        probe = envelope(JobStarted(campaign="poisoned", experiment_id="e", runner="runner-1", delivery=1), "runner-1")
        for n in range(1, 301):
            await js.publish(SUBJECTS.event("runner", "poisoned", "JobStarted"), probe, headers={"Nats-Msg-Id": f"scheduler:{n}"})


async def forge_during(secured: Secured, campaign: str) -> dict[str, str]:
    """Forgeries with three services' credentials while the campaign runs; returns what was refused by the server."""
    refused: dict[str, str] = {}
    async with connected(secured, "runner") as runner, connected(secured, "monitor") as monitor, connected(secured, "fix") as fix:
        certified = SotaCertified(
            campaign=campaign, idea_id="forged", params={}, metric="rmse", candidate_values=[0.01], baseline_values=[0.45],
            candidate_mean=0.01, baseline_mean=0.45, gain_vs_reproduced=0.44, gain_vs_reported=0.44, reported_value=0.45,
            test="welch", statistic=99.0, p_value=1e-12, alpha=0.05,
        )
        await runner.client.jetstream().publish(SUBJECTS.event("runner", campaign, "SotaCertified"), envelope(certified, "runner-1"))
        host_folder = CampaignStarted(campaign="hostile-snapshot", paper_path="/etc", budget=Budget())
        await monitor.client.jetstream().publish(SUBJECTS.event("monitor", "hostile-snapshot", "CampaignStarted"), envelope(host_folder, "monitor"))
        # refused by the server outright: another's consumer, everyone's replies
        for session, action in ((runner, lambda: runner.client.publish(f"$JS.API.CONSUMER.DELETE.{SUBJECTS.events_stream}.supervisor", b"")), (fix, lambda: fix.client.subscribe("_INBOX.>"))):
            await action()
            await session.client.flush()
            await asyncio.sleep(0.3)
            refused[session.user] = " ".join(session.refusals())
    return refused


def test_attacks_are_refused_or_recorded_and_the_campaigns_still_end_correctly(secured: Secured, tmp_path: Path) -> None:
    instances = instance_names(SERVICES, 2)
    campaign = "attacked-campaign"
    with Stack(tmp_path / "stack", runners=2, nats_url=secured.url, instance_env=service_credentials(instances, secured.passwords), client_auth=auth("cli", secured.passwords)):
        # Step 1: poison before the campaign: every agent must still process the campaign after it.
        asyncio.run(poison(secured))
        # Step 2: an oversized start request is answered with an error, not copied into events.
        huge = {"campaign": "huge-request", "paper_path": "x" * (5 * 1024 * 1024), "budget": Budget().model_dump(), "pool": "cpu"}
        answer = asyncio.run(request_start(secured.url_of("cli"), SUBJECTS, huge))
        assert not answer["accepted"] and "limit" in answer["error"]
        # Step 3: the campaign, with forgeries while it runs and its scheduler's consumer deleted under it.
        request = {"campaign": campaign, "paper_path": str(EXAMPLE), "budget": Budget(max_experiments=2).model_dump(), "pool": "cpu"}
        assert asyncio.run(request_start(secured.url_of("cli"), SUBJECTS, request))["accepted"]
        refused = asyncio.run(forge_during(secured, campaign))

        async def delete_scheduler_consumer() -> None:
            client = await nats.connect(secured.url, **auth("admin", secured.passwords))
            await client.jetstream().delete_consumer(SUBJECTS.events_stream, "scheduler")
            await client.close()

        asyncio.run(delete_scheduler_consumer())
        messages = wait_until_completed(secured, campaign)
        # Step 4: after all of it, a second campaign runs normally.
        second = {"campaign": "after-the-attacks", "paper_path": str(EXAMPLE), "budget": Budget(max_experiments=1).model_dump(), "pool": "cpu"}
        assert asyncio.run(request_start(secured.url_of("cli"), SUBJECTS, second))["accepted"]
        messages = wait_until_completed(secured, "after-the-attacks")

    events = events_of(messages, campaign)
    kinds = [e.event_type for e in events]
    completed = next(e for e in events if e.event_type == "CampaignCompleted")
    assert completed.outcome in ("certified", "not_improved"), completed.reason  # type: ignore[attr-defined]
    # the forged certification was never taken for one: only the supervisor's, after its verification runs
    assert all(e.producer == "supervisor" for e in events if e.event_type == "SotaCertified")
    if completed.outcome == "certified":  # type: ignore[attr-defined]
        assert "VerificationDispatched" in kinds and "forged" not in completed.reason  # type: ignore[attr-defined]
    assert {"ResourcesPrepared", "ObjectiveSet", "BaselineReproduced"} <= set(kinds)
    # the scheduler's events were not suppressed by the spent message ids: every dispatch reached the runners
    dispatched = [e for e in events if e.event_type == "ExperimentDispatched"]
    assert dispatched and all(any(j.event_type in ("JobCompleted", "JobFailed") and getattr(j, "experiment_id") == d.experiment_id for j in events) for d in dispatched)  # type: ignore[attr-defined]
    # no snapshot of the host folder was taken for the monitor's forged start
    assert [e for e in admitted_events(SUBJECTS, messages) if e.campaign == "hostile-snapshot" and e.event_type == "ResourcesPrepared"] == []
    # every forgery and poison is a dead letter that names what was published, recorded by the services
    rejections = [e for e in admitted_events(SUBJECTS, messages) if e.event_type == "MessageRejected"]
    by_scheduler = {e.subject: e.reason for e in rejections if e.producer == "scheduler"}  # type: ignore[attr-defined]
    assert "forged: SotaCertified belongs to supervisor" in by_scheduler[SUBJECTS.event("runner", campaign, "SotaCertified")]
    assert "forged: CampaignStarted belongs to scheduler" in by_scheduler[SUBJECTS.event("monitor", "hostile-snapshot", "CampaignStarted")]
    for subject in POISON_SUBJECTS:
        assert any(s.startswith(subject[:60]) for s in by_scheduler), f"no dead letter for {subject}"
    assert any("claims another service's ids" in reason for reason in by_scheduler.values())
    # what the server refused, it refused by name, and logged
    assert 'publish to "$js.api.consumer.delete' in refused["runner"].lower() and 'subscription to "_inbox.>"' in refused["fix"].lower()
    logged = violations(secured.server.log_path)
    assert f"runner Publish $JS.API.CONSUMER.DELETE.{SUBJECTS.events_stream}.supervisor" in logged and "fix Subscription _INBOX.>" in logged
    # the big start request left no event behind
    assert [m for m in messages if "huge-request" in m.subject] == []
    second_events = events_of(messages, "after-the-attacks")
    assert next(e for e in second_events if e.event_type == "CampaignCompleted").outcome in ("certified", "not_improved")  # type: ignore[attr-defined]
    json.dumps([m.subject for m in messages])  # every stored subject is printable: nothing undecodable was kept

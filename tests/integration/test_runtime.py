"""The kernel against a real NATS server: inbox, dead letters, outbox de-duplication, restarts."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import nats
import pytest
from eventsourcing.persistence import IntegrityError, Tracking

from services.resource.app import create_app
from services.resource.domain import ResourceDomain
from shared.contracts import Budget, CampaignStarted, ResourcesPrepared, parse_event
from shared.runtime import ServiceRuntime
from shared.store import CampaignLedger
from shared.settings import Settings

pytestmark = pytest.mark.nats
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny-forecaster"


def started(campaign: str, paper: Path = EXAMPLE) -> CampaignStarted:
    return CampaignStarted(campaign=campaign, paper_path=str(paper), budget=Budget(), event_id=uuid.uuid4(), producer="scheduler", time=datetime.now(UTC))


async def read_events(settings: Settings, expected: int, timeout: float = 10.0) -> list[dict]:
    """Every event in the namespace's events stream, waiting until at least `expected` are there."""
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while True:
            info = await js.stream_info(settings.subjects.events_stream)
            if info.state.messages >= expected or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        subscription = await js.subscribe(settings.subjects.all_events, ordered_consumer=True)
        found = []
        for _ in range(info.state.messages):
            message = await subscription.next_msg(timeout=5)
            try:
                found.append(json.loads(message.data))
            except ValueError:
                found.append({"raw": message.data.decode(errors="replace"), "subject": message.subject})
        return found
    finally:
        await client.close()


async def running(settings: Settings):
    app = create_app(settings)
    task = asyncio.create_task(app.run())
    runtime = app.runtime  # type: ignore[attr-defined]
    for _ in range(200):
        if runtime.ready:
            break
        await asyncio.sleep(0.05)
    assert runtime.ready, "resource service did not become ready"
    return app, task


async def test_malformed_messages_become_dead_letters_and_the_service_keeps_working(settings: Settings) -> None:
    app, task = await running(settings)
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    subjects = settings.subjects
    # Step 1: garbage, an unknown event type, and an event without its envelope.
    acks = [
        await js.publish(subjects.event("scheduler", "c1", "CampaignStarted"), b"\xff not json"),
        await js.publish(subjects.event("scheduler", "c1", "Nonsense"), json.dumps({"event_type": "Nonsense", "campaign": "c1"}).encode()),
        await js.publish(subjects.event("scheduler", "c1", "CampaignStarted"), json.dumps({"event_type": "CampaignStarted", "campaign": "c1", "paper_path": "/x", "budget": {}}).encode()),
    ]
    # Step 2: a valid event afterwards is still handled.
    await js.publish(subjects.event("scheduler", "c1", "CampaignStarted"), started("c1").model_dump_json().encode())
    events = await read_events(settings, expected=8)
    rejected = [e for e in events if e.get("event_type") == "MessageRejected"]
    assert [r["stream_sequence"] for r in rejected] == [ack.seq for ack in acks]
    assert "malformed message" in rejected[0]["reason"]
    assert "unknown event type 'Nonsense'" in rejected[1]["reason"]
    assert "lacks its envelope" in rejected[2]["reason"]
    prepared = [e for e in events if e.get("event_type") == "ResourcesPrepared"]
    assert len(prepared) == 1 and prepared[0]["causation_id"] is not None
    assert not task.done()
    await client.close()
    app.exit()
    await task


async def test_a_missing_paper_folder_is_a_recorded_failure(settings: Settings, tmp_path: Path) -> None:
    app, task = await running(settings)
    client = await nats.connect(settings.nats_url)
    await client.jetstream().publish(settings.subjects.event("scheduler", "c2", "CampaignStarted"), started("c2", tmp_path / "nowhere").model_dump_json().encode())
    events = await read_events(settings, expected=2)
    failed = [e for e in events if e.get("event_type") == "ResourcesFailed"]
    assert len(failed) == 1 and "is not a folder" in failed[0]["reason"]
    await client.close()
    app.exit()
    await task


async def test_restart_does_not_act_twice_and_republishing_the_outbox_adds_nothing(settings: Settings) -> None:
    # Step 1: the service handles one campaign start and stops.
    app, task = await running(settings)
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    await js.publish(settings.subjects.event("scheduler", "c3", "CampaignStarted"), started("c3").model_dump_json().encode())
    assert len(await read_events(settings, expected=2)) == 2
    app.exit()
    await task
    # Step 2: a new process over the same store resumes after the tracked position: nothing new.
    app, task = await running(settings)
    await js.publish(settings.subjects.event("scheduler", "c4", "CampaignStarted"), started("c4").model_dump_json().encode())
    events = await read_events(settings, expected=4)
    assert [e["event_type"] for e in events] == ["CampaignStarted", "ResourcesPrepared", "CampaignStarted", "ResourcesPrepared"]
    # Step 3: re-publishing the whole outbox from the start is dropped by the server as duplicates.
    runtime = app.runtime  # type: ignore[attr-defined]
    assert await runtime.relay_once(start_after=0) == 2
    assert len(await read_events(settings, expected=5, timeout=1.0)) == 4
    await client.close()
    app.exit()
    await task


def test_an_event_and_its_tracking_record_are_saved_together_once(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, namespace="unused")
    runtime = ServiceRuntime("resource", settings, ResourceDomain())
    event = started("c5")
    prepared = ResourcesPrepared(campaign="c5", snapshot_sha256="ab" * 32, files={}, size_bytes=1)
    # Step 1: the first delivery records the observation, the decision and the position.
    runtime.commit("c5", [prepared], tracking=Tracking("AUTOSOTA_EVENTS/resource", 7), observed=event, cause=event)
    assert runtime.store.recorder.has_tracking_id("AUTOSOTA_EVENTS/resource", 7)
    # Step 2: a second delivery of the same message cannot be saved again, and changes nothing.
    with pytest.raises(IntegrityError):
        runtime.commit("c5", [prepared], tracking=Tracking("AUTOSOTA_EVENTS/resource", 7), observed=event, cause=event)
    ledger = CampaignLedger.create_id("resource", "c5")
    notifications = [n for n in runtime.store.recorder.select_notifications(start=1, limit=100) if n.originator_id == ledger]
    assert len(notifications) == 3  # opened, observed, emitted
    # Step 3: the state survives a restart, folded from the ledger.
    runtime.store.close()
    again = ServiceRuntime("resource", settings, ResourceDomain())
    assert again.state("c5").snapshot_sha256 == "ab" * 32
    emitted = again.store.mapper.to_domain_event(notifications[-1])
    assert parse_event(emitted.message).causation_id == event.event_id


async def test_a_service_does_not_fold_its_own_events_twice(settings: Settings) -> None:
    app, task = await running(settings)
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    await js.publish(settings.subjects.event("scheduler", "c6", "CampaignStarted"), started("c6").model_dump_json().encode())
    await read_events(settings, expected=2)
    runtime = app.runtime  # type: ignore[attr-defined]
    # Step 1: wait until the service has consumed its own ResourcesPrepared from the stream.
    for _ in range(100):
        if runtime.store.recorder.has_tracking_id(f"{settings.subjects.events_stream}/resource", 2):
            break
        await asyncio.sleep(0.05)
    # Step 2: its ledger holds the observed start and one emitted event, not a second copy.
    ledger_id = CampaignLedger.create_id("resource", "c6")
    kinds = [type(e).__name__ for e in runtime.store.events.get(ledger_id)]
    assert kinds == ["Opened", "Observed", "Emitted"]
    await client.close()
    app.exit()
    await task


async def test_a_plug_ins_own_events_are_ignored_without_dead_letters(settings: Settings) -> None:
    app, task = await running(settings)
    client = await nats.connect(settings.nats_url)
    js = client.jetstream()
    await js.publish(settings.subjects.event("leaderboard", "c7", "LeaderboardUpdated"), b'{"event_type": "LeaderboardUpdated", "rank": 1}')
    await js.publish(settings.subjects.event("scheduler", "c7", "CampaignStarted"), started("c7").model_dump_json().encode())
    events = await read_events(settings, expected=3)
    assert [e.get("event_type") for e in events] == ["LeaderboardUpdated", "CampaignStarted", "ResourcesPrepared"]
    await client.close()
    app.exit()
    await task


def test_an_event_too_large_for_the_bus_becomes_a_failure_of_its_campaign(tmp_path: Path) -> None:
    from shared.admission import MAX_EVENT_BYTES

    runtime = ServiceRuntime("resource", Settings(data_dir=tmp_path, namespace="unused"), ResourceDomain())
    files = {f"f{i:06d}.py": "ab" * 32 for i in range(MAX_EVENT_BYTES // 70 + 10)}
    huge = ResourcesPrepared.model_construct(campaign="c8", snapshot_sha256="ab" * 32, files=files, size_bytes=1)  # past the contract's own limit
    small = ResourcesPrepared(campaign="c8", snapshot_sha256="cd" * 32, files={}, size_bytes=1)
    stamped = runtime.commit("c8", [huge, small])
    assert [e.event_type for e in stamped] == ["ServiceFailed", "ResourcesPrepared"]
    assert "over the" in stamped[0].reason and stamped[0].stage == "publishing"  # type: ignore[attr-defined]


def test_a_message_the_server_refuses_is_recorded_and_does_not_block_the_ones_after_it(tmp_path: Path) -> None:
    from shared.bus import EmbeddedNats

    config = tmp_path / "small.conf"
    config.write_text("max_payload: 65536\n")
    server = EmbeddedNats(tmp_path / "nats", config=config)
    server.start()
    settings = Settings(nats_url=server.url, data_dir=tmp_path / "data")

    async def scenario() -> list[dict]:
        runtime = ServiceRuntime("resource", settings, ResourceDomain())
        big = ResourcesPrepared(campaign="c9", snapshot_sha256="ab" * 32, files={f"f{i:05d}.py": "ab" * 32 for i in range(1500)}, size_bytes=1)
        after = ResourcesPrepared(campaign="c9", snapshot_sha256="cd" * 32, files={}, size_bytes=1)
        runtime.commit("c9", [big, after])
        await runtime.start()
        try:
            for _ in range(100):
                published = await read_events(settings, expected=2, timeout=0.2)
                if any(e.get("event_type") == "ServiceFailed" for e in published):
                    return published
                await asyncio.sleep(0.1)
            return published
        finally:
            await runtime.stop()

    try:
        published = asyncio.run(scenario())
    finally:
        server.stop()
    kinds = [e.get("event_type") for e in published]
    assert kinds == ["ResourcesPrepared", "ServiceFailed"], kinds  # the small one went out; the big one is a failure
    assert published[0]["snapshot_sha256"] == "cd" * 32 and "refused ResourcesPrepared" in published[1]["reason"]

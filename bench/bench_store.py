"""Benchmark of the event store: an inbox commit and a campaign rebuild, each as a ratio
against raw sqlite3 doing the equivalent work on the same machine in the same run.

    python bench/bench_store.py [--n 1000] [--ledger 1000] [--rounds 5] [--rebuild-rounds 15]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

from eventsourcing.persistence import Tracking

from shared.contracts import Budget, CampaignStarted, Event, ResourcesPrepared, parse_event
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from shared.store import EMITTED_TOPIC, OBSERVED_TOPIC, CampaignLedger

CONSUMER = "AUTOSOTA_EVENTS/resource"
SERVICE = "resource"


@dataclass
class CountingState:
    started: bool = False
    prepared: int = 0


class CountingDomain:
    """As small as a real service's domain: two event types folded into two fields."""

    relevant = frozenset({"CampaignStarted", "ResourcesPrepared"})

    def initial_state(self, campaign: str) -> CountingState:
        return CountingState()

    def evolve(self, state: CountingState, event: Event) -> CountingState:
        if isinstance(event, CampaignStarted):
            state.started = True
        elif isinstance(event, ResourcesPrepared):
            state.prepared += 1
        return state


def incoming_started(campaign: str) -> CampaignStarted:
    """A CampaignStarted as it arrives from the bus: envelope already stamped by its producer."""
    return CampaignStarted(
        campaign=campaign,
        event_id=uuid4(),
        producer="scheduler",
        time=datetime.now(UTC),
        paper_path="/papers/example",
        budget=Budget(),
    )


def prepared(campaign: str) -> ResourcesPrepared:
    files = {f"src/module_{index}.py": f"{index:064x}" for index in range(8)}
    return ResourcesPrepared(campaign=campaign, snapshot_sha256="ab" * 32, files=files, size_bytes=123_456)


# ---------------------------------------------------------------- raw sqlite3, eventsourcing's layout


class RawStore:
    """sqlite3 with eventsourcing's connection settings (autocommit, explicit BEGIN, WAL) and tables."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=True, timeout=30)
        self.connection.execute("PRAGMA journal_mode=WAL;")
        self.connection.execute(
            "CREATE TABLE IF NOT EXISTS stored_events (originator_id TEXT, originator_version INTEGER, "
            "topic TEXT, state BLOB, PRIMARY KEY (originator_id, originator_version))"
        )
        self.connection.execute(
            "CREATE TABLE IF NOT EXISTS tracking (application_name TEXT, notification_id INTEGER, "
            "PRIMARY KEY (application_name)) WITHOUT ROWID"
        )
        self.version = 0

    def commit(self, originator_id: str, observed: dict, emitted: dict, subject: str, position: int) -> None:
        cursor = self.connection.cursor()
        cursor.execute("BEGIN")
        # the same JSON documents eventsourcing stores: a timestamp, the subject if emitted, the message
        timestamp = {"_type_": "datetime_iso", "_data_": datetime.now(UTC).isoformat()}
        rows = ((OBSERVED_TOPIC, {"timestamp": timestamp, "message": observed}), (EMITTED_TOPIC, {"timestamp": timestamp, "subject": subject, "message": emitted}))
        for topic, document in rows:
            self.version += 1
            state = json.dumps(document, separators=(",", ":")).encode()
            cursor.execute("INSERT INTO stored_events VALUES (?,?,?,?)", (originator_id, self.version, topic, state))
        # eventsourcing's single-row tracking upsert
        cursor.execute(
            "INSERT INTO tracking VALUES (:application_name, :notification_id) ON CONFLICT (application_name) "
            "DO UPDATE SET notification_id = :notification_id WHERE tracking.notification_id < :notification_id "
            "RETURNING notification_id",
            {"application_name": CONSUMER, "notification_id": position},
        )
        cursor.fetchall()
        self.connection.commit()

    def close(self) -> None:
        self.connection.close()


# ---------------------------------------------------------------- measurements


def elapsed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def runtime_for(directory: Path) -> ServiceRuntime[CountingState]:
    return ServiceRuntime(SERVICE, Settings(data_dir=directory), CountingDomain())


@dataclass(frozen=True)
class CommitResult:
    store_rate: float
    raw_rate: float
    store_cpu_seconds: float  # this process's CPU time per commit; the rest of the wall time is fsync
    raw_cpu_seconds: float


def bench_commit(directory: Path, n: int, rounds: int) -> CommitResult:
    runtime = runtime_for(directory)
    campaign = "inbox"
    started = incoming_started(campaign)
    outgoing = prepared(campaign)  # built once: the runtime stamps a copy, and building it is the service's cost
    position = 0

    def store_commits() -> None:
        nonlocal position
        for _ in range(n):
            position += 1
            runtime.commit(campaign, [outgoing], tracking=Tracking(CONSUMER, position), observed=started, cause=started)

    raw = RawStore(directory / "raw.sqlite")
    observed_message = started.model_dump(mode="json")
    emitted = runtime.commit(campaign, [outgoing])[0]
    emitted_message = emitted.model_dump(mode="json")
    subject = runtime.subjects.event(emitted.owner, campaign, emitted.event_type)
    originator_id = CampaignLedger.create_id(SERVICE, campaign).hex
    raw_position = 0

    def raw_commits() -> None:
        nonlocal raw_position
        for _ in range(n):
            raw_position += 1
            raw.commit(originator_id, observed_message, emitted_message, subject, raw_position)

    warmup = max(1, n // 20)
    for _ in range(warmup):
        position += 1
        runtime.commit(campaign, [outgoing], tracking=Tracking(CONSUMER, position), observed=started, cause=started)
        raw_position += 1
        raw.commit(originator_id, observed_message, emitted_message, subject, raw_position)
    store_rate, raw_rate, store_cpu, raw_cpu = [], [], [], []
    for _ in range(rounds):  # interleaved, so drift in the disk or CPU hits both alike
        cpu = time.process_time()
        store_rate.append(n / elapsed(store_commits))
        store_cpu.append((time.process_time() - cpu) / n)
        cpu = time.process_time()
        raw_rate.append(n / elapsed(raw_commits))
        raw_cpu.append((time.process_time() - cpu) / n)
    runtime.store.close()
    raw.close()
    return CommitResult(statistics.median(store_rate), statistics.median(raw_rate), statistics.median(store_cpu), statistics.median(raw_cpu))


def bench_rebuild(directory: Path, entries: int, rounds: int) -> tuple[float, float, float]:
    campaign = "ledger"
    writer = runtime_for(directory)
    per_commit = 100
    for offset in range(0, entries, per_commit):
        writer.commit(campaign, [prepared(campaign) for _ in range(min(per_commit, entries - offset))])
    assert writer.state(campaign).prepared == entries
    writer.store.close()

    connection = sqlite3.connect(directory / "stores" / f"{SERVICE}.sqlite", isolation_level=None)
    originator_id = CampaignLedger.create_id(SERVICE, campaign).hex
    query = "SELECT state FROM stored_events WHERE originator_id=? ORDER BY originator_version"

    def store_rebuild() -> float:
        runtime = runtime_for(directory)  # a restarted service: nothing cached
        runtime.state("warmup")  # opens the connection outside the timed fold
        seconds = elapsed(lambda: runtime.state(campaign))
        assert runtime.state(campaign).prepared == entries
        runtime.store.close()
        return seconds

    def raw_decode() -> list[dict]:
        return [json.loads(row[0]) for row in connection.execute(query, (originator_id,))]

    def raw_decode_and_validate() -> int:
        messages = (stored.get("message") for stored in raw_decode())
        return sum(1 for message in messages if isinstance(message, dict) and parse_event(message))

    assert len(raw_decode()) == entries + 1  # the ledger's Opened entry, then the emitted ones
    store_rebuild()
    raw_decode_and_validate()
    store_timings, raw_timings, validated_timings = [], [], []
    for _ in range(rounds):
        store_timings.append(store_rebuild())
        raw_timings.append(elapsed(raw_decode))
        validated_timings.append(elapsed(raw_decode_and_validate))
    connection.close()
    return statistics.median(store_timings), statistics.median(raw_timings), statistics.median(validated_timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="inbox commits per round")
    parser.add_argument("--ledger", type=int, default=1000, help="entries in the ledger that is rebuilt")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of inbox commits")
    parser.add_argument("--rebuild-rounds", type=int, default=15)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="autosota-bench-") as temporary:
        directory = Path(temporary)
        commit = bench_commit(directory / "commit", args.n, args.rounds)
        store_seconds, raw_seconds, validated_seconds = bench_rebuild(directory / "rebuild", args.ledger, args.rebuild_rounds)

    print(f"inbox commit: 1 observed + 1 emitted event + tracking, {args.n} commits x {args.rounds} rounds (median)")
    print(f"  {'ServiceRuntime.commit':<34}{commit.store_rate:>10.0f} commits/s {commit.store_cpu_seconds * 1e6:>8.0f} us CPU/commit")
    print(f"  {'raw sqlite3, same rows':<34}{commit.raw_rate:>10.0f} commits/s {commit.raw_cpu_seconds * 1e6:>8.0f} us CPU/commit")
    print(f"  {'ratio store/raw, wall time':<34}{commit.raw_rate / commit.store_rate:>10.2f} x")
    print(f"  {'ratio store/raw, CPU time':<34}{commit.store_cpu_seconds / commit.raw_cpu_seconds:>10.2f} x")
    print(f"rebuild of one campaign's state from a ledger of {args.ledger} entries (median of {args.rebuild_rounds})")
    print(f"  {'ServiceRuntime.state':<34}{store_seconds * 1000:>10.1f} ms")
    print(f"  {'raw sqlite3 + json.loads':<34}{raw_seconds * 1000:>10.1f} ms")
    print(f"  {'raw + parse_event (validation)':<34}{validated_seconds * 1000:>10.1f} ms")
    print(f"  {'ratio store/raw':<34}{store_seconds / raw_seconds:>10.2f} x")
    print(f"  {'ratio store/(raw + parse_event)':<34}{store_seconds / validated_seconds:>10.2f} x")


if __name__ == "__main__":
    main()

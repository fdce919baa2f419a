"""Benchmark of the outbox relay against a real NATS server: messages per second from the store
onto the events stream, as ratios against raw nats-py publishing the same payloads in the same run.

    NATS_URL=nats://127.0.0.1:4222 python bench/bench_outbox.py [--n 2000] [--rounds 3]

Works in a namespace of its own and deletes its streams and bucket afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from uuid import uuid4

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from shared.bus import stream_configs
from shared.contracts import Event, ResourcesPrepared
from shared.runtime import ServiceRuntime
from shared.settings import Settings
from shared.subjects import Subjects

CAMPAIGN = "outbox"
SERVICE = "resource"
DEDUP_HEADER = "Nats-Msg-Id"


class StatelessDomain:
    """The relay does not depend on state: nothing is folded."""

    relevant: frozenset[str] = frozenset()

    def initial_state(self, campaign: str) -> None:
        return None

    def evolve(self, state: None, event: Event) -> None:
        return None


def prepared() -> ResourcesPrepared:
    """A typical small event: a snapshot digest and a handful of file hashes (about 1 kB of JSON)."""
    files = {f"src/module_{index}.py": f"{index:064x}" for index in range(8)}
    return ResourcesPrepared(campaign=CAMPAIGN, snapshot_sha256="ab" * 32, files=files, size_bytes=123_456)


class Arrivals:
    """Counts messages seen by a core subscriber, so every path is timed until the last one lands."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done = asyncio.Event()

    def expect(self, count: int) -> None:
        self.count, self.target = 0, count
        self.done.clear()

    async def on_message(self, msg: Msg) -> None:
        self.count += 1
        if self.count >= self.target:
            self.done.set()


async def timed(arrivals: Arrivals, count: int, send: Callable[[], Awaitable[None]], timeout: float = 60.0) -> float:
    """Messages per second from the first send until a subscriber has seen all `count`."""
    arrivals.expect(count)
    started = time.perf_counter()
    await send()
    await asyncio.wait_for(arrivals.done.wait(), timeout)
    return count / (time.perf_counter() - started)


def emit(runtime: ServiceRuntime[None], count: int) -> list[Event]:
    """Commit `count` events, one per commit as a service would; no await, so the relay waits."""
    return [runtime.commit(CAMPAIGN, [prepared()])[0] for _ in range(count)]


async def ignore_error(error: Exception) -> None:
    """The connect failure is reported once, by main; nats-py would also log every attempt."""


async def stream_messages(client: Client, stream: str) -> int:
    return (await client.jetstream().stream_info(stream)).state.messages


async def remove_topology(client: Client, subjects: Subjects) -> None:
    js = client.jetstream()
    for config in stream_configs(subjects):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(config.name)  # type: ignore[arg-type]
    with contextlib.suppress(NotFoundError):
        await js.delete_object_store(subjects.artifacts_bucket)


async def bench(n: int, rounds: int, directory: Path) -> dict[str, float]:
    """Median msgs/s of each path over `rounds` rounds, the three paths interleaved in each round."""
    settings = Settings(data_dir=directory, namespace=f"bench{uuid4().hex[:10]}")
    subjects = settings.subjects
    runtime: ServiceRuntime[None] = ServiceRuntime(SERVICE, settings, StatelessDomain())
    try:  # one retry only: a missing server fails here instead of being retried for ever
        client = await nats.connect(settings.nats_url, name="bench-outbox", connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0.1, error_cb=ignore_error)
    except Exception as error:
        raise SystemExit(f"no NATS server at {settings.nats_url} (set NATS_URL): {error!r}") from None
    js = client.jetstream()
    arrivals = Arrivals()
    core_subject = subjects.control("bench")  # no stream captures control subjects
    await client.subscribe(subjects.all_events, cb=arrivals.on_message, pending_msgs_limit=10 * n)
    await client.subscribe(core_subject, cb=arrivals.on_message, pending_msgs_limit=10 * n)
    await client.flush()

    async def relayed_by_runtime() -> None:
        await asyncio.sleep(0)  # the runtime's own relay task publishes; nothing to send here

    async def jetstream_publishes(prefix: str, batch: list[tuple[str, bytes]]) -> None:
        for index, (subject, body) in enumerate(batch):
            await js.publish(subject, body, headers={DEDUP_HEADER: f"{prefix}:{index}"})

    async def core_publishes(batch: list[tuple[str, bytes]]) -> None:
        for _, body in batch:
            await client.publish(core_subject, body)
        await client.flush()

    rates: dict[str, list[float]] = {"relay": [], "jetstream": [], "core": []}
    try:
        await runtime.start()
        stored = 0
        for round_number in range(rounds + 1):  # round 0 is a warm-up and is not counted
            count = max(1, n // 20) if round_number == 0 else n
            # outbox relay: the events are committed first, then timed until the last is on the bus
            events = emit(runtime, count)
            relay_rate = await timed(arrivals, count, relayed_by_runtime)
            last = await js.get_last_msg(subjects.events_stream, subjects.all_events)
            assert last.headers and last.headers.get(DEDUP_HEADER, "").startswith(f"{runtime.instance}:"), last.headers

            payloads = [(subjects.event(event.owner, CAMPAIGN, event.event_type), json.dumps(event.model_dump(mode="json")).encode()) for event in events]
            jetstream_rate = await timed(arrivals, count, lambda: jetstream_publishes(f"bench-{round_number}", payloads))
            core_rate = await timed(arrivals, count, lambda: core_publishes(payloads))

            stored += 2 * count
            held = await stream_messages(client, subjects.events_stream)
            assert held == stored, f"events stream holds {held} messages, expected {stored}"
            if round_number:
                for path, rate in (("relay", relay_rate), ("jetstream", jetstream_rate), ("core", core_rate)):
                    rates[path].append(rate)
        return {path: statistics.median(values) for path, values in rates.items()}
    finally:
        await runtime.stop()
        await remove_topology(client, subjects)
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="messages per path and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="autosota-bench-") as temporary:
        rates = asyncio.run(bench(args.n, args.rounds, Path(temporary)))
    relay, jetstream, core = rates["relay"], rates["jetstream"], rates["core"]
    print(f"outbox relay vs raw nats-py, {args.n} messages per path x {args.rounds} rounds (median), events stream on file storage")
    print(f"  {'outbox relay (Nats-Msg-Id)':<36}{relay:>10.0f} msgs/s")
    print(f"  {'raw JetStream publish (Nats-Msg-Id)':<36}{jetstream:>10.0f} msgs/s")
    print(f"  {'raw core NATS publish':<36}{core:>10.0f} msgs/s")
    print(f"  {'relay/JetStream (time per message)':<36}{jetstream / relay:>10.2f} x")
    print(f"  {'relay/core (time per message)':<36}{core / relay:>10.2f} x")
    print(f"  {'JetStream/core (time per message)':<36}{core / jetstream:>10.2f} x")


if __name__ == "__main__":
    main()

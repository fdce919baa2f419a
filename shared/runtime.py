"""What every service runs on: the inbox, the outbox relay, and per-campaign state.

Inbox: a message is handled, and the events it causes are saved together with a tracking
record of its stream position, in one transaction. A redelivered message is recognised by its
tracking record and acknowledged without acting twice.

Outbox: a relay follows the store's notification log and publishes each emitted message with
`Nats-Msg-Id = <instance>:<notification id>`, so a crash between publishing and remembering
what was published cannot put a message on the bus twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from eventsourcing.application import ProcessingEvent
from eventsourcing.domain import TAggregateID
from eventsourcing.persistence import Tracking
from faststream import FastStream
from faststream.nats import ConsumerConfig, JStream, NatsBroker, NatsMessage, PullSub
from faststream.middlewares import AckPolicy
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy

from shared.bus import Artifacts, broker_security, client_auth, connect, ensure_topology
from shared.contracts import (
    OWNED_EVENTS,
    ContractError,
    Event,
    MessageRejected,
    parse_event,
)
from shared.settings import Settings
from shared.store import EMITTED_TOPIC, CampaignLedger, ServiceStore, postgres_env, sqlite_env

log = logging.getLogger("autosota")

State = TypeVar("State")

OUTBOX_TRACKING = "outbox"
UNKNOWN_CAMPAIGN = "unknown"


@dataclass(frozen=True)
class Outgoing:
    """A message for another stream than the events stream (a work item), sent via the outbox."""

    subject: str
    body: dict[str, Any]


Output = Event | Outgoing


class Domain(Protocol[State]):
    """A service's pure part: its per-campaign state and how events change it."""

    relevant: frozenset[str]

    def initial_state(self, campaign: str) -> State: ...

    def evolve(self, state: State, event: Event) -> State: ...


@dataclass
class Context:
    """What a reaction may use: the clock reading, the artifact store, the bus, settings."""

    now: datetime
    runtime: ServiceRuntime[Any]
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def artifacts(self) -> Artifacts:
        return self.runtime.artifacts

    @property
    def settings(self) -> Settings:
        return self.runtime.settings


Reaction = Callable[[State, Event, Context], Awaitable[list[Output]]]
Command = Callable[[State, Context], Awaitable[list[Output]]]


class ServiceRuntime(Generic[State]):
    def __init__(self, service: str, settings: Settings, domain: Domain[State], instance: str | None = None) -> None:
        self.service = service
        self.instance = instance or service
        self.settings = settings
        self.subjects = settings.subjects
        self.domain = domain
        env = postgres_env(self.instance, settings) if settings.persistence == "postgres" else sqlite_env(settings.store_path(self.instance))
        self.store = ServiceStore(self.instance, env)
        self._states: dict[str, State] = {}
        self._ledgers: dict[str, CampaignLedger] = {}
        self._lock = asyncio.Lock()
        self._outbox_ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.nc: Client | None = None
        self.js: JetStreamContext | None = None
        self._artifacts: Artifacts | None = None
        self.ready = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.nc = await connect(self.settings.nats_servers, f"{self.instance}-runtime", **client_auth(self.settings))
        self.js = self.nc.jetstream()
        await ensure_topology(self.js, self.subjects, self.settings.stream_replicas)
        self._artifacts = Artifacts(self.js, self.subjects.artifacts_bucket)
        self._tasks.append(asyncio.create_task(self._relay_forever(), name=f"{self.instance}-relay"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.nc and not self.nc.is_closed:
            await self.nc.drain()
        self.store.close()

    def spawn(self, coroutine: Awaitable[None], name: str) -> None:
        """Run a background loop (a ticker, say) that stops with the service."""
        self._tasks.append(asyncio.create_task(coroutine, name=name))  # type: ignore[arg-type]

    @property
    def artifacts(self) -> Artifacts:
        assert self._artifacts is not None, "runtime not started"
        return self._artifacts

    def clock(self) -> datetime:
        return datetime.now(UTC)

    # ------------------------------------------------------------ state

    def _ledger(self, campaign: str) -> CampaignLedger:
        ledger = self._ledgers.get(campaign)
        if ledger is None:
            ledger_id = CampaignLedger.create_id(self.instance, campaign)
            try:
                ledger = self.store.repository.get(ledger_id)
            except Exception:  # AggregateNotFoundError: a campaign this service has not seen yet
                ledger = CampaignLedger(service=self.instance, campaign=campaign)
            self._ledgers[campaign] = ledger
        return ledger

    def state(self, campaign: str) -> State:
        """The service's state for a campaign, folded from its ledger on first use."""
        if campaign not in self._states:
            state = self.domain.initial_state(campaign)
            ledger_id = CampaignLedger.create_id(self.instance, campaign)
            for stored in self.store.events.get(ledger_id):
                message = getattr(stored, "message", None)
                if isinstance(message, dict) and message.get("event_type") in self.domain.relevant:
                    state = self.domain.evolve(state, parse_event(message))
            self._states[campaign] = state
        return self._states[campaign]

    def campaigns(self) -> list[str]:
        return list(self._states)

    # ------------------------------------------------------------ inbox

    async def consume(self, msg: NatsMessage, react: Reaction[State], consumer: str) -> None:
        """Handle one message from a durable consumer, exactly once in effect."""
        metadata = msg.raw_message.metadata
        tracking = Tracking(consumer, metadata.sequence.stream)
        async with self._lock:
            if self.store.recorder.has_tracking_id(tracking.application_name, tracking.notification_id):
                await msg.ack()
                return
            keepalive = asyncio.create_task(_keep_in_progress(msg))
            try:
                await self._handle(msg.raw_message.subject, msg.body, react, tracking)
            finally:
                keepalive.cancel()
            await msg.ack()

    async def _handle(self, subject: str, body: bytes, react: Reaction[State], tracking: Tracking | None) -> None:
        try:
            event = parse_event(json.loads(body))
        except (ContractError, ValueError, UnicodeDecodeError) as error:
            self._reject(subject, body, f"malformed message: {error}", tracking)
            return
        if event.producer == self.instance:
            # Our own event coming back: it was folded into our state when we emitted it.
            self.commit(event.campaign, [], tracking=tracking)
            return
        try:
            self._commit_reaction(event, await react(self._evolved(event), event, self._context()), tracking)
        except Exception as error:  # a bug or bad input must not kill the service nor lose the message
            log.exception("%s failed to handle %s", self.instance, event.event_type)
            self._reject(subject, body, f"handling {event.event_type} failed: {error!r}", tracking, event.campaign)

    def _evolved(self, event: Event) -> State:
        state = copy.deepcopy(self.state(event.campaign))
        if event.event_type in self.domain.relevant:
            state = self.domain.evolve(state, event)
        return state

    def _commit_reaction(self, event: Event, outputs: list[Output], tracking: Tracking | None) -> None:
        observed = event if event.event_type in self.domain.relevant else None
        self.commit(event.campaign, outputs, tracking=tracking, observed=observed, cause=event)

    def _reject(self, subject: str, body: bytes, reason: str, tracking: Tracking | None, campaign: str | None = None) -> None:
        if campaign is None:
            campaign = _campaign_from_subject(subject) or UNKNOWN_CAMPAIGN
        rejection = MessageRejected(
            campaign=campaign,
            subject=subject,
            reason=reason[:2000],
            excerpt=body[:500].decode("utf-8", "replace"),
            stream_sequence=tracking.notification_id if tracking else None,
        )
        self.commit(campaign, [rejection], tracking=tracking)

    # ------------------------------------------------------------ commands and ticks

    async def command(self, campaign: str, decide: Command[State]) -> list[Output]:
        """Act without an incoming bus event (a control request, a clock tick)."""
        async with self._lock:
            state = copy.deepcopy(self.state(campaign))
            outputs = await decide(state, self._context())
            if outputs:
                self.commit(campaign, outputs)
            return outputs

    # ------------------------------------------------------------ commit

    def _context(self) -> Context:
        return Context(now=self.clock(), runtime=self)

    def commit(
        self,
        campaign: str,
        outputs: Iterable[Output],
        tracking: Tracking | None = None,
        observed: Event | None = None,
        cause: Event | None = None,
    ) -> list[Event]:
        """Save observed input, emitted outputs and the tracking record in one transaction."""
        try:
            return self._commit(campaign, outputs, tracking, observed, cause)
        except Exception:
            # Nothing was saved: drop the in-memory copies so they are reloaded from the store.
            self._ledgers.pop(campaign, None)
            self._states.pop(campaign, None)
            raise

    def _commit(
        self,
        campaign: str,
        outputs: Iterable[Output],
        tracking: Tracking | None,
        observed: Event | None,
        cause: Event | None,
    ) -> list[Event]:
        ledger = self._ledger(campaign)
        state = self.state(campaign)
        stamped: list[Event] = []
        if observed is not None:
            ledger.observe(message=observed.model_dump(mode="json"))
            state = self.domain.evolve(copy.deepcopy(state), observed)
        for output in outputs:
            if isinstance(output, Event):
                event = self._stamp(output, ledger, cause)
                stamped.append(event)
                subject_owner = output.owner if output.owner != "*" else self.service
                ledger.emit(subject=self.subjects.event(subject_owner, event.campaign, event.event_type), message=event.model_dump(mode="json"))
                if event.event_type in self.domain.relevant:
                    state = self.domain.evolve(state, event)
            else:
                ledger.emit(subject=output.subject, message=output.body)
        processing: ProcessingEvent[TAggregateID] = ProcessingEvent(tracking=tracking)
        processing.collect_events(ledger)
        self.store._record(processing)  # noqa: SLF001 - the one place events and tracking are saved together
        self._states[campaign] = state
        self._outbox_ready.set()
        return stamped

    def _stamp(self, event: Event, ledger: CampaignLedger, cause: Event | None) -> Event:
        return event.model_copy(
            update={
                "event_id": ledger.next_event_id(),
                "producer": self.instance,
                "time": self.clock(),
                "causation_id": event.causation_id or (cause.event_id if cause else None),
            }
        )

    # ------------------------------------------------------------ outbox relay

    async def _relay_forever(self) -> None:
        while True:
            try:
                published = await self.relay_once()
            except Exception:
                log.exception("%s relay failed; retrying", self.instance)
                await asyncio.sleep(0.5)
                continue
            if not published:
                self._outbox_ready.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._outbox_ready.wait(), timeout=1.0)

    async def relay_once(self, batch: int = 200, start_after: int | None = None) -> int:
        """Publish the next emitted messages. Re-publishing from an earlier position is safe:
        the server drops what it has seen within the duplicate window by its Nats-Msg-Id."""
        assert self.js is not None
        position = start_after if start_after is not None else self.store.recorder.max_tracking_id(OUTBOX_TRACKING) or 0
        notifications = self.store.recorder.select_notifications(
            start=position, limit=batch, topics=[EMITTED_TOPIC], inclusive_of_start=False
        )
        for notification in notifications:
            emitted = self.store.mapper.to_domain_event(notification)
            await self.js.publish(
                emitted.subject,  # type: ignore[attr-defined]
                json.dumps(emitted.message).encode(),  # type: ignore[attr-defined]
                headers={"Nats-Msg-Id": f"{self.instance}:{notification.id}"},
            )
        if notifications and notifications[-1].id > (self.store.recorder.max_tracking_id(OUTBOX_TRACKING) or 0):
            self.store.recorder.insert_tracking(Tracking(OUTBOX_TRACKING, notifications[-1].id))
        return len(notifications)

    # ------------------------------------------------------------ FastStream wiring

    def subscribe_events(self, broker: NatsBroker, react: Reaction[State], description: str) -> None:
        """A durable pull consumer on all events, one message in flight so order is kept."""
        consumer = f"{self.subjects.events_stream}/{self.instance}"

        @broker.subscriber(
            self.subjects.all_events,
            stream=JStream(self.subjects.events_stream, declare=False),
            durable=self.instance,
            pull_sub=PullSub(batch_size=1, timeout=1.0),
            config=ConsumerConfig(max_ack_pending=1, ack_wait=60),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.MANUAL,
            title=f"{self.service}:events",
            description=description,
        )
        async def on_event(msg: NatsMessage) -> None:
            await self.consume(msg, react, consumer)

    def subscribe_health(self, broker: NatsBroker) -> None:
        @broker.subscriber(self.subjects.health(self.instance), title=f"{self.service}:health", description="Readiness probe: answers once the service is consuming.")
        async def on_health() -> dict[str, Any]:
            return {"service": self.service, "instance": self.instance, "ready": self.ready}

    def document_publishers(self, broker: NatsBroker) -> None:
        """Declare every event this service emits so the AsyncAPI document carries its schema."""
        for event_class in [*OWNED_EVENTS.get(self.service, []), MessageRejected]:
            event_type = event_class.model_fields["event_type"].default
            broker.publisher(
                self.subjects.event(self.service, "{campaign}", event_type),
                schema=event_class,
                title=f"{self.service}:{event_type}",
                description=(event_class.__doc__ or event_type).strip().splitlines()[0],
                include_in_schema=True,
            )


async def _keep_in_progress(msg: NatsMessage, every: float = 10.0) -> None:
    """Extend the ack deadline while a long reaction runs, so the message is not redelivered."""
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(Exception):
                await msg.in_progress()


def _campaign_from_subject(subject: str) -> str | None:
    parts = subject.split(".")
    if "evt" in parts:
        index = parts.index("evt")
        if len(parts) > index + 2:
            return parts[index + 2]
    return None


def build_app(broker: NatsBroker, runtime: ServiceRuntime[Any], description: str) -> FastStream:
    """The FastStream application of one service: the runtime starts before the consumers."""
    from faststream import FastStream

    runtime.subscribe_health(broker)
    runtime.document_publishers(broker)
    app = FastStream(broker, specification=asyncapi(broker, runtime.service, description), logger=log)

    @app.on_startup
    async def _start() -> None:
        await runtime.start()

    @app.after_startup
    async def _ready() -> None:
        runtime.ready = True

    @app.on_shutdown
    async def _stop() -> None:
        runtime.ready = False
        await runtime.stop()

    app.runtime = runtime  # type: ignore[attr-defined]
    return app


def asyncapi(broker: NatsBroker, service: str, description: str) -> Any:
    from faststream.specification import AsyncAPI

    return AsyncAPI(broker, title=f"autosota-{service}", version="1.0.0", description=description)


def make_broker(settings: Settings, service: str) -> NatsBroker:
    return NatsBroker(
        settings.nats_servers,
        name=service,
        logger=log,
        graceful_timeout=30.0,
        max_reconnect_attempts=-1,
        security=broker_security(settings),
    )

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
import hashlib
import hmac
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
import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.api import DeliverPolicy
from nats.js.errors import BadRequestError, NotFoundError

from shared.admission import MAX_EVENT_BYTES, UNKNOWN_CAMPAIGN, Accepted, Ignored, admit, excerpt
from shared.bus import Artifacts, broker_security, client_auth, connect, ensure_topology, inbox_prefix
from shared.contracts import (
    OWNED_EVENTS,
    Event,
    MessageRejected,
    ServiceFailed,
    parse_event,
)
from shared.settings import Settings
from shared.store import EMITTED_TOPIC, CampaignLedger, ServiceStore, postgres_env, sqlite_env
from shared.subjects import TOKEN, is_instance_of

log = logging.getLogger("autosota")

State = TypeVar("State")

OUTBOX_TRACKING = "outbox"
# A failure of the bus itself (a restart, a lost connection) is retried this many deliveries before
# it counts as the handler's failure.
TRANSIENT_DELIVERIES = 8
TRANSIENT_DELAY = 1.0
CONSUMER_CHECK_SECONDS = 5.0
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.TimeoutError,
    nats.errors.StaleConnectionError,
    TimeoutError,
)
# A publish the server can never accept, however often it is tried.
UNPUBLISHABLE_ERRORS: tuple[type[BaseException], ...] = (nats.errors.MaxPayloadError, BadRequestError)


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
# What a service itself does when it fails on one of a campaign's events (the scheduler ends the campaign).
FailureHook = Callable[[State, ServiceFailed], list[Output]]


class _Redeliver(Exception):
    """The bus failed under a handler: the message is left for redelivery instead of being recorded."""


class ServiceRuntime(Generic[State]):
    def __init__(self, service: str, settings: Settings, domain: Domain[State], instance: str | None = None, on_failure: FailureHook[State] | None = None) -> None:
        self.service = service
        self.instance = instance or service
        if not is_instance_of(self.instance, service):
            # consumers accept an event only from an instance of the service whose tree it is under
            raise ValueError(f"instance name {self.instance!r} must be {service!r} or {service}-<name> (letters, digits, '-', '_')")
        self.on_failure = on_failure
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
        self._relay_key = self.store.relay_key()
        self._unpublishable: dict[int, int] = {}
        self.ready = False
        self.consuming = True  # False while this service's durable consumer is missing on the server
        self._events_consumer: str | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self.nc = await connect(self.settings.nats_servers, f"{self.instance}-runtime", **client_auth(self.settings))
        self.js = self.nc.jetstream()
        await ensure_topology(self.js, self.subjects, self.settings.stream_replicas)
        self._artifacts = Artifacts(self.js, self.subjects.artifacts_bucket)
        self._tasks.append(asyncio.create_task(self._relay_forever(), name=f"{self.instance}-relay"))
        if self._events_consumer is not None:
            self.spawn(self._watch_consumer(self._events_consumer), f"{self.instance}-consumer-watch")

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
        """Handle one message from a durable consumer, exactly once in effect. Whatever the message,
        it ends acknowledged with a record (an effect, a dead letter or a failure event), or, when
        the bus itself failed under the handler, left for a prompt redelivery."""
        raw = msg.raw_message
        metadata = raw.metadata
        tracking = Tracking(consumer, metadata.sequence.stream)
        async with self._lock:
            if self.store.recorder.has_tracking_id(tracking.application_name, tracking.notification_id):
                await msg.ack()
                return
            keepalive = asyncio.create_task(_keep_in_progress(msg, self.settings.event_ack_wait_seconds / 3))
            try:
                await self._handle(raw.subject, raw.data or b"", dict(raw.headers or {}), react, tracking, metadata.num_delivered)
            except _Redeliver:
                await raw.nak(delay=TRANSIENT_DELAY)
                return
            finally:
                keepalive.cancel()
            await msg.ack()

    async def _handle(self, subject: str, body: bytes, headers: dict[str, str], react: Reaction[State], tracking: Tracking | None, delivery: int = 1) -> None:
        verdict = admit(self.subjects, subject, body, headers)
        if isinstance(verdict, Ignored):
            self.commit(UNKNOWN_CAMPAIGN, [], tracking=tracking)
            return
        if not isinstance(verdict, Accepted):
            self._reject(subject, body, verdict.reason, tracking, verdict.campaign)
            return
        event = verdict.event
        if event.producer == self.instance:
            # Our own event coming back: it was folded into our state when we emitted it.
            self.commit(event.campaign, [], tracking=tracking)
            return
        try:
            self._commit_reaction(event, await react(self._evolved(event), event, self._context()), tracking)
        except TRANSIENT_ERRORS as error:
            if delivery < TRANSIENT_DELIVERIES:
                log.warning("%s: the bus failed while handling %s (%r); it will be redelivered", self.instance, event.event_type, error)
                raise _Redeliver from error
            self._fail(event, subject, body, f"handling {event.event_type} failed {delivery} times on the bus: {error!r}", tracking)
        except Exception as error:  # a bug or bad input must not kill the service nor lose the message
            log.exception("%s failed to handle %s", self.instance, event.event_type)
            self._fail(event, subject, body, f"handling {event.event_type} failed: {error!r}", tracking)

    def _evolved(self, event: Event) -> State:
        state = copy.deepcopy(self.state(event.campaign))
        if event.event_type in self.domain.relevant:
            state = self.domain.evolve(state, event)
        return state

    def _commit_reaction(self, event: Event, outputs: list[Output], tracking: Tracking | None) -> None:
        observed = event if event.event_type in self.domain.relevant else None
        self.commit(event.campaign, outputs, tracking=tracking, observed=observed, cause=event)

    def _fail(self, event: Event, subject: str, body: bytes, reason: str, tracking: Tracking | None) -> None:
        """A handler failed on a campaign's event: a dead letter and a failure event of that campaign."""
        rejection = MessageRejected(campaign=event.campaign, subject=subject[:300], reason=reason[:2000], excerpt=excerpt(body), stream_sequence=tracking.notification_id if tracking else None)
        try:
            self.commit(event.campaign, [rejection, *self._failure(event.campaign, "handling", event.event_type, subject, reason)], tracking=tracking, cause=event)
        except Exception:
            log.exception("%s could not record its failure on %s", self.instance, event.event_type)
            self._reject(subject, body, reason, tracking, event.campaign)

    def _failure(self, campaign: str, stage: str, failed_event_type: str, subject: str, reason: str) -> list[Output]:
        """A failure of this service on a campaign, and what the service itself does about it."""
        failure = ServiceFailed(campaign=campaign, service=self.service, stage=stage, failed_event_type=failed_event_type[:80], subject=subject[:300], reason=reason[:2000])  # type: ignore[arg-type]
        if self.on_failure is None:
            return [failure]
        try:
            return [failure, *self.on_failure(copy.deepcopy(self.state(campaign)), failure)]
        except Exception:
            log.exception("%s: its failure hook failed too", self.instance)
            return [failure]

    def _reject(self, subject: str, body: bytes, reason: str, tracking: Tracking | None, campaign: str = UNKNOWN_CAMPAIGN) -> None:
        """A dead letter, always recordable: a valid campaign key, the raw subject, a bounded excerpt."""
        rejection = MessageRejected(
            campaign=campaign,
            subject=subject[:300],
            reason=reason[:2000],
            excerpt=excerpt(body),
            stream_sequence=tracking.notification_id if tracking else None,
        )
        log.warning("%s rejected a message on %s: %s", self.instance, subject[:300], reason[:300])
        try:
            self.commit(campaign, [rejection], tracking=tracking)
        except Exception:
            # The store is reachable (or this raises again and the message is redelivered), so at
            # least the position is recorded: one message can never hold the consumer back.
            log.exception("%s could not record a dead letter; skipping the message", self.instance)
            self.commit(UNKNOWN_CAMPAIGN, [], tracking=tracking)

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
        for output in self._bounded(campaign, list(outputs)):
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

    def _bounded(self, campaign: str, outputs: list[Output]) -> list[Output]:
        """Outputs that fit in one bus message; one that does not becomes a failure of its campaign,
        so nothing enters the outbox that the server would refuse and block the ones after it."""
        kept: list[Output] = []
        for output in outputs:
            if isinstance(output, Event):
                size, name, subject = len(output.model_dump_json()), output.event_type, self.subjects.event(self.service, output.campaign, output.event_type)
            else:
                size, name, subject = len(json.dumps(output.body)), "work item", output.subject
            if size <= MAX_EVENT_BYTES:
                kept.append(output)
                continue
            reason = f"{name} of {size} bytes is over the {MAX_EVENT_BYTES}-byte event limit and was not published"
            log.error("%s: %s", self.instance, reason)
            kept += self._failure(campaign, "publishing", name, subject, reason)
        return kept

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
            subject, message = emitted.subject, emitted.message  # type: ignore[attr-defined]
            try:
                await self.js.publish(subject, json.dumps(message).encode(), headers={"Nats-Msg-Id": self.message_id(notification.id)})
            except UNPUBLISHABLE_ERRORS as error:
                if not self._give_up_publishing(notification.id, subject, message, error):
                    raise
        if notifications and notifications[-1].id > (self.store.recorder.max_tracking_id(OUTBOX_TRACKING) or 0):
            self.store.recorder.insert_tracking(Tracking(OUTBOX_TRACKING, notifications[-1].id))
        return len(notifications)

    def message_id(self, notification_id: int) -> str:
        """`<instance>:<notification>:<keyed digest>`: stable across this instance's restarts, so a
        re-publish is dropped as a duplicate, and unpredictable to every other user of the bus."""
        name = f"{self.instance}:{notification_id}"
        return f"{name}:{hmac.new(self._relay_key, name.encode(), hashlib.sha256).hexdigest()[:32]}"

    def _give_up_publishing(self, notification_id: int, subject: str, message: Any, error: BaseException) -> bool:
        """After a few refusals of the same message, record it as a failure of its campaign and move on."""
        attempts = self._unpublishable.get(notification_id, 0) + 1
        self._unpublishable[notification_id] = attempts
        if attempts < 3:
            return False
        campaign = message.get("campaign") if isinstance(message, dict) else None
        campaign = campaign if isinstance(campaign, str) and TOKEN.match(campaign) else UNKNOWN_CAMPAIGN
        kind = message.get("event_type", "work item") if isinstance(message, dict) else "message"
        reason = f"the bus refused {kind} on {subject[:200]} {attempts} times: {error!r}"
        log.error("%s: %s", self.instance, reason)
        self.commit(campaign, self._failure(campaign, "publishing", str(kind), subject, reason))
        del self._unpublishable[notification_id]
        return True

    # ------------------------------------------------------------ FastStream wiring

    def subscribe_events(self, broker: NatsBroker, react: Reaction[State], description: str) -> None:
        """A durable pull consumer on all events, one message in flight so order is kept."""
        consumer = f"{self.subjects.events_stream}/{self.instance}"
        self._events_consumer = consumer

        @broker.subscriber(
            self.subjects.all_events,
            stream=JStream(self.subjects.events_stream, declare=False),
            durable=self.instance,
            inbox_prefix=self.pull_inbox_prefix,
            pull_sub=PullSub(batch_size=1, timeout=1.0),
            config=ConsumerConfig(max_ack_pending=1, ack_wait=self.settings.event_ack_wait_seconds),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.MANUAL,
            title=f"{self.service}:events",
            description=description,
        )
        async def on_event(msg: NatsMessage) -> None:
            await self.consume(msg, react, consumer)

    async def _watch_consumer(self, tracking_name: str) -> None:
        """Notice when this service's durable consumer is gone (deleted by someone) and recreate it
        where this service left off; until then the service answers not ready."""
        while True:
            await asyncio.sleep(CONSUMER_CHECK_SECONDS)
            if self.js is None:
                continue
            try:
                await self.js.consumer_info(self.subjects.events_stream, self.instance)
                self.consuming = True
                continue
            except NotFoundError:
                pass
            except Exception:  # the bus is away: nothing to decide until it is back
                continue
            self.consuming = False
            position = self.store.recorder.max_tracking_id(tracking_name) or 0
            log.error("%s: its consumer on %s is gone; recreating it after stream position %d", self.instance, self.subjects.events_stream, position)
            with contextlib.suppress(Exception):
                await self.js.add_consumer(self.subjects.events_stream, self.consumer_config(position))
                self.consuming = True

    def consumer_config(self, after_position: int = 0) -> js_api.ConsumerConfig:
        """This service's durable consumer on the events stream, starting after a stream position."""
        start = {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": after_position + 1} if after_position else {"deliver_policy": DeliverPolicy.ALL}
        return js_api.ConsumerConfig(
            durable_name=self.instance,
            filter_subject=self.subjects.all_events,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            max_ack_pending=1,
            ack_wait=self.settings.event_ack_wait_seconds,
            **start,  # type: ignore[arg-type]
        )

    @property
    def pull_inbox_prefix(self) -> bytes:
        """The reply inbox of this service's pull consumers (FastStream sets its own unless told)."""
        return (inbox_prefix(self.settings) + ".").encode()

    def subscribe_health(self, broker: NatsBroker) -> None:
        @broker.subscriber(self.subjects.health(self.instance), title=f"{self.service}:health", description="Readiness probe: answers once the service is consuming.")
        async def on_health() -> dict[str, Any]:
            return {"service": self.service, "instance": self.instance, "ready": self.ready and self.consuming}

    def document_publishers(self, broker: NatsBroker) -> None:
        """Declare every event this service emits so the AsyncAPI document carries its schema."""
        for event_class in [*OWNED_EVENTS.get(self.service, []), MessageRejected, ServiceFailed]:
            event_type = event_class.model_fields["event_type"].default
            broker.publisher(
                self.subjects.event(self.service, "{campaign}", event_type),
                schema=event_class,
                title=f"{self.service}:{event_type}",
                description=(event_class.__doc__ or event_type).strip().splitlines()[0],
                include_in_schema=True,
            )


async def _keep_in_progress(msg: NatsMessage, every: float) -> None:
    """Extend the ack deadline while a long reaction runs: a live agent keeps its message however
    long its reaction takes, and a killed one's is redelivered within seconds."""
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            await asyncio.sleep(every)
            with contextlib.suppress(Exception):
                await msg.in_progress()


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
        inbox_prefix=inbox_prefix(settings),
        security=broker_security(settings),
    )

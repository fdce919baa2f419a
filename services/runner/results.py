"""Exactly one recorded result per job, whichever runners ran it and however often they died.

A job's result is claimed in a key-value bucket shared by every runner (create fails when the
key exists), then published to the events stream with a Nats-Msg-Id derived from the job, then
marked published. Whoever meets an unpublished claim (the claimer died between the two steps,
or a redelivery raced it) publishes the claimed result itself, unless the stream already holds
it: the same message id makes concurrent publishers collapse into one message, and the stream
is read before publishing so that a late recovery cannot add a second one either.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from datetime import datetime

from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from services.runner.domain import Claim, result_key, result_message_id, stamp_result
from shared.contracts import JobCompleted, JobFailed
from shared.subjects import Subjects

log = logging.getLogger("autosota.runner")

RESULT_RETENTION_SECONDS = 90 * 24 * 3600.0  # longer than any job waits in the queue
# The runners' shared secret for result message ids, kept in the results bucket only runners may read.
MESSAGE_KEY = "message-id-key"
STREAM_SCAN_IDLE_SECONDS = 1.0


def results_bucket(subjects: Subjects) -> str:
    return f"{subjects.work_stream}_RESULTS"


class JobResults:
    """The claim-then-publish protocol over the results bucket and the events stream."""

    def __init__(self, js: JetStreamContext, subjects: Subjects, runner: str, replicas: int = 1) -> None:
        self.js = js
        self.subjects = subjects
        self.runner = runner
        self.replicas = replicas
        self._kv: KeyValue | None = None
        self._message_key = b""

    async def open(self) -> None:
        bucket = results_bucket(self.subjects)
        try:
            self._kv = await self.js.key_value(bucket)
        except BucketNotFoundError:
            config = KeyValueConfig(bucket=bucket, history=1, ttl=RESULT_RETENTION_SECONDS, storage=StorageType.FILE, replicas=self.replicas)
            try:
                self._kv = await self.js.create_key_value(config)
            except BadRequestError:
                self._kv = await self.js.key_value(bucket)  # another runner created it first
        with contextlib.suppress(KeyWrongLastSequenceError):  # another runner made it first
            await self._kv.create(MESSAGE_KEY, secrets.token_hex(32).encode())
        entry = await self._kv.get(MESSAGE_KEY)
        self._message_key = bytes.fromhex((entry.value or b"").decode())

    @property
    def kv(self) -> KeyValue:
        assert self._kv is not None, "results not opened"
        return self._kv

    async def existing(self, campaign: str, experiment_id: str) -> Claim | None:
        """The job's claimed result, published by now (recovered here if its claimer died)."""
        key = result_key(campaign, experiment_id)
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        claim = Claim.decode(entry.value)
        if claim.state != "published":
            await self._publish_once(claim.event)
            with contextlib.suppress(KeyWrongLastSequenceError):
                await self.kv.update(key, claim.published().encode(), last=entry.revision)
            claim = claim.published()
        return claim

    async def record(self, outcome: JobCompleted | JobFailed, now: datetime) -> tuple[bool, JobCompleted | JobFailed]:
        """Record the job's result unless one is recorded already; (recorded here, the job's result)."""
        stamped = stamp_result(outcome, self.runner, now)
        claim = Claim(self.runner, "claimed", stamped)
        key = result_key(outcome.campaign, outcome.experiment_id)
        try:
            revision = await self.kv.create(key, claim.encode())
        except KeyWrongLastSequenceError:
            settled = await self.existing(outcome.campaign, outcome.experiment_id)
            assert settled is not None
            return False, settled.event
        await self._publish(stamped)
        with contextlib.suppress(KeyWrongLastSequenceError):
            await self.kv.update(key, claim.published().encode(), last=revision)
        return True, stamped

    async def _publish_once(self, event: JobCompleted | JobFailed) -> None:
        if await self._on_stream(event):
            return
        await self._publish(event)

    async def _publish(self, event: JobCompleted | JobFailed) -> None:
        subject = self.subjects.event("runner", event.campaign, event.event_type)
        ack = await self.js.publish(
            subject,
            json.dumps(event.model_dump(mode="json")).encode(),
            headers={"Nats-Msg-Id": result_message_id(event.campaign, event.experiment_id, self._message_key)},
        )
        if ack.duplicate:
            log.info("%s: result of %s/%s was already published", self.runner, event.campaign, event.experiment_id)

    async def _on_stream(self, event: JobCompleted | JobFailed) -> bool:
        """Whether the events stream already holds this result (read on the rare recovery path only)."""
        wanted = str(event.event_id)
        found = False
        done = asyncio.Event()

        async def look(msg) -> None:  # type: ignore[no-untyped-def]
            nonlocal found
            with contextlib.suppress(ValueError):
                if json.loads(msg.data).get("event_id") == wanted:
                    found = True
                    done.set()
            if msg.metadata.num_pending == 0:
                done.set()

        subjects = [self.subjects.event("runner", event.campaign, kind) for kind in ("JobCompleted", "JobFailed")]
        for subject in subjects:
            try:
                info = await self.js.stream_info(self.subjects.events_stream, subjects_filter=subject)
            except NotFoundError:
                return False
            if not (info.state.subjects or {}).get(subject):
                continue
            done.clear()
            subscription = await self.js.subscribe(subject, stream=self.subjects.events_stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL, cb=look)
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), timeout=30)
            finally:
                await subscription.unsubscribe()
            if found:
                return True
        return False

"""Reading the recorded history: messages of the events stream in order, and the events in it that
the services themselves would accept. A read model built from anything less would show a forged
event (a certification under a runner's subject, say) that no service ever acted on."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from shared.admission import Accepted, admit
from shared.contracts import Event
from shared.subjects import Subjects


@dataclass(frozen=True)
class StoredMessage:
    subject: str
    data: bytes
    headers: dict[str, str]

    @classmethod
    def of(cls, message: Any) -> StoredMessage:
        """A message as nats-py hands it, delivered or read back from the stream."""
        return cls(message.subject, message.data or b"", dict(message.headers or {}))


async def read_messages(js: Any, stream: str, subject: str) -> list[StoredMessage]:
    """Every message on a subject filter, in stream order, as of now."""
    from nats.js.api import DeliverPolicy
    from nats.js.errors import NotFoundError

    try:
        info = await js.stream_info(stream, subjects_filter=subject)
    except NotFoundError:
        return []
    if not sum((info.state.subjects or {}).values()):
        return []
    subscription = await js.subscribe(subject, stream=stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    found: list[StoredMessage] = []
    try:
        while True:
            message = await subscription.next_msg(timeout=10)
            found.append(StoredMessage.of(message))
            if message.metadata.num_pending == 0:
                return found
    finally:
        with contextlib.suppress(Exception):
            await subscription.unsubscribe()


def admitted_event(subjects: Subjects, message: StoredMessage) -> Event | None:
    verdict = admit(subjects, message.subject, message.data, message.headers)
    return verdict.event if isinstance(verdict, Accepted) else None


def admitted_events(subjects: Subjects, messages: list[StoredMessage]) -> list[Event]:
    """The events the services accept, in stream order; forged and malformed messages are left out."""
    return [event for message in messages if (event := admitted_event(subjects, message)) is not None]

"""Which messages from the events stream a service acts on: a pure function of the message.

An event is accepted only when everything about it agrees with where it was published: its type is
owned by the service whose subject tree carries it, its campaign is the subject's, its producer is
an instance of that service, and its message id claims no other service's ids. Per-service publish
permissions on the bus then make each of these facts unforgeable: a user may publish only under its
own tree, so an event can only ever claim to be what its publisher is allowed to be.

Events of types the agents do not know, under a tree that is not an agent's, are a plug-in's own
business and are ignored without a dead letter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared.contracts import EVENT_TYPES, ContractError, Event, parse_event
from shared.subjects import SERVICES, Subjects, is_instance_of

MAX_EVENT_BYTES = 768 * 1024  # under the embedded server's 1 MiB payload limit, with room for headers
UNKNOWN_CAMPAIGN = "unknown"
EXCERPT_BYTES = 500


@dataclass(frozen=True)
class Accepted:
    event: Event


@dataclass(frozen=True)
class Ignored:
    """Not for the agents (a plug-in's own event): acknowledged without a record."""

    reason: str


@dataclass(frozen=True)
class Rejected:
    """A dead letter: recorded under a valid campaign key with the raw subject and an excerpt."""

    campaign: str
    reason: str


Verdict = Accepted | Ignored | Rejected


def admit(subjects: Subjects, subject: str, body: bytes, headers: dict[str, str] | None = None) -> Verdict:
    address = subjects.parse_event_subject(subject)
    if address is None:
        return Rejected(UNKNOWN_CAMPAIGN, f"subject {subject[:200]!r} is not {subjects.root}.evt.<service>.<campaign>.<EventType>")
    cls = EVENT_TYPES.get(address.event_type)
    if address.service not in SERVICES:
        if cls is None or cls.owner == "*":
            return Ignored(f"{address.event_type} under the plug-in tree {address.service!r}")
        return Rejected(address.campaign, f"forged: {address.event_type} belongs to {cls.owner}, but was published under {address.service!r}")
    if cls is None:
        return Rejected(address.campaign, f"unknown event type {address.event_type!r} under {address.service!r}")
    if cls.owner not in ("*", address.service):
        return Rejected(address.campaign, f"forged: {address.event_type} belongs to {cls.owner}, but was published under {address.service!r}")
    if len(body) > MAX_EVENT_BYTES:
        return Rejected(address.campaign, f"message of {len(body)} bytes is over the {MAX_EVENT_BYTES}-byte event limit")
    message_id = (headers or {}).get("Nats-Msg-Id")
    if message_id is not None and not is_instance_of(message_id.split(":", 1)[0], address.service):
        return Rejected(address.campaign, f"message id {message_id[:100]!r} claims another service's ids under {address.service!r}")
    try:
        decoded: Any = json.loads(body)
        event = parse_event(decoded)
    except (ContractError, ValueError, UnicodeDecodeError) as error:
        return Rejected(address.campaign, f"malformed message: {error}")
    if event.event_type != address.event_type:
        return Rejected(address.campaign, f"forged: the body is a {event.event_type}, the subject says {address.event_type}")
    if event.campaign != address.campaign:
        return Rejected(address.campaign, f"forged: the body is for campaign {event.campaign!r}, the subject says {address.campaign!r}")
    if not is_instance_of(event.producer, address.service):
        return Rejected(address.campaign, f"forged: producer {event.producer[:100]!r} is not an instance of {address.service!r}")
    service = getattr(event, "service", None)
    if event.event_type == "ServiceFailed" and service != address.service:
        return Rejected(address.campaign, f"forged: a failure of {service!r} published under {address.service!r}")
    return Accepted(event)


def excerpt(body: bytes) -> str:
    return body[:EXCERPT_BYTES].decode("utf-8", "replace")

"""Subject, stream and bucket names. A namespace prefix lets several stacks share one server."""

from __future__ import annotations

import re
from dataclasses import dataclass

SERVICES = ("resource", "objective", "init", "monitor", "fix", "ideator", "scheduler", "supervisor", "runner")
# A token of an event subject: what NATS accepts in one token and what a campaign id may be.
TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


def service_of(instance: str) -> str:
    """The service an instance belongs to: runner instances are runner-<name>, agents are their service."""
    return "runner" if instance == "runner" or instance.startswith("runner-") else instance


def is_instance_of(instance: str, service: str) -> bool:
    """Whether an instance name belongs to a service: the service itself or <service>-<name>."""
    return instance == service or (instance.startswith(service + "-") and TOKEN.match(instance) is not None)


@dataclass(frozen=True)
class EventAddress:
    """What an event subject says: which service's tree, which campaign, which event type."""

    service: str
    campaign: str
    event_type: str


@dataclass(frozen=True)
class Subjects:
    namespace: str = ""

    @property
    def root(self) -> str:
        return f"{self.namespace}.autosota" if self.namespace else "autosota"

    @property
    def _stream_prefix(self) -> str:
        return f"{self.namespace.upper()}_" if self.namespace else ""

    # streams
    @property
    def events_stream(self) -> str:
        return f"{self._stream_prefix}AUTOSOTA_EVENTS"

    @property
    def work_stream(self) -> str:
        return f"{self._stream_prefix}AUTOSOTA_WORK"

    @property
    def telemetry_stream(self) -> str:
        return f"{self._stream_prefix}AUTOSOTA_TEL"

    @property
    def artifacts_bucket(self) -> str:
        return f"{self.namespace}-autosota-artifacts" if self.namespace else "autosota-artifacts"

    # subjects
    def event(self, service: str, campaign: str, event_type: str) -> str:
        return f"{self.root}.evt.{service}.{campaign}.{event_type}"

    def parse_event_subject(self, subject: str) -> EventAddress | None:
        """The address of `<root>.evt.<service>.<campaign>.<EventType>`; None for any other shape."""
        prefix = f"{self.root}.evt."
        if not subject.startswith(prefix):
            return None
        parts = subject[len(prefix):].split(".")
        if len(parts) != 3 or not all(TOKEN.match(part) for part in parts):
            return None
        return EventAddress(*parts)

    def events_of_campaign(self, campaign: str) -> str:
        return f"{self.root}.evt.*.{campaign}.*"

    @property
    def all_events(self) -> str:
        return f"{self.root}.evt.>"

    def work(self, pool: str) -> str:
        return f"{self.root}.work.{pool}"

    @property
    def all_work(self) -> str:
        return f"{self.root}.work.>"

    def telemetry(self, campaign: str, experiment_id: str) -> str:
        return f"{self.root}.tel.{campaign}.{experiment_id}"

    @property
    def all_telemetry(self) -> str:
        return f"{self.root}.tel.>"

    def control(self, action: str) -> str:
        return f"{self.root}.ctl.{action}"

    def health(self, instance: str) -> str:
        """An instance's readiness probe. Runner instances answer under ctl.health.runner.<instance>,
        so the runners' shared user may listen on the runners' subjects and no other service's."""
        if service_of(instance) == "runner":
            return f"{self.root}.ctl.health.runner.{instance}"
        return f"{self.root}.ctl.health.{instance}"

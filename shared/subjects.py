"""Subject, stream and bucket names. A namespace prefix lets several stacks share one server."""

from __future__ import annotations

from dataclasses import dataclass

SERVICES = ("resource", "objective", "init", "monitor", "fix", "ideator", "scheduler", "supervisor", "runner")


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

    def health(self, service: str) -> str:
        return f"{self.root}.ctl.health.{service}"

"""Bus handlers of the monitor: events fold into state, telemetry into a liveness map, a ticker decides.

Liveness is kept in memory only: heartbeats are lossy and frequent, and after a restart a
job is simply measured from its last recorded event, which errs towards waiting longer.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import datetime

from faststream.nats import NatsBroker

from services.monitor.domain import DeadEndLimits, MonitorState, decide_tick, watching
from shared.contracts import Event, Telemetry, parse_event
from shared.runtime import Command, Context, Output, ServiceRuntime
from shared.store import OBSERVED_TOPIC

log = logging.getLogger("autosota.monitor")

TICK_SECONDS = 1.0
PAGE = 500


class Liveness:
    """When this monitor last heard from each job, by its own clock."""

    def __init__(self) -> None:
        self._last_seen: dict[str, dict[str, datetime]] = defaultdict(dict)

    def heard(self, campaign: str, experiment_id: str, at: datetime) -> None:
        self._last_seen[campaign][experiment_id] = at

    def of_campaign(self, campaign: str) -> dict[str, datetime]:
        return dict(self._last_seen.get(campaign, {}))

    def forget(self, campaign: str) -> None:
        self._last_seen.pop(campaign, None)


async def react(state: MonitorState, event: Event, ctx: Context) -> list[Output]:
    # Events only fold into state; every decision waits for the next tick.
    return []


def tick(liveness: Liveness) -> Command[MonitorState]:
    async def decide(state: MonitorState, ctx: Context) -> list[Output]:
        limits = DeadEndLimits(repeats=ctx.settings.dead_end_repeats, no_progress_seconds=ctx.settings.dead_end_seconds)
        return list(decide_tick(state, ctx.now, ctx.settings.stall_seconds, liveness.of_campaign(state.campaign), limits))

    return decide


def load_started_campaigns(runtime: ServiceRuntime[MonitorState]) -> None:
    """Fold every campaign this monitor has seen start, so a restart keeps watching them."""
    position = 0
    while True:
        notifications = runtime.store.recorder.select_notifications(
            start=position, limit=PAGE, topics=[OBSERVED_TOPIC], inclusive_of_start=False
        )
        for notification in notifications:
            message = getattr(runtime.store.mapper.to_domain_event(notification), "message", None)
            if isinstance(message, dict) and message.get("event_type") == "CampaignStarted":
                runtime.state(parse_event(message).campaign)
            position = notification.id
        if len(notifications) < PAGE:
            return


async def tick_forever(runtime: ServiceRuntime[MonitorState], liveness: Liveness) -> None:
    load_started_campaigns(runtime)
    decide = tick(liveness)
    while True:
        await asyncio.sleep(TICK_SECONDS)
        for campaign in runtime.campaigns():
            if not watching(runtime.state(campaign)):
                liveness.forget(campaign)
                continue
            try:
                await runtime.command(campaign, decide)
            except Exception:  # one campaign's failure must not stop the others being watched
                log.exception("monitor tick failed for %s", campaign)


def register(broker: NatsBroker, runtime: ServiceRuntime[MonitorState], liveness: Liveness) -> None:
    runtime.subscribe_events(broker, react, "Consumes campaign, dispatch, job and result events; tracks budgets, job phases, failure streaks and progress.")

    @broker.subscriber(
        runtime.subjects.all_telemetry,
        title="monitor:telemetry",
        description="Runner heartbeats and log lines (core, lossy): each one marks its job alive.",
    )
    async def on_telemetry(telemetry: Telemetry) -> None:
        liveness.heard(telemetry.campaign, telemetry.experiment_id, runtime.clock())

"""Replay with verification: re-run services' decision code over a recorded campaign, answering every
model call from the record, and compare what they decide with what they recorded, event by event.

Each service is driven the way its runtime drives it: events in stream order, its state folded
from what it observed and what it committed, its reaction given a copy of that state. A model call
the record does not hold is an error naming the call; nothing is ever asked of a live model.
Run it with `python -m shared.brains.replay <campaign>` (NATS_URL, or the embedded store of
--data-dir).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.brains.recording import RecordedAnswers, ReplayMissing
from shared.contracts import Event
from shared.runtime import Context

ENVELOPE = {"event_id", "producer", "time", "causation_id"}
REPLAYABLE = ("scheduler", "ideator", "objective")

React = Callable[[Any, Event, Context], Awaitable[list[Any]]]


@dataclass(frozen=True)
class Divergence:
    service: str
    cause: str
    recorded: list[dict[str, Any]]
    replayed: list[dict[str, Any]]

    def describe(self) -> str:
        def kinds(payloads: list[dict[str, Any]]) -> str:
            return ", ".join(p.get("event_type", "?") for p in payloads) or "nothing"

        return f"{self.service} after {self.cause}: recorded {kinds(self.recorded)}; replay decided {kinds(self.replayed)}"


@dataclass
class ServiceReplay:
    service: str
    inputs: int = 0
    recorded: int = 0
    reproduced: int = 0
    divergences: list[Divergence] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.divergences and self.reproduced == self.recorded


@dataclass
class VerifyReport:
    campaign: str
    services: list[ServiceReplay]

    @property
    def ok(self) -> bool:
        return all(service.ok for service in self.services)

    def text(self) -> str:
        lines = [f"Replay of {self.campaign}: {'every recorded decision reproduced' if self.ok else 'DIVERGED'}"]
        for service in self.services:
            status = "ok" if service.ok else "diverged"
            lines.append(f"  {service.service:<10} {status}: {service.reproduced}/{service.recorded} events reproduced over {service.inputs} inputs")
            if service.error:
                lines.append(f"    error: {service.error}")
            lines += [f"    {d.describe()}" for d in service.divergences[:20]]
        return "\n".join(lines) + "\n"


def payload(event: Event) -> dict[str, Any]:
    return event.model_dump(mode="json", exclude=ENVELOPE)


class ReplayRuntime:
    """What a reaction may reach during a replay: the artifact store and the settings, no bus."""

    def __init__(self, service: str, artifacts: Any, settings: Any) -> None:
        self.service = service
        self.instance = service
        self.artifacts = artifacts
        self.settings = settings
        self.subjects = settings.subjects if settings is not None else None


async def replay_service(service: str, domain: Any, react: React, events: Sequence[Event], artifacts: Any = None, settings: Any = None) -> ServiceReplay:
    """Drive one service's decisions over the recorded events and compare with what it recorded."""
    campaign = events[0].campaign if events else ""
    result = ServiceReplay(service)
    own = [e for e in events if e.producer == service]
    caused: dict[Any, list[Event]] = {}
    for event in own:
        if event.causation_id is not None:
            caused.setdefault(event.causation_id, []).append(event)
    result.recorded = sum(len(v) for v in caused.values())
    runtime = ReplayRuntime(service, artifacts, settings)
    state = domain.initial_state(campaign)
    for event in events:
        if event.producer == service and event.causation_id is None:
            # Recorded by a command (a control request): its commit came before anything else saw it.
            state = _fold(domain, state, event)
        observed = _fold(domain, copy.deepcopy(state), event)
        context = Context(now=event.time or datetime.now(UTC), runtime=runtime)  # type: ignore[arg-type]
        try:
            decided = [o for o in await react(copy.deepcopy(observed), event, context) if isinstance(o, Event)]
        except ReplayMissing as error:
            result.error = str(error)
            return result
        result.inputs += 1
        recorded = caused.pop(event.event_id, [])
        replayed_payloads, recorded_payloads = [payload(e) for e in decided], [payload(e) for e in recorded]
        if replayed_payloads == recorded_payloads:
            result.reproduced += len(recorded)
        else:
            result.divergences.append(Divergence(service, f"{event.event_type} {event.event_id}", recorded_payloads, replayed_payloads))
        state = observed
        for committed in recorded:
            state = _fold(domain, state, committed)
    for cause, left in caused.items():
        result.divergences.append(Divergence(service, f"a cause not in the campaign's stream ({cause})", [payload(e) for e in left], []))
    return result


def _fold(domain: Any, state: Any, event: Event) -> Any:
    return domain.evolve(state, event) if event.event_type in domain.relevant else state


def reactions(service: str, answers: RecordedAnswers, campaign: str) -> tuple[Any, React]:
    """The domain and the reaction of a service, with a brain that answers from the recording."""
    from shared.brains.model import replay_brain

    if service == "scheduler":
        from services.scheduler.domain import SchedulerDomain, decide

        async def scheduler(state: Any, event: Event, ctx: Context) -> list[Any]:
            return list(decide(state, event))

        return SchedulerDomain(), scheduler
    if service == "ideator":
        from services.ideator.domain import IdeatorDomain
        from services.ideator.handlers import reaction

        return IdeatorDomain(), reaction(replay_brain(answers, "ideator", campaign=campaign))
    if service == "objective":
        from services.objective.domain import ObjectiveDomain
        from services.objective.handlers import reaction as objective_reaction

        return ObjectiveDomain(), objective_reaction(replay_brain(answers, "objective", campaign=campaign))
    raise ValueError(f"no replay for service {service!r}; replayable: {', '.join(REPLAYABLE)}")


async def verify_events(events: Sequence[Event], artifacts: Any = None, settings: Any = None, services: Sequence[str] = REPLAYABLE) -> VerifyReport:
    from shared.readmodel import unique

    kept = unique(list(events))
    campaign = kept[0].campaign if kept else ""
    kept = [e for e in kept if e.campaign == campaign]
    answers = RecordedAnswers(kept, source=f"the recorded events of {campaign}")
    results = []
    for service in services:
        domain, react = reactions(service, answers, campaign)
        results.append(await replay_service(service, domain, react, kept, artifacts, settings))
    return VerifyReport(campaign, results)


async def verify_campaign(url: str, settings: Any, campaign: str, services: Sequence[str] = REPLAYABLE) -> VerifyReport:
    """Read the campaign from the events stream and verify it; artifacts come from the object store."""
    from shared.bus import Artifacts, connect
    from shared.cli import campaign_events

    events = await campaign_events(url, settings.subjects, campaign)
    if not events:
        raise LookupError(f"no events for campaign {campaign}")
    client = await connect(url, "autosota-replay")
    try:
        artifacts = Artifacts(client.jetstream(), settings.subjects.artifacts_bucket)
        return await verify_events(events, artifacts, settings, services)
    finally:
        await client.close()


def main(argv: list[str] | None = None) -> int:
    from shared.cli import bus_for_reading, env_data_dir
    from shared.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m shared.brains.replay", description="Re-run decisions over a recorded campaign with recorded model answers and compare.")
    parser.add_argument("campaign")
    parser.add_argument("--data-dir")
    parser.add_argument("--services", default=",".join(REPLAYABLE), help=f"comma-separated, of {', '.join(REPLAYABLE)}")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    settings = Settings()
    try:
        with bus_for_reading(env_data_dir(args.data_dir)) as url:
            report = asyncio.run(verify_campaign(url, settings, args.campaign, [s for s in args.services.split(",") if s]))
    except (FileNotFoundError, LookupError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"campaign": report.campaign, "ok": report.ok, "services": [s.__dict__ | {"divergences": [d.describe() for d in s.divergences]} for s in report.services]}, default=str, indent=2))
    else:
        sys.stdout.write(report.text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

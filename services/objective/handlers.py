"""Thin bus handlers of the objective service."""

from __future__ import annotations

from faststream.nats import NatsBroker

from services.objective.domain import TASK_CARD, ObjectiveState, TaskCardError, build_objective, decide, parse_task_card
from shared.contracts import Event, ResourcesPrepared
from shared.runtime import Context, Output, ServiceRuntime
from shared.workspace import read_member


async def react(state: ObjectiveState, event: Event, ctx: Context) -> list[Output]:
    if not isinstance(event, ResourcesPrepared) or state.decided:
        return []
    snapshot = await ctx.artifacts.get(event.snapshot_sha256)
    try:
        card_text = _read_text(snapshot, TASK_CARD, "task card")
        card = parse_task_card(card_text)
        paper_text = _read_text(snapshot, card["paper"]["text"], "paper text")
        requirements_file = card.get("environment", {}).get("requirements")
        requirements = _read_text(snapshot, requirements_file, "requirements") if requirements_file else None
        objective = build_objective(card, paper_text, event.files, requirements)
    except TaskCardError as error:
        return list(decide(event, None, str(error)))
    return list(decide(event, objective, None))


def _read_text(snapshot: bytes, relative: str, what: str) -> str:
    try:
        return read_member(snapshot, relative).decode("utf-8")
    except FileNotFoundError:
        hint = " (see examples/README.md for the format)" if relative == TASK_CARD else ""
        raise TaskCardError(f"{what} {relative!r} not found in the paper folder{hint}") from None
    except UnicodeDecodeError:
        raise TaskCardError(f"{what} {relative!r} is not UTF-8 text") from None


def register(broker: NatsBroker, runtime: ServiceRuntime[ObjectiveState]) -> None:
    runtime.subscribe_events(broker, react, "Consumes ResourcesPrepared; emits ObjectiveSet or ObjectiveFailed.")

"""Thin bus handlers of the objective service: read the task card, and ask the model for what it lacks."""

from __future__ import annotations

import asyncio
from typing import Any

from faststream.nats import NatsBroker

from services.objective.domain import (
    AGENT,
    TASK_CARD,
    ObjectiveState,
    TaskCardError,
    build_objective,
    check_reading,
    decide,
    documents_to_read,
    fields_to_find,
    merge_reading,
    parse_task_card,
    read_toml,
    reported_from_tables,
)
from shared.brain import NoModelBrain, ObjectiveReadingRequest, uses_model
from shared.brains.recording import document_brain_events, offload_prompts
from shared.contracts import Event, ResourcesPrepared
from shared.runtime import Context, Output, Reaction, ServiceRuntime
from shared.workspace import read_member

DOCUMENT_CHARS = 40_000


def reaction(brain: Any = None) -> Reaction[ObjectiveState]:
    brain = brain or NoModelBrain()

    async def react(state: ObjectiveState, event: Event, ctx: Context) -> list[Output]:
        if not isinstance(event, ResourcesPrepared) or state.decided:
            return []
        snapshot = await ctx.artifacts.get(event.snapshot_sha256)
        try:
            card_text = _read_text(snapshot, TASK_CARD, "task card")
            card = parse_task_card(card_text)
            paper_text = _read_text(snapshot, card["paper"]["text"], "paper text")
            requirements = _requirements(snapshot, card)
            objective = build_objective(card, paper_text, event.files, requirements)
        except TaskCardError as error:
            if not uses_model(brain):
                return list(decide(event, None, str(error)))
            events = await asyncio.to_thread(read_with_model, brain, state, event, snapshot, str(error))
            return list(await offload_prompts(events, ctx.artifacts))
        return list(decide(event, objective, None))

    return react


def read_with_model(brain: Any, state: ObjectiveState, event: ResourcesPrepared, snapshot: bytes, card_error: str) -> list[Event]:
    """Fill what the card lacks from the paper's documents; the card's own fields win."""
    record: list[Event] = [] if state.brain_selected else [brain.selected(AGENT, event.campaign)]
    try:
        card = read_toml(_read_text(snapshot, TASK_CARD, "task card")) if TASK_CARD in event.files else {}
    except TaskCardError as error:
        return decide(event, None, str(error), record)
    documents = _documents(snapshot, documents_to_read(event.files, card))
    named_text = card.get("paper", {}).get("text")
    in_table = isinstance(named_text, str) and named_text in documents and _table_value(card, documents[named_text]) is not None
    missing = fields_to_find(card, in_table)
    scope = state.models.scope(AGENT, event.campaign, "objective/reading")
    unavailable = brain.unavailable(scope)
    if unavailable is not None:
        return decide(event, None, f"{card_error}; the model cannot read the paper: {unavailable.reason}", record)
    request = ObjectiveReadingRequest(campaign=event.campaign, files=sorted(event.files), documents=documents, known=card, missing=missing)
    thought = brain.think_objective(request, scope)
    record += thought.events(scope, "objective-reading")
    reading = thought.answer
    if reading is None:
        reason = thought.fallback.reason if thought.fallback else "no answer"
        return decide(event, None, f"{card_error}; reading the paper with {brain.name} failed: {reason}", record)
    source, problem = check_reading(reading, documents, event.files)
    if problem is not None or source is None:
        return decide(event, None, f"{card_error}; the reading of {brain.name} is not trusted: {problem}", record)
    merged = merge_reading(card, reading, named_text if isinstance(named_text, str) and named_text in documents else source)
    try:
        paper_text = documents.get(merged["paper"]["text"]) or _read_text(snapshot, merged["paper"]["text"], "paper text")
        objective = build_objective(merged, paper_text, event.files, _requirements(snapshot, merged), card_source=f"read by {brain.name} from {source}: {' '.join(reading.reported_quote.split())[:200]!r}")
    except TaskCardError as error:
        return decide(event, None, f"{card_error}; with the reading of {brain.name}: {error}", record)
    return decide(event, objective, None, record)


def _documents(snapshot: bytes, paths: list[str]) -> dict[str, str]:
    documents = {}
    for path in paths:
        try:
            documents[path] = _read_text(snapshot, path, "document")[:DOCUMENT_CHARS]
        except TaskCardError:
            continue  # a document that is not text is not read
    return documents


def _table_value(card: dict[str, Any], text: str) -> float | None:
    paper, goal = card.get("paper", {}), card.get("objective", {})
    if "method" not in paper or "primary_metric" not in goal:
        return None
    return reported_from_tables(text, paper["method"], goal["primary_metric"])


def _requirements(snapshot: bytes, card: dict[str, Any]) -> str | None:
    requirements_file = card.get("environment", {}).get("requirements")
    return _read_text(snapshot, requirements_file, "requirements") if requirements_file else None


def _read_text(snapshot: bytes, relative: str, what: str) -> str:
    try:
        return read_member(snapshot, relative).decode("utf-8")
    except FileNotFoundError:
        hint = " (see examples/README.md for the format)" if relative == TASK_CARD else ""
        raise TaskCardError(f"{what} {relative!r} not found in the paper folder{hint}") from None
    except UnicodeDecodeError:
        raise TaskCardError(f"{what} {relative!r} is not UTF-8 text") from None


def register(broker: NatsBroker, runtime: ServiceRuntime[ObjectiveState], brain: Any = None) -> None:
    runtime.subscribe_events(broker, reaction(brain), "Consumes ResourcesPrepared; emits ObjectiveSet or ObjectiveFailed.")
    document_brain_events(broker, runtime.subjects, AGENT)

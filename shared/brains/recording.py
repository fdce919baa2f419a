"""Every model exchange as a record: live calls are timed and priced; replayed calls answer from
recorded `ModelCalled` events and never reach a model.

A call is looked up by (agent, call key) and must carry the same prompt hash as the recording;
a missing or different recording is a `ReplayMissing` error that names the call.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.brains.wire import ChatBackend, ChatRequest, ModelError
from shared.contracts import BrainFellBack, BrainSelected, ContractError, Event, ModelCalled, parse_event

INLINE_PROMPT_CHARS = 8000


class ReplayMissing(RuntimeError):
    """Replay needs an answer the recording does not hold; replay never falls through to a live call."""


@dataclass(frozen=True)
class Exchange:
    """What came back from one call: the answer text, or an error kind and message."""

    answer: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_seconds: float = 0.0
    error_kind: str | None = None
    error: str | None = None
    retry_after: float | None = None


class Transport:
    """Where answers come from: a live backend or a recording."""

    backend: str
    model: str
    live: bool

    def exchange(self, agent: str, campaign: str, call_key: str, request: ChatRequest) -> Exchange:
        raise NotImplementedError

    def wait(self, seconds: float) -> None:
        """Honour a rate limit's Retry-After; a replay does not wait."""


class LiveTransport(Transport):
    live = True

    def __init__(self, backend: ChatBackend, sleep: Callable[[float], None] = time.sleep) -> None:
        self.chat_backend = backend
        self.backend = backend.backend
        self.model = backend.model
        self._sleep = sleep

    def exchange(self, agent: str, campaign: str, call_key: str, request: ChatRequest) -> Exchange:
        started = time.perf_counter()
        try:
            reply = self.chat_backend.chat(request)
        except ModelError as error:
            return Exchange(None, latency_seconds=round(time.perf_counter() - started, 3), error_kind=error.kind, error=error.message, retry_after=error.retry_after)
        return Exchange(reply.text, reply.prompt_tokens, reply.completion_tokens, round(time.perf_counter() - started, 3))

    def wait(self, seconds: float) -> None:
        self._sleep(seconds)


def prompt_sha256(request: ChatRequest) -> str:
    return hashlib.sha256(request.canonical().encode()).hexdigest()


class RecordedAnswers:
    """The `ModelCalled` and `BrainSelected` events of recorded campaigns, indexed for replay."""

    def __init__(self, events: Iterable[Event], source: str = "the recording") -> None:
        self.source = source
        self.calls: dict[tuple[str, str, str], ModelCalled] = {}
        self.selected: dict[tuple[str, str], BrainSelected] = {}
        self.campaigns: set[str] = set()
        for event in events:
            if isinstance(event, ModelCalled):
                self.calls[(event.campaign, event.agent, event.call_key)] = event
                self.campaigns.add(event.campaign)
            elif isinstance(event, BrainSelected):
                self.selected[(event.campaign, event.agent)] = event
                self.campaigns.add(event.campaign)

    @classmethod
    def from_jsonl(cls, path: str | Path) -> RecordedAnswers:
        """Events as `autosota events <campaign>` writes them, one JSON object a line."""
        events: list[Event] = []
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                events.append(parse_event(json.loads(line)))
            except (ContractError, ValueError) as error:
                raise ValueError(f"{path}:{number}: not an event: {error}") from None
        return cls(events, source=str(path))

    def _campaign(self, campaign: str) -> str:
        # A recording of one campaign answers a re-run of it under another campaign id too.
        if campaign not in self.campaigns and len(self.campaigns) == 1:
            return next(iter(self.campaigns))
        return campaign

    def find(self, agent: str, campaign: str, call_key: str, prompt_hash: str) -> ModelCalled:
        recorded = self.calls.get((self._campaign(campaign), agent, call_key))
        if recorded is None:
            raise ReplayMissing(f"no recorded answer for {agent} call {call_key!r} of campaign {campaign} in {self.source}; replay makes no live call")
        if recorded.prompt_sha256 != prompt_hash:
            raise ReplayMissing(
                f"{agent} call {call_key!r} of campaign {campaign} asks a different prompt than the one recorded in {self.source} "
                f"(sha256 {prompt_hash[:12]} vs {recorded.prompt_sha256[:12]}): the decision inputs diverged"
            )
        return recorded

    def brain_of(self, agent: str, campaign: str | None = None) -> BrainSelected | None:
        if campaign is not None:
            return self.selected.get((self._campaign(campaign), agent))
        found = [selected for (_, name), selected in self.selected.items() if name == agent]
        return found[0] if found else None


class RecordedTransport(Transport):
    live = False

    def __init__(self, answers: RecordedAnswers, backend: str, model: str) -> None:
        self.answers = answers
        self.backend = backend
        self.model = model

    def exchange(self, agent: str, campaign: str, call_key: str, request: ChatRequest) -> Exchange:
        recorded = self.answers.find(agent, campaign, call_key, prompt_sha256(request))
        return Exchange(
            recorded.answer if recorded.outcome != "failed" else None,
            recorded.prompt_tokens,
            recorded.completion_tokens,
            recorded.latency_seconds,
            recorded.error_kind if recorded.outcome == "failed" else None,
            recorded.error if recorded.outcome == "failed" else None,
            recorded.retry_after_seconds,
        )


def model_called(
    agent: str,
    campaign: str,
    purpose: str,
    call_key: str,
    transport: Transport,
    request: ChatRequest,
    exchange: Exchange,
    outcome: str,
    cost: float,
    error: str | None = None,
) -> ModelCalled:
    prompt = request.canonical()
    return ModelCalled(
        campaign=campaign,
        agent=agent,
        purpose=purpose,
        call_key=call_key,
        backend=transport.backend,
        model=transport.model,
        prompt_sha256=hashlib.sha256(prompt.encode()).hexdigest(),
        prompt_chars=len(prompt),
        prompt=prompt,
        answer=exchange.answer,
        outcome=outcome,  # type: ignore[arg-type]
        error_kind=exchange.error_kind if outcome == "failed" else ("invalid_answer" if outcome == "invalid" else None),
        error=error if error is not None else exchange.error,
        prompt_tokens=exchange.prompt_tokens,
        completion_tokens=exchange.completion_tokens,
        latency_seconds=exchange.latency_seconds,
        cost=cost,
        retry_after_seconds=exchange.retry_after,
    )


async def offload_prompts(events: list[Event], artifacts: object | None, limit: int = INLINE_PROMPT_CHARS) -> list[Event]:
    """Large prompts go to the artifact store under their sha256; the event keeps the hash only."""
    kept: list[Event] = []
    for event in events:
        if isinstance(event, ModelCalled) and event.prompt is not None and len(event.prompt) > limit:
            if artifacts is not None:
                stored = await artifacts.put(event.prompt.encode())  # type: ignore[attr-defined]
                assert stored == event.prompt_sha256
            event = event.model_copy(update={"prompt": None})
        kept.append(event)
    return kept


def document_brain_events(broker: Any, subjects: Any, service: str) -> None:
    """A brain's record travels in its agent's own subject tree; declare it for the AsyncAPI document."""
    for event_class in (ModelCalled, BrainSelected, BrainFellBack):
        event_type = event_class.model_fields["event_type"].default
        broker.publisher(
            subjects.event(service, "{campaign}", event_type),
            schema=event_class,
            title=f"{service}:{event_type}",
            description=(event_class.__doc__ or event_type).strip().splitlines()[0],
            include_in_schema=True,
        )

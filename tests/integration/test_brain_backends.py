"""Conformance of the model backends: Ollama through the `ollama` client, OpenAI-compatible over httpx.

In CI every test runs against tests/model_server.py, a scripted server speaking both wire formats,
streaming and not, with its errors. With OLLAMA_HOST and AUTOSOTA_MODEL set (and, for the hosted
variant, AUTOSOTA_OPENAI_BASE_URL), the tests marked for every endpoint also run, unchanged,
against that real server; the fault-injection tests need the scripted server.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from pydantic import BaseModel, ConfigDict

from shared.brain import CallScope
from shared.brains.model import BrainLimits, Conversation, ModelBrain, ModelUnavailable
from shared.brains.recording import LiveTransport, RecordedAnswers, RecordedTransport, ReplayMissing
from shared.brains.wire import ChatBackend, ChatRequest, ModelError, OllamaBackend, OpenAIBackend
from tests.model_server import FakeModelServer, Reply, scripted

MODEL = "scripted-coder"
SECRET = "sk-conformance-0123456789abcdef"
SCOPE = CallScope(agent="tester", campaign="c1", scope="conformance")


class Sum(BaseModel):
    model_config = ConfigDict(extra="forbid")

    total: int


QUESTION = [
    {"role": "system", "content": "Answer with a JSON object that matches the given schema and nothing else."},
    {"role": "user", "content": 'What is 2 + 3? Answer as {"total": <the sum>}.'},
]


@dataclass
class Endpoint:
    """One backend wired to one server; `fake` is None for a real server."""

    api: str
    stream: bool
    url: str
    model: str
    fake: FakeModelServer | None
    api_key: str | None = None

    def backend(self, model: str | None = None, timeout: float = 30.0, api_key: str | None = None) -> ChatBackend:
        if self.api == "ollama":
            return OllamaBackend(self.url, model or self.model, timeout=timeout, stream=self.stream)
        return OpenAIBackend(self.url, model or self.model, api_key if api_key is not None else self.api_key, "AUTOSOTA_API_KEY", timeout=timeout, stream=self.stream)

    def brain(self, limits: BrainLimits | None = None, sleep: Callable[[float], None] | None = None, **backend: object) -> ModelBrain:
        transport = LiveTransport(self.backend(**backend), sleep=sleep or (lambda seconds: None))  # type: ignore[arg-type]
        return ModelBrain(transport, limits or BrainLimits(answer_retries=2))


def real_endpoints() -> list[tuple[str, bool, str]]:
    model = os.environ.get("AUTOSOTA_MODEL")
    found = []
    if model and os.environ.get("OLLAMA_HOST"):
        found.append(("ollama", True, "real"))
    if model and os.environ.get("AUTOSOTA_OPENAI_BASE_URL"):
        found.append(("openai", True, "real"))
    return found


FAKE_VARIANTS = [(api, stream, "fake") for api in ("ollama", "openai") for stream in (True, False)]


def _ids(variant: tuple[str, bool, str]) -> str:
    api, stream, where = variant
    return f"{where}-{api}-{'stream' if stream else 'whole'}"


def _endpoint(variant: tuple[str, bool, str]) -> Iterator[Endpoint]:
    api, stream, where = variant
    if where == "real":
        url = os.environ["OLLAMA_HOST"] if api == "ollama" else os.environ["AUTOSOTA_OPENAI_BASE_URL"]
        key = os.environ.get(os.environ.get("AUTOSOTA_API_KEY_ENV", "AUTOSOTA_API_KEY"))
        yield Endpoint(api, stream, url, os.environ["AUTOSOTA_MODEL"], None, key)
        return
    with FakeModelServer(scripted('{"total": 5}'), models=(MODEL,), api_key=SECRET if api == "openai" else None) as server:
        yield Endpoint(api, stream, server.url if api == "ollama" else server.openai_url, MODEL, server, SECRET if api == "openai" else None)


@pytest.fixture(params=FAKE_VARIANTS + real_endpoints(), ids=_ids)
def endpoint(request: pytest.FixtureRequest) -> Iterator[Endpoint]:
    """Every endpoint: the scripted server in both formats and modes, plus a configured real server."""
    yield from _endpoint(request.param)


@pytest.fixture(params=FAKE_VARIANTS, ids=_ids)
def fake(request: pytest.FixtureRequest) -> Iterator[Endpoint]:
    """The scripted server only: for answers and faults a real server cannot be told to produce."""
    yield from _endpoint(request.param)


def ask(brain: ModelBrain, scope: CallScope = SCOPE) -> tuple[Sum | None, Conversation, ModelUnavailable | None]:
    conversation = Conversation(brain, scope, "conformance")
    try:
        return conversation.ask(QUESTION, Sum), conversation, None
    except ModelUnavailable as error:
        return None, conversation, error


# ---------------------------------------------------------------- every endpoint


def test_a_structured_answer_validates_and_is_recorded_with_its_tokens(endpoint: Endpoint) -> None:
    answer, conversation, error = ask(endpoint.brain())
    assert error is None, error
    assert isinstance(answer, Sum)
    [call] = [c for c in conversation.calls if c.outcome == "answered"]
    assert call.backend == endpoint.api and call.model == endpoint.model and call.call_key.startswith("conformance#")
    assert call.prompt_tokens > 0 and call.completion_tokens > 0 and call.latency_seconds >= 0
    assert call.prompt is not None and "2 + 3" in call.prompt and len(call.prompt_sha256) == 64
    if endpoint.fake is not None:
        assert answer.total == 5
        [received] = endpoint.fake.requests
        assert received.schema == Sum.model_json_schema() and received.stream == endpoint.stream
        assert received.body["options" if endpoint.api == "ollama" else "temperature"] is not None


def test_a_missing_model_is_a_clear_error_and_a_permanent_fallback(endpoint: Endpoint) -> None:
    with pytest.raises(ModelError) as raised:
        endpoint.backend(model="no-such-model-autosota").chat(_request())
    assert raised.value.kind == "model_not_found" and "no-such-model-autosota" in raised.value.message
    thought = endpoint.brain(model="no-such-model-autosota")._think(SCOPE, "conformance", QUESTION, Sum, None)
    assert thought.answer is None and thought.fallback is not None
    assert thought.fallback.kind == "model_not_found" and thought.fallback.permanent
    assert [c.outcome for c in thought.calls] == ["failed"] and thought.calls[0].error_kind == "model_not_found"


def test_a_server_that_is_not_there_is_a_connection_error(endpoint: Endpoint) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = Endpoint(endpoint.api, endpoint.stream, f"http://127.0.0.1:{port}" + ("/v1" if endpoint.api == "openai" else ""), endpoint.model, None)
    with pytest.raises(ModelError) as raised:
        closed.backend(timeout=5).chat(_request())
    assert raised.value.kind == "connection" and f"127.0.0.1:{port}" in raised.value.message


# ---------------------------------------------------------------- the scripted server only


def test_an_invalid_answer_is_sent_back_with_the_validation_error(fake: Endpoint) -> None:
    assert fake.fake is not None
    fake.fake.responder = scripted('{"total": "five"}', '{"total": 5}')
    answer, conversation, error = ask(fake.brain())
    assert error is None and answer == Sum(total=5)
    assert [c.outcome for c in conversation.calls] == ["invalid", "answered"]
    assert conversation.calls[0].error_kind == "invalid_answer" and "total" in (conversation.calls[0].error or "")
    retry = fake.fake.requests[1]
    assert retry.messages[-2] == {"role": "assistant", "content": '{"total": "five"}'}
    assert "does not validate" in retry.messages[-1]["content"] and "total" in retry.messages[-1]["content"]


def test_an_answer_that_never_validates_ends_in_a_failed_call_and_a_fallback(fake: Endpoint) -> None:
    assert fake.fake is not None
    fake.fake.responder = scripted("I think the answer is five.")
    thought = fake.brain(BrainLimits(answer_retries=2))._think(SCOPE, "conformance", QUESTION, Sum, None)
    assert [c.outcome for c in thought.calls] == ["invalid"] * 3
    assert thought.fallback is not None and thought.fallback.kind == "invalid_answer" and not thought.fallback.permanent
    assert "3 tries" in thought.fallback.reason


def test_a_fenced_json_answer_is_accepted(fake: Endpoint) -> None:
    assert fake.fake is not None
    fake.fake.responder = scripted('```json\n{"total": 5}\n```')
    answer, _, error = ask(fake.brain())
    assert error is None and answer == Sum(total=5)


def test_a_rate_limit_is_waited_out_then_answered(fake: Endpoint) -> None:
    assert fake.fake is not None
    fake.fake.responder = scripted(Reply(status=429, error="Rate limit reached for requests", headers={"Retry-After": "1.5"}), '{"total": 5}')
    waits: list[float] = []
    answer, conversation, error = ask(fake.brain(sleep=waits.append))
    assert error is None and answer == Sum(total=5)
    assert [(c.outcome, c.error_kind) for c in conversation.calls] == [("failed", "rate_limited"), ("answered", None)]
    # Ollama's client does not expose Retry-After: the brain waits its default there.
    assert waits == ([1.5] if fake.api == "openai" else [2.0])


def test_a_rate_limit_that_persists_is_a_fallback_not_a_stall(fake: Endpoint) -> None:
    assert fake.fake is not None
    fake.fake.responder = scripted(Reply(status=429, error="Rate limit reached", headers={"Retry-After": "1"}))
    waits: list[float] = []
    thought = fake.brain(BrainLimits(rate_limit_retries=2), sleep=waits.append)._think(SCOPE, "conformance", QUESTION, Sum, None)
    assert len(thought.calls) == 3 and len(waits) == 2
    assert thought.fallback is not None and thought.fallback.kind == "rate_limited" and not thought.fallback.permanent


def test_a_slow_server_times_out_with_a_clear_message(fake: Endpoint) -> None:
    assert fake.fake is not None
    fake.fake.responder = scripted(Reply('{"total": 5}', delay=2.0))
    with pytest.raises(ModelError) as raised:
        fake.backend(timeout=0.5).chat(_request())
    assert raised.value.kind == "timeout" and "0.5 s" in raised.value.message


def test_a_server_error_is_reported(fake: Endpoint) -> None:
    assert fake.fake is not None
    fake.fake.responder = scripted(Reply(status=500, error="CUDA out of memory"))
    with pytest.raises(ModelError) as raised:
        fake.backend().chat(_request())
    assert raised.value.kind == "server" and "500" in raised.value.message and "CUDA out of memory" in raised.value.message


def test_a_wrong_api_key_names_the_variable_never_the_key() -> None:
    with FakeModelServer(scripted('{"total": 5}'), models=(MODEL,), api_key=SECRET) as server:
        wrong = "sk-wrong-key-9876543210"
        backend = OpenAIBackend(server.openai_url, MODEL, wrong, "AUTOSOTA_API_KEY", stream=False)
        with pytest.raises(ModelError) as raised:
            backend.chat(_request())
        assert raised.value.kind == "unauthorized" and "$AUTOSOTA_API_KEY" in raised.value.message
        assert wrong not in str(raised.value) and wrong not in repr(backend)
        assert server.requests[0].headers["authorization"] == f"Bearer {wrong}"


def test_the_token_budget_stops_calls_before_they_are_made(fake: Endpoint) -> None:
    assert fake.fake is not None
    brain = fake.brain(BrainLimits(token_budget=100))
    spent = CallScope(agent="tester", campaign="c1", scope="conformance", tokens_used=100)
    thought = brain._think(spent, "conformance", QUESTION, Sum, None)
    assert thought.calls == () and fake.fake.requests == []
    assert thought.fallback is not None and thought.fallback.kind == "token_budget" and thought.fallback.permanent
    assert "100 tokens" in thought.fallback.reason


def test_the_cost_is_priced_from_the_table(fake: Endpoint) -> None:
    assert fake.fake is not None
    fake.fake.responder = scripted(Reply('{"total": 5}', prompt_tokens=1000, completion_tokens=500))
    _, conversation, _ = ask(fake.brain(BrainLimits(prices=(2.0, 8.0))))
    assert conversation.calls[0].cost == pytest.approx((1000 * 2.0 + 500 * 8.0) / 1e6)


# ---------------------------------------------------------------- replay


def test_replay_answers_from_the_recording_and_never_calls_the_server(fake: Endpoint) -> None:
    assert fake.fake is not None
    fake.fake.responder = scripted('{"total": "five"}', '{"total": 5}')
    live = fake.brain()._think(SCOPE, "conformance", QUESTION, Sum, None)
    fake.fake.stop()
    stamped = [call.model_copy(update={"producer": "tester"}) for call in live.calls]
    replayed = ModelBrain(RecordedTransport(RecordedAnswers(stamped), fake.api, MODEL), BrainLimits(answer_retries=2))._think(SCOPE, "conformance", QUESTION, Sum, None)
    assert replayed.answer == live.answer == Sum(total=5)
    assert replayed.calls == live.calls


def test_replay_without_a_recording_names_the_call(fake: Endpoint) -> None:
    brain = ModelBrain(RecordedTransport(RecordedAnswers([]), fake.api, MODEL))
    with pytest.raises(ReplayMissing, match=r"no recorded answer for tester call 'conformance#1' of campaign c1"):
        brain._think(SCOPE, "conformance", QUESTION, Sum, None)
    assert fake.fake is not None and fake.fake.requests == []


def test_replay_of_a_different_prompt_is_a_divergence(fake: Endpoint) -> None:
    assert fake.fake is not None
    live = fake.brain()._think(SCOPE, "conformance", QUESTION, Sum, None)
    other = [QUESTION[0], {"role": "user", "content": "What is 2 + 4?"}]
    brain = ModelBrain(RecordedTransport(RecordedAnswers(list(live.calls)), fake.api, MODEL))
    with pytest.raises(ReplayMissing, match="different prompt"):
        brain._think(SCOPE, "conformance", other, Sum, None)


def _request() -> ChatRequest:
    return ChatRequest("conformance", tuple(QUESTION), Sum.model_json_schema(), "Sum")

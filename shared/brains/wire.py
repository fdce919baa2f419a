"""Chat backends on the wire: Ollama through the `ollama` client, OpenAI-compatible endpoints over
httpx, and a scripted backend that answers from a file.

Each backend turns one chat request into the answer text and its token counts, or a `ModelError`
whose kind says what went wrong (timeout, connection, model_not_found, rate_limited,
unauthorized, server, request) with a message a person can act on. No message carries the API key.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Protocol

import httpx
import ollama
from ollama._client import _parse_host

ERROR_KINDS = ("timeout", "connection", "model_not_found", "rate_limited", "unauthorized", "server", "request")
BODY_EXCERPT = 300


@dataclass(frozen=True)
class ChatRequest:
    purpose: str
    messages: tuple[dict[str, str], ...]
    schema: dict[str, Any] | None = None
    schema_name: str = "answer"

    def canonical(self) -> str:
        """The prompt as recorded and hashed: messages and schema as sorted, compact JSON."""
        return json.dumps({"messages": list(self.messages), "schema": self.schema}, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ChatReply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class ModelError(Exception):
    kind: str
    message: str
    retry_after: float | None = None

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


class ChatBackend(Protocol):
    backend: str
    model: str

    def chat(self, request: ChatRequest) -> ChatReply: ...


def redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= BODY_EXCERPT else flat[: BODY_EXCERPT - 3] + "..."


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    except ValueError:
        pass
    try:
        from datetime import UTC, datetime

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def _status_error(status: int, where: str, model: str, detail: str, retry_after: float | None = None) -> ModelError:
    if status == 404:
        return ModelError("model_not_found", f"model {model!r} is not available at {where}: {detail}")
    if status in (401, 403):
        return ModelError("unauthorized", f"{where} refused the request (HTTP {status}): {detail}")
    if status == 429:
        return ModelError("rate_limited", f"{where} is rate limiting (HTTP 429): {detail}", retry_after)
    if status in (408, 504):
        return ModelError("timeout", f"{where} timed out (HTTP {status}): {detail}")
    if status >= 500:
        return ModelError("server", f"{where} failed (HTTP {status}): {detail}")
    return ModelError("request", f"{where} rejected the request (HTTP {status}): {detail}")


# ---------------------------------------------------------------- Ollama


class OllamaBackend:
    """Ollama's /api/chat through the `ollama` client; `format` carries the answer's JSON schema."""

    backend = "ollama"

    def __init__(self, host: str, model: str, timeout: float = 120.0, stream: bool = True, seed: int = 0) -> None:
        self.host = _parse_host(host)
        self.model = model
        self.timeout = timeout
        self.stream = stream
        self.seed = seed
        self.client = ollama.Client(host=self.host, timeout=timeout)

    def chat(self, request: ChatRequest) -> ChatReply:
        where = f"the Ollama server at {self.host}"
        options = {"temperature": 0, "seed": self.seed}
        try:
            if not self.stream:
                response = self.client.chat(model=self.model, messages=list(request.messages), format=request.schema, stream=False, options=options)
                return ChatReply(response.message.content or "", response.prompt_eval_count or 0, response.eval_count or 0)
            parts: list[str] = []
            prompt_tokens = completion_tokens = 0
            for chunk in self.client.chat(model=self.model, messages=list(request.messages), format=request.schema, stream=True, options=options):
                parts.append(chunk.message.content or "")
                if chunk.done:
                    prompt_tokens, completion_tokens = chunk.prompt_eval_count or 0, chunk.eval_count or 0
            return ChatReply("".join(parts), prompt_tokens, completion_tokens)
        except ollama.ResponseError as error:
            raise self._failure(error, where) from None
        except httpx.TimeoutException:
            raise ModelError("timeout", f"no answer from {where} within {self.timeout:g} s") from None
        except (ConnectionError, httpx.TransportError) as error:
            raise ModelError("connection", f"cannot reach {where}: {type(error).__name__}") from None
        except (ValueError, KeyError, TypeError) as error:
            raise ModelError("server", f"{where} answered something that is not an Ollama chat response: {excerpt(str(error))}") from None

    def _failure(self, error: ollama.ResponseError, where: str) -> ModelError:
        detail = excerpt(str(error.error))
        if error.status_code == -1:  # an error line inside a stream
            return ModelError("server", f"{where} reported: {detail}")
        if error.status_code == 404:
            return ModelError("model_not_found", f"model {self.model!r} is not on {where} (pull it with `ollama pull {self.model}`): {detail}")
        return _status_error(error.status_code, where, self.model, detail)


def ollama_reachable(host: str, timeout: float = 1.0) -> bool:
    try:
        return httpx.get(f"{_parse_host(host)}/api/version", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


# ---------------------------------------------------------------- OpenAI-compatible


class OpenAIBackend:
    """Any OpenAI-compatible /chat/completions endpoint over httpx; response_format carries the schema."""

    backend = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None, api_key_env: str, timeout: float = 120.0, stream: bool = True, seed: int = 0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.stream = stream
        self.seed = seed
        self._api_key = api_key
        self.api_key_env = api_key_env
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.base_url!r}, {self.model!r}, key from ${self.api_key_env})"

    def payload(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": list(request.messages), "temperature": 0, "seed": self.seed, "stream": self.stream}
        if request.schema is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": request.schema_name, "schema": request.schema, "strict": False}}
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def chat(self, request: ChatRequest) -> ChatReply:
        where = f"the endpoint {self.base_url}"
        try:
            if self.stream:
                with self.client.stream("POST", "/chat/completions", json=self.payload(request)) as response:
                    if response.status_code != 200:
                        response.read()
                        raise self._failure(response, where)
                    return self._read_stream(response, where)
            response = self.client.post("/chat/completions", json=self.payload(request))
            if response.status_code != 200:
                raise self._failure(response, where)
            return self._read_body(response.json(), where)
        except ModelError as error:
            error.message = redact(error.message, self._api_key)
            raise
        except httpx.TimeoutException:
            raise ModelError("timeout", f"no answer from {where} within {self.timeout:g} s") from None
        except httpx.TransportError as error:
            raise ModelError("connection", f"cannot reach {where}: {type(error).__name__}") from None
        except (ValueError, KeyError, TypeError, IndexError) as error:
            raise ModelError("server", redact(f"{where} answered something that is not a chat completion: {excerpt(str(error))}", self._api_key)) from None

    def _failure(self, response: httpx.Response, where: str) -> ModelError:
        if response.status_code in (401, 403):
            # The provider's message may echo part of the key; say only where the key came from.
            return ModelError("unauthorized", f"{where} refused the API key from ${self.api_key_env} (HTTP {response.status_code})")
        detail = _error_detail(response)
        return _status_error(response.status_code, where, self.model, detail, retry_after_seconds(response.headers.get("retry-after")))

    @staticmethod
    def _read_body(body: dict[str, Any], where: str) -> ChatReply:
        content = body["choices"][0]["message"].get("content") or ""
        usage = body.get("usage") or {}
        return ChatReply(content, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))

    @staticmethod
    def _read_stream(response: httpx.Response, where: str) -> ChatReply:
        parts: list[str] = []
        usage: dict[str, Any] = {}
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[len("data:") :].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("error"):
                raise ModelError("server", f"{where} reported in its stream: {excerpt(json.dumps(chunk['error']))}")
            for choice in chunk.get("choices") or []:
                parts.append((choice.get("delta") or {}).get("content") or "")
            usage = chunk.get("usage") or usage
        return ChatReply("".join(parts), int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


def _error_detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return excerpt(response.text) or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return excerpt(str(error.get("message") or error))
    return excerpt(str(error or body))


# ---------------------------------------------------------------- scripted


@dataclass
class ScriptedBackend:
    """Answers from a JSON file {purpose: answer or [answer per try]}; the n-th try of a call gets the n-th answer."""

    path: Path
    model: str = "scripted"
    backend: str = "scripted"
    answers: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.answers is None:
            self.answers = json.loads(Path(self.path).read_text())

    def chat(self, request: ChatRequest) -> ChatReply:
        scripted = (self.answers or {}).get(request.purpose)
        if scripted is None:
            raise ModelError("model_not_found", f"the script {self.path} has no answer for {request.purpose!r}")
        tries = sum(1 for message in request.messages if message.get("role") == "assistant")
        answer = scripted[min(tries, len(scripted) - 1)] if isinstance(scripted, list) else scripted
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return ChatReply(text, prompt_tokens=len(request.canonical()) // 4, completion_tokens=len(text) // 4)

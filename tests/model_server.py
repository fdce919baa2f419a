"""A scripted model server for the tests, speaking the real wire formats in a background thread.

Ollama: POST /api/chat (NDJSON stream or one JSON body, `format` = JSON schema), GET /api/version,
GET /api/tags. OpenAI-compatible: POST /v1/chat/completions (SSE stream or one JSON body,
response_format json_schema, usage tokens), GET /v1/models. Errors as the real servers send them:
404 for an unknown model, 401 for a wrong API key, 429 with Retry-After.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CREATED_AT = "2025-01-01T00:00:00Z"
CHUNK_CHARS = 16


@dataclass
class Received:
    api: str  # "ollama" or "openai"
    path: str
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def messages(self) -> list[dict[str, str]]:
        return list(self.body.get("messages", []))

    @property
    def stream(self) -> bool:
        # Ollama streams unless told not to; OpenAI only when asked.
        return bool(self.body.get("stream", self.api == "ollama"))

    @property
    def schema(self) -> dict[str, Any] | None:
        if self.api == "ollama":
            value = self.body.get("format")
            return value if isinstance(value, dict) else None
        response_format = self.body.get("response_format") or {}
        return (response_format.get("json_schema") or {}).get("schema") if response_format.get("type") == "json_schema" else None

    def text(self) -> str:
        return "\n".join(m.get("content", "") for m in self.messages)


@dataclass
class Reply:
    text: str = ""
    status: int = 200
    error: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


Responder = Callable[[Received], Reply]


class FakeModelServer:
    """Answers chat requests with `responder`; remembers every request it received."""

    def __init__(self, responder: Responder | None = None, models: tuple[str, ...] = ("scripted-coder",), api_key: str | None = None) -> None:
        self.responder: Responder = responder or (lambda received: Reply('{"answer": "ok"}'))
        self.models = set(models)
        self.api_key = api_key
        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> FakeModelServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
                return

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                if self.path == "/api/version":
                    self._json(200, {"version": "0.6.0"})
                elif self.path == "/api/tags":
                    self._json(200, {"models": [{"name": m, "model": m} for m in sorted(fake.models)]})
                elif self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in sorted(fake.models)]})
                else:
                    self._json(404, {"error": "not found"})

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                api = "ollama" if self.path == "/api/chat" else "openai" if self.path.endswith("/chat/completions") else ""
                if not api:
                    self._json(404, {"error": "not found"})
                    return
                received = Received(api, self.path, body, {k.lower(): v for k, v in self.headers.items()})
                with fake._lock:
                    fake.requests.append(received)
                if api == "openai" and fake.api_key is not None and received.headers.get("authorization") != f"Bearer {fake.api_key}":
                    given = received.headers.get("authorization", "")[7:]
                    self._error(api, 401, f"Incorrect API key provided: {given[:3]}***{given[-2:]}", "invalid_api_key")
                    return
                if received.model not in fake.models:
                    message = f'model "{received.model}" not found, try pulling it first' if api == "ollama" else f"The model `{received.model}` does not exist or you do not have access to it."
                    self._error(api, 404, message, "model_not_found")
                    return
                reply = fake.responder(received)
                if reply.delay:
                    time.sleep(reply.delay)
                if reply.status != 200:
                    self._error(api, reply.status, reply.error or "error", "rate_limit_exceeded" if reply.status == 429 else "error", reply.headers)
                    return
                prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else max(1, len(received.text()) // 4)
                completion_tokens = reply.completion_tokens if reply.completion_tokens is not None else max(1, len(reply.text) // 4)
                if api == "ollama":
                    self._ollama(received, reply.text, prompt_tokens, completion_tokens)
                else:
                    self._openai(received, reply.text, prompt_tokens, completion_tokens)

            # -------------------------------------------------------- wire formats

            def _ollama(self, received: Received, text: str, prompt_tokens: int, completion_tokens: int) -> None:
                final = {
                    "model": received.model, "created_at": CREATED_AT, "message": {"role": "assistant", "content": ""},
                    "done": True, "done_reason": "stop", "total_duration": 1000, "load_duration": 10,
                    "prompt_eval_count": prompt_tokens, "prompt_eval_duration": 100, "eval_count": completion_tokens, "eval_duration": 500,
                }
                if not received.stream:
                    self._json(200, {**final, "message": {"role": "assistant", "content": text}})
                    return
                self._begin(200, "application/x-ndjson")
                for piece in _pieces(text):
                    self._write(json.dumps({"model": received.model, "created_at": CREATED_AT, "message": {"role": "assistant", "content": piece}, "done": False}) + "\n")
                self._write(json.dumps(final) + "\n")

            def _openai(self, received: Received, text: str, prompt_tokens: int, completion_tokens: int) -> None:
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
                head = {"id": "chatcmpl-fake", "created": 1735689600, "model": received.model}
                if not received.stream:
                    self._json(200, {**head, "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}], "usage": usage})
                    return
                self._begin(200, "text/event-stream")
                chunk = {**head, "object": "chat.completion.chunk"}
                self._write("data: " + json.dumps({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}) + "\n\n")
                for piece in _pieces(text):
                    self._write("data: " + json.dumps({**chunk, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}) + "\n\n")
                self._write("data: " + json.dumps({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + "\n\n")
                if (received.body.get("stream_options") or {}).get("include_usage"):
                    self._write("data: " + json.dumps({**chunk, "choices": [], "usage": usage}) + "\n\n")
                self._write("data: [DONE]\n\n")

            def _error(self, api: str, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> None:
                body = {"error": message} if api == "ollama" else {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
                self._json(status, body, headers)

            def _json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _begin(self, status: int, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.end_headers()

            def _write(self, text: str) -> None:
                self.wfile.write(text.encode())
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-model-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "the server is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_url(self) -> str:
        return f"{self.url}/v1"


def scripted(*replies: Reply | str) -> Responder:
    """Answer with the replies in order; the last one repeats."""
    queue = [r if isinstance(r, Reply) else Reply(r) for r in replies]
    served = {"n": 0}
    lock = threading.Lock()

    def respond(received: Received) -> Reply:
        with lock:
            index = min(served["n"], len(queue) - 1)
            served["n"] += 1
        return queue[index]

    return respond


def _pieces(text: str) -> list[str]:
    return [text[i : i + CHUNK_CHARS] for i in range(0, len(text), CHUNK_CHARS)] or [""]

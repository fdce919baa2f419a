"""The embedded stack's nats-server admits only the holders of the token made for the run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats
import pytest
from faststream.nats.security import NatsToken

from shared.bus import broker_security, client_auth
from shared.cli import bus_for_reading
from shared.embedded import Stack
from shared.settings import Settings

pytestmark = pytest.mark.nats


async def _silent(error: Exception) -> None:
    """The refusal reaches the test as an exception."""


async def jetstream_account(url: str, **auth: Any) -> object:
    """JetStream's account info as a fresh client sees it; raises when the server refuses the client."""
    client = await asyncio.wait_for(nats.connect(url, connect_timeout=2, allow_reconnect=False, max_reconnect_attempts=0, error_cb=_silent, **auth), 10)
    try:
        return await client.jetstream().account_info()
    finally:
        await client.close()


def refused(url: str, **auth: Any) -> bool:
    try:
        asyncio.run(jetstream_account(url, **auth))
    except Exception as error:  # noqa: BLE001 - nats-py reports the refusal as a plain Error
        return "Authorization Violation" in str(error)
    return False


def test_the_token_is_a_setting_for_clients_and_brokers() -> None:
    settings = Settings(nats_token="t0ken")

    assert client_auth(settings) == {"token": "t0ken"}
    assert isinstance(broker_security(settings), NatsToken)
    assert client_auth(Settings(nats_token="")) == {}


def test_the_stack_server_refuses_clients_without_the_run_token(tmp_path: Path) -> None:
    with Stack(tmp_path, services=("resource",), ready_timeout=60) as stack:
        server = stack.nats
        assert server is not None and server.token
        # anyone who merely reaches the port is turned away
        assert refused(server.url)
        assert refused(server.url, token="guessed")
        # the run's token, as a setting or inside the stack's URL, is let in
        assert asyncio.run(jetstream_account(server.url, token=server.token))
        assert asyncio.run(jetstream_account(stack.url))
        # the service it spawned got the token from its environment, not from a URL or a command line
        assert stack.environment("resource")["NATS_URL"] == server.url
        assert stack.environment("resource")["AUTOSOTA_NATS_TOKEN"] == server.token
        assert server.process is not None
        assert server.token not in Path(f"/proc/{server.process.pid}/cmdline").read_text()
        assert server.token not in (tmp_path / "logs" / "resource.log").read_text()


def test_the_stack_gives_its_services_the_token_over_credentials_of_another_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOSOTA_NATS_USER", "someone-elsewhere")
    monkeypatch.setenv("AUTOSOTA_NATS_PASSWORD", "a-password-for-another-server")

    with Stack(tmp_path, services=("resource",), ready_timeout=60) as stack:
        assert stack.environment("resource")["AUTOSOTA_NATS_USER"] == ""
        stack.wait_ready(["resource"], timeout=30)


def test_reading_the_history_starts_a_server_that_refuses_clients_without_its_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NATS_URL", raising=False)
    with Stack(tmp_path, services=()):
        pass  # leaves an event store behind, as a finished run does

    with bus_for_reading(tmp_path) as url:
        address = "nats://" + url.rsplit("@", 1)[1]
        assert asyncio.run(jetstream_account(url))
        assert refused(address)

"""Settings carry a service's NATS credentials and the cluster's URLs; both of the service's
connections (the FastStream broker and the runtime's own client) use them."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import nats
import nkeys
import pytest
from faststream.nats.security import NatsCredentials, NatsNKey, NatsUserPassword

from services.resource.domain import ResourceDomain
from shared.bus import EmbeddedNats, broker_security, client_auth
from shared.runtime import ServiceRuntime, make_broker
from shared.settings import Settings

pytestmark = pytest.mark.nats


def test_settings_choose_the_credentials_and_split_the_server_list(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NATS_URL", "nats://a:4222, nats://b:4222,nats://c:4222")
    monkeypatch.setenv("AUTOSOTA_NATS_USER", "scheduler")
    monkeypatch.setenv("AUTOSOTA_NATS_PASSWORD", "s3cret-long-and-random")
    settings = Settings()
    assert settings.nats_servers == ["nats://a:4222", "nats://b:4222", "nats://c:4222"]
    # replies arrive on the user's own inbox, which only that user may read
    assert client_auth(settings) == {"user": "scheduler", "password": "s3cret-long-and-random", "inbox_prefix": "_INBOX_scheduler"}
    assert isinstance(broker_security(settings), NatsUserPassword)
    assert "s3cret" not in repr(settings), "a password must not show in logs of the settings"
    creds = tmp_path / "scheduler.creds"
    creds.write_text("")
    assert client_auth(Settings(nats_creds=creds)) == {"user_credentials": str(creds)}
    assert isinstance(broker_security(Settings(nats_creds=creds)), NatsCredentials)
    assert isinstance(broker_security(Settings(nats_nkey_seed=creds)), NatsNKey)
    monkeypatch.delenv("AUTOSOTA_NATS_USER")
    assert client_auth(Settings()) == {} and broker_security(Settings()) is None


async def test_a_service_connects_with_an_nkey_and_is_refused_without_it(tmp_path: Path) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(seed).public_key.decode()
    seed_file = tmp_path / "resource.nk"
    seed_file.write_bytes(seed)
    config = tmp_path / "nkey.conf"
    config.write_text(f'jetstream {{}}\nauthorization {{ users = [ {{ nkey: "{public}" }} ] }}\n')
    server = EmbeddedNats(tmp_path, config=config)
    await asyncio.to_thread(server.start, 20.0, {"nkeys_seed": str(seed_file)})
    try:
        settings = Settings(nats_url=server.url, nats_nkey_seed=seed_file, data_dir=tmp_path / "data", namespace="nk", persistence="sqlite")
        # Step 1: the runtime's own connection and the broker both authenticate with the seed.
        runtime = ServiceRuntime("resource", settings, ResourceDomain())
        await runtime.start()
        assert runtime.nc is not None and runtime.nc.is_connected
        broker = make_broker(settings, "resource")
        await broker.connect()
        await broker.stop()
        await runtime.stop()
        # Step 2: without it the server turns the connection away.
        with pytest.raises(Exception, match="Authorization"):
            await asyncio.wait_for(nats.connect(server.url, max_reconnect_attempts=1, allow_reconnect=False), 5)
    finally:
        server.stop()


def test_credentials_in_a_server_url_are_never_shown_and_a_token_is_no_user_name() -> None:
    from shared.bus import inbox_prefix, without_credentials

    assert without_credentials("nats://t0ken@127.0.0.1:4222, nats://cli:pw@h:5") == "nats://127.0.0.1:4222,nats://h:5"
    assert inbox_prefix(Settings(), "nats://t0ken@127.0.0.1:4222") == "_INBOX"
    assert inbox_prefix(Settings(), "nats://cli:pw@127.0.0.1:4222") == "_INBOX_cli"

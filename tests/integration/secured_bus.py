"""Helpers for tests against nats-server started with the shipped configuration (deploy/nats):
per-service users with their passwords, and the server log's record of refused actions."""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats

from shared.bus import EmbeddedNats, ensure_topology, free_port
from shared.embedded import service_of
from shared.subjects import SERVICES, Subjects

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
USERS = (*SERVICES, "cli", "admin", "sys")
UNRESTRICTED = ("admin", "sys")  # operators' users


def new_passwords() -> dict[str, str]:
    # nats-server reads a variable's value as a configuration value: a leading digit makes it a number
    return {user: "p" + secrets.token_hex(16) for user in USERS}


def server_env(passwords: dict[str, str]) -> dict[str, str]:
    """The variables deploy/nats/accounts.conf takes from the server's environment."""
    return {f"NATS_PASSWORD_{user.upper()}": password for user, password in passwords.items()}


def user_of(instance: str) -> str:
    return service_of(instance)


def auth(user: str, passwords: dict[str, str]) -> dict[str, Any]:
    """nats-py credentials of a user, with the reply inbox only that user may read (as the services use)."""
    if user in UNRESTRICTED:
        return {"user": user, "password": passwords[user]}
    return {"user": user, "password": passwords[user], "inbox_prefix": f"_INBOX_{user}"}


def service_credentials(instances: Iterable[str], passwords: dict[str, str]) -> dict[str, dict[str, str]]:
    """Each service instance's environment: its own NATS user (runners share the runner user)."""
    return {
        instance: {"AUTOSOTA_NATS_USER": user_of(instance), "AUTOSOTA_NATS_PASSWORD": passwords[user_of(instance)]}
        for instance in instances
    }


def violations(log: Path) -> list[str]:
    """The server's record of refused actions: (user, Publish|Subscription, subject) lines."""
    found = re.findall(r'"AUTOSOTA/user:([\w-]+)" - (Publish|Subscription) Violation - Subject "([^"]+)"', log.read_text(errors="replace"))
    return [f"{user} {kind} {subject}" for user, kind, subject in found]


def secured_server(data_dir: Path, passwords: dict[str, str]) -> EmbeddedNats:
    """One server with deploy/nats/nats-server.conf, on free ports of its own."""
    server = EmbeddedNats(data_dir, config=DEPLOY / "nats" / "nats-server.conf", env=server_env(passwords), extra_args=["-m", str(free_port())])
    server.start(auth=auth("admin", passwords))
    return server


@dataclass
class Secured:
    server: EmbeddedNats
    passwords: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    def url_of(self, user: str) -> str:
        return self.url.replace("nats://", f"nats://{user}:{self.passwords[user]}@")


def secured_deployment(data_dir: Path) -> Iterator[Secured]:
    """A secured server with its streams declared (by the operators' user), for a module's tests."""
    passwords = new_passwords()
    server = secured_server(data_dir, passwords)

    async def declare() -> None:
        client = await nats.connect(server.url, **auth("admin", passwords))
        await ensure_topology(client.jetstream(), Subjects())  # the permissions are written for no namespace
        await client.close()

    asyncio.run(declare())
    yield Secured(server, passwords)
    server.stop()


class LoopbackCluster:
    """deploy/nats/loopback/nats-{1,2,3}.conf on free ports: client, cluster and monitoring ports
    are given on the command line, everything else (names, JetStream, users) comes from the files."""

    def __init__(self, data_dir: Path, passwords: dict[str, str]) -> None:
        self.passwords = passwords
        self.client_ports = [free_port() for _ in range(3)]
        self.cluster_ports = [free_port() for _ in range(3)]
        self.servers: list[EmbeddedNats] = []
        for index in range(3):
            routes = ",".join(f"nats://127.0.0.1:{port}" for i, port in enumerate(self.cluster_ports) if i != index)
            self.servers.append(
                EmbeddedNats(
                    data_dir,
                    port=self.client_ports[index],
                    config=DEPLOY / "nats" / "loopback" / f"nats-{index + 1}.conf",
                    env=server_env(passwords),
                    name=f"nats-{index + 1}",
                    extra_args=["-m", str(free_port()), "--cluster", f"nats://127.0.0.1:{self.cluster_ports[index]}", "--routes", routes],
                )
            )

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    @property
    def url(self) -> str:
        return ",".join(self.urls)

    def start(self, timeout: float = 60.0) -> LoopbackCluster:
        for server in self.servers:
            server.launch()
        deadline = time.monotonic() + timeout
        for server in self.servers:  # JetStream answers only once the three have elected a leader
            server.wait_ready(max(1.0, deadline - time.monotonic()), auth=auth("admin", self.passwords))
        return self

    def server_named(self, name: str) -> EmbeddedNats:
        return next(s for s in self.servers if s.name == name.removeprefix("autosota-"))

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    def logs(self) -> list[Path]:
        return [server.log_path for server in self.servers]


def nats_server_version() -> str:
    from shared.bus import nats_server_binary

    return subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True, check=False).stdout.strip()

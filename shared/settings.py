"""Settings from the environment (AUTOSOTA_*), with defaults that run on one machine."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.subjects import Subjects

POSTGRES_IDENTIFIER_MAX = 63


def user_cache_dir() -> Path:
    """Where this user's caches live: $XDG_CACHE_HOME, else ~/.cache."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTOSOTA_", extra="ignore")

    # one URL, or several separated by commas (the servers of a cluster)
    nats_url: str = Field(default="nats://127.0.0.1:4222", validation_alias="NATS_URL")
    # credentials of this service's own NATS user: a user and password, a .creds file, or an nkey seed file
    nats_user: str = ""
    nats_password: SecretStr = SecretStr("")
    nats_creds: Path | None = None
    nats_nkey_seed: Path | None = None
    # the token of a server that admits clients by token (the embedded stack makes one per run)
    nats_token: SecretStr = SecretStr("")
    # replicas of the streams and the artifact bucket when a service has to create them (3 on a cluster)
    stream_replicas: int = Field(default=1, ge=1, le=5)
    data_dir: Path = Path(".autosota")
    namespace: str = Field(default="", pattern=r"^[a-z0-9]*$")
    # eventsourcing persistence: "sqlite" (a file per service instance under data_dir) or
    # "postgres" (a schema per service instance in one database)
    persistence: Literal["sqlite", "postgres"] = "sqlite"
    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    postgres_dbname: str = "autosota"
    postgres_user: str = "postgres"
    postgres_password: SecretStr = SecretStr("")
    # prepended to every schema name, so that several stacks (or test runs) can share a database
    postgres_schema_prefix: str = Field(default="", pattern=r"^[a-z0-9_]*$")
    postgres_pool_size: int = Field(default=2, ge=1)
    pool: str = "cpu"
    runner_name: str = "runner-1"
    stall_seconds: float = 60.0
    log_level: str = "WARNING"
    # agents: the lease on the event a service handles, renewed every third of it while it works, so
    # that a killed agent's message is redelivered this long after its last renewal
    event_ack_wait_seconds: float = Field(default=6.0, gt=0)
    # runners: the lease on a pulled job (extended by heartbeats) and how often a job may be delivered
    # a dead runner's job goes back to the queue this long after its last lease renewal (every third of it)
    work_ack_wait_seconds: float = Field(default=6.0, gt=0)
    work_max_deliveries: int = Field(default=5, ge=1)
    # runners: what one runner process can run at once; it never pulls more than that
    runner_slots: int = Field(default=1, ge=1)
    runner_gpus: int = Field(default=0, ge=0)
    runner_gpu_type: str = ""
    runner_memory_bytes: int = Field(default=4 * 1024**3, ge=0, description="per job; 0: no limit")
    runner_job_cpus: float = Field(default=0.0, ge=0, description="CPU cores per job (a container's, or the job's cgroup); 0: no limit")
    runner_job_processes: int = Field(default=512, ge=8, description="processes and threads per job, its whole tree")
    # sandboxes: "local" (confined where the platform allows) or "docker" (Docker Engine API, or Podman's socket)
    sandbox_backend: Literal["local", "docker"] = "local"
    sandbox_confine: bool = True
    docker_url: str = ""
    docker_image: str = "localhost/autosota/experiment:latest"
    # init: built environments, shared by every stack and runner of this user on this machine
    env_cache_dir: Path = Field(default_factory=lambda: user_cache_dir() / "autosota" / "envs")
    # init: "uv" (python -m venv and pip where uv is missing or fails), or "pip" only
    env_builder: Literal["uv", "pip"] = "uv"
    # init: folders of local wheels the installers may take (os.pathsep between them); unset: the find-links of pip's configuration
    wheel_dirs: str | None = None
    # monitor: a dead end is the same failure this many times in a row, or no progress for this long
    dead_end_repeats: int = Field(default=3, ge=2)
    dead_end_seconds: float = Field(default=1800.0, gt=0)

    @field_validator("nats_creds", "nats_nkey_seed", mode="before")
    @classmethod
    def _empty_path_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.namespace)

    @property
    def nats_servers(self) -> list[str]:
        return server_urls(self.nats_url)

    def store_path(self, service: str) -> Path:
        return self.data_dir / "stores" / f"{service}.sqlite"

    def postgres_schema(self, instance: str) -> str:
        """The schema holding one service instance's event store."""
        parts = [self.namespace, instance] if self.namespace else [instance]
        name = self.postgres_schema_prefix + re.sub(r"[^a-z0-9_]", "_", "_".join(parts).lower())
        if len(name) <= POSTGRES_IDENTIFIER_MAX:
            return name
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]  # PostgreSQL would silently truncate a longer name
        return f"{name[: POSTGRES_IDENTIFIER_MAX - 9]}_{digest}"


def server_urls(urls: str) -> list[str]:
    """The server URLs in a comma-separated list, in order."""
    return [url.strip() for url in urls.split(",") if url.strip()]

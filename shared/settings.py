"""Settings from the environment (AUTOSOTA_*), with defaults that run on one machine."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.subjects import Subjects


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTOSOTA_", extra="ignore")

    nats_url: str = Field(default="nats://127.0.0.1:4222", validation_alias="NATS_URL")
    data_dir: Path = Path(".autosota")
    namespace: str = Field(default="", pattern=r"^[a-z0-9]*$")
    # eventsourcing persistence: "sqlite" (a file per service under data_dir) or "postgres"
    persistence: str = "sqlite"
    pool: str = "cpu"
    runner_name: str = "runner-1"
    stall_seconds: float = 60.0
    log_level: str = "WARNING"

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.namespace)

    def store_path(self, service: str) -> Path:
        return self.data_dir / "stores" / f"{service}.sqlite"

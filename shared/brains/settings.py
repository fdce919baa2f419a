"""Brain settings from the environment: which backend and model, where, budgets, prices, replay.

The API key itself is never a setting: `api_key_env` names the environment variable that holds it,
so no settings object, event or log line can carry its value.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

BrainKind = Literal["auto", "no-model", "ollama", "openai", "scripted"]

# US dollars per million (prompt, completion) tokens, as the providers publish them; local models cost nothing.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
}


class BrainSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUTOSOTA_", extra="ignore")

    brain: BrainKind = "auto"
    model: str = ""
    ollama_host: str = Field(default="http://127.0.0.1:11434", validation_alias=AliasChoices("OLLAMA_HOST", "AUTOSOTA_OLLAMA_HOST"))
    openai_base_url: str = "https://api.openai.com/v1"
    api_key_env: str = Field(default="AUTOSOTA_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    token_budget: int | None = Field(default=None, ge=0, description="tokens per campaign, prompt and completion together")
    cost_budget: float | None = Field(default=None, ge=0, description="US dollars per campaign")
    prices: dict[str, tuple[float, float]] = Field(default_factory=dict, description="model -> dollars per million prompt and completion tokens")
    brain_timeout: float = Field(default=120.0, gt=0)
    brain_stream: bool = True
    answer_retries: int = Field(default=2, ge=0, description="re-asks with the validation error before a call counts as failed")
    rate_limit_retries: int = Field(default=2, ge=0)
    rate_limit_max_wait: float = Field(default=30.0, ge=0)
    brain_script: str | None = Field(default=None, description="JSON file of answers for the scripted brain")
    brain_replay: str | None = Field(default=None, description="JSON-lines events of a recorded campaign: answer from it, never live")
    brain_probe_timeout: float = Field(default=1.0, gt=0)

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) or None

    def price_of(self, model: str) -> tuple[float, float] | None:
        return self.prices.get(model) or DEFAULT_PRICES.get(model)

"""What the deployment files may refer to: the settings the code reads, the CLI it accepts."""

from __future__ import annotations

import shlex
from pathlib import Path

from shared.cli import parser
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def settings_env_names() -> set[str]:
    """Every environment variable shared/settings.py reads."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names.add(alias if isinstance(alias, str) else f"{prefix}{name}".upper())
    return names


def accepted_by_cli(argv: list[str]) -> bool:
    """Whether `autosota <argv>` parses (without running it)."""
    try:
        parser().parse_args(argv)
    except SystemExit:
        return False
    return True


def autosota_argv(command: list[str] | str, env: dict[str, str] | None = None) -> list[str]:
    """The arguments after `autosota` in a container or probe command (a `sh -c` line is expanded)."""
    if isinstance(command, str):
        command = shlex.split(command)
    if command[:2] == ["sh", "-c"]:
        line = command[2]
        for key, value in (env or {}).items():
            line = line.replace(f'"${key}"', value).replace(f"${key}", value)
        command = shlex.split(line)
        if command and command[0] == "exec":
            command = command[1:]
    assert command and command[0] == "autosota", f"not an autosota command: {command}"
    return command[1:]

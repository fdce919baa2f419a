"""The Tiltfile, evaluated by a Starlark interpreter against stand-ins for Tilt's built-ins.

Tilt itself is not installed here; the stand-ins accept the same arguments as Tilt's own
functions (an unknown argument is an error, as in Tilt) and record every resource.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

import pytest
import starlark as sl

from shared.subjects import SERVICES
from tests.deploy.conftest import ROOT, accepted_by_cli, settings_env_names

AGENTS = [service for service in SERVICES if service != "runner"]
ENV_NOT_OURS = {"OMP_NUM_THREADS"}  # read by numerical libraries inside experiments, not by settings


@dataclass
class Tilt:
    """What a Tiltfile declared."""

    flags: dict[str, Any]
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    defined_flags: dict[str, str] = field(default_factory=dict)

    def local_resource(
        self,
        name: str,
        cmd: str | list[str] = "",
        deps: list[str] | str | None = None,
        trigger_mode: Any = None,
        resource_deps: list[str] | None = None,
        ignore: list[str] | None = None,
        auto_init: bool = True,
        serve_cmd: str | list[str] = "",
        cmd_bat: str = "",
        serve_cmd_bat: str = "",
        allow_parallel: bool = False,
        links: list[str] | None = None,
        tags: list[str] | None = None,
        env: dict[str, str] | None = None,
        serve_env: dict[str, str] | None = None,
        readiness_probe: dict[str, Any] | None = None,
        dir: str = "",  # noqa: A002 - Tilt's own argument name
        serve_dir: str = "",
        labels: list[str] | None = None,
    ) -> None:
        assert name not in self.resources, f"resource {name} declared twice"
        self.resources[name] = {
            "cmd": cmd,
            "serve_cmd": serve_cmd,
            "serve_env": dict(serve_env or {}),
            "env": dict(env or {}),
            "deps": deps,
            "resource_deps": list(resource_deps or []),
            "readiness_probe": readiness_probe,
            "labels": list(labels or []),
        }
        self.order.append(name)

    @staticmethod
    def probe(
        initial_delay_secs: int = 0,
        timeout_secs: int = 1,
        period_secs: int = 10,
        success_threshold: int = 1,
        failure_threshold: int = 3,
        exec: dict[str, Any] | None = None,  # noqa: A002 - Tilt's own argument name
        http_get: dict[str, Any] | None = None,
        tcp_socket: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        actions = [action for action in (exec, http_get, tcp_socket) if action is not None]
        assert len(actions) == 1, "a probe has exactly one action"
        return {"period_secs": period_secs, "timeout_secs": timeout_secs, **actions[0]}

    @staticmethod
    def exec_action(command: list[str]) -> dict[str, Any]:
        return {"exec": list(command)}

    @staticmethod
    def tcp_socket_action(port: int, host: str = "") -> dict[str, Any]:
        return {"tcp_socket": {"port": port, "host": host}}

    @staticmethod
    def http_get_action(port: int, host: str = "", scheme: str = "http", path: str = "") -> dict[str, Any]:
        return {"http_get": {"port": port, "host": host, "scheme": scheme, "path": path}}

    def define_bool(self, name: str, args: bool = False, usage: str = "") -> None:
        self.defined_flags[name] = usage

    def define_string(self, name: str, args: bool = False, usage: str = "") -> None:
        self.defined_flags[name] = usage

    def parse(self) -> dict[str, Any]:
        unknown = set(self.flags) - set(self.defined_flags)
        assert not unknown, f"flags the Tiltfile does not define: {unknown}"
        return dict(self.flags)


def evaluate(flags: dict[str, Any] | None = None) -> Tilt:
    tilt = Tilt(flags or {})
    module = sl.Module()
    for name in ("local_resource", "probe", "exec_action", "tcp_socket_action", "http_get_action"):
        module.add_callable(name, getattr(tilt, name))
    module.add_callable("_define_bool", tilt.define_bool)
    module.add_callable("_define_string", tilt.define_string)
    module.add_callable("_parse", tilt.parse)
    module.add_callable("_getenv", lambda key, default=None: default)
    module.add_callable("_exists", lambda path: (ROOT / path).exists())
    builtins = sl.Globals.extended_by([sl.LibraryExtension.StructType, sl.LibraryExtension.Print])
    prelude = (
        "config = struct(define_bool=_define_bool, define_string=_define_string, parse=_parse)\n"
        "os = struct(getenv=_getenv, path=struct(exists=_exists))\n"
    )
    sl.eval(module, sl.parse("tilt-builtins", prelude, sl.Dialect.extended()), builtins)
    sl.eval(module, sl.parse("Tiltfile", (ROOT / "Tiltfile").read_text(), sl.Dialect.extended()), builtins)
    return tilt


def serve_argv(resource: dict[str, Any]) -> list[str]:
    command = resource["serve_cmd"]
    return shlex.split(command) if isinstance(command, str) else list(command)


@pytest.mark.parametrize("flags", [{}, {"postgres": True}], ids=["sqlite", "postgres"])
def test_every_service_is_a_resource_the_cli_can_start(flags: dict[str, Any]) -> None:
    tilt = evaluate(flags)
    services = {name: r for name, r in tilt.resources.items() if serve_argv(r)[:1] == ["autosota"]}
    expected = set(AGENTS) | {"runner-1", "runner-2"}
    if (ROOT / "services" / "dashboard" / "app.py").exists():
        expected.add("dashboard")
    assert set(services) == expected
    for name, resource in services.items():
        argv = serve_argv(resource)[1:]
        assert argv[0] == "service" and accepted_by_cli(argv), f"{name}: `autosota {' '.join(argv)}` is not a command the CLI accepts"
        assert argv[1] == (name if name in AGENTS or name == "dashboard" else "runner")
        assert resource["serve_env"].get("AUTOSOTA_RUNNER_NAME", name) == name


@pytest.mark.parametrize("flags", [{}, {"postgres": True}], ids=["sqlite", "postgres"])
def test_resources_are_labelled_ordered_and_probed(flags: dict[str, Any]) -> None:
    tilt = evaluate(flags)
    for position, name in enumerate(tilt.order):
        resource = tilt.resources[name]
        assert resource["labels"], f"{name} has no label"
        assert resource["readiness_probe"] is not None, f"{name} has no readiness probe"
        for dependency in resource["resource_deps"]:
            assert dependency in tilt.order[:position], f"{name} depends on {dependency}, which is not declared before it"
        probe = resource["readiness_probe"]
        if "exec" in probe and probe["exec"][0] == "autosota":
            argv = probe["exec"][1:]
            assert accepted_by_cli(argv) and argv[:2] == ["health", name], f"{name}: probe `{' '.join(probe['exec'])}`"
    for name in tilt.order:
        if name not in ("nats", "postgres"):
            assert "nats" in tilt.resources[name]["resource_deps"]


def test_service_environments_name_only_settings_the_code_reads() -> None:
    known = settings_env_names() | ENV_NOT_OURS
    for flags in ({}, {"postgres": True}):
        for name, resource in evaluate(flags).resources.items():
            unknown = set(resource["serve_env"]) - known
            assert not unknown, f"{name} sets variables shared/settings.py does not read: {unknown}"


def test_postgres_is_optional_and_every_service_waits_for_it_when_chosen() -> None:
    plain = evaluate()
    assert "postgres" not in plain.resources
    assert all(r["serve_env"].get("AUTOSOTA_PERSISTENCE", "sqlite") == "sqlite" for r in plain.resources.values())
    with_postgres = evaluate({"postgres": True})
    services = [name for name in with_postgres.order if name not in ("nats", "postgres")]
    for name in services:
        resource = with_postgres.resources[name]
        assert "postgres" in resource["resource_deps"]
        assert resource["serve_env"]["AUTOSOTA_PERSISTENCE"] == "postgres"
        assert resource["serve_env"]["AUTOSOTA_POSTGRES_PORT"] in with_postgres.resources["postgres"]["serve_cmd"]


def test_the_bus_resource_starts_a_jetstream_server() -> None:
    argv = serve_argv(evaluate().resources["nats"])
    assert argv[0] == "nats-server" and "-js" in argv
    port = evaluate().resources["nats"]["readiness_probe"]["tcp_socket"]["port"]
    assert argv[argv.index("-p") + 1] == str(port)
    for resource in evaluate().resources.values():
        if "NATS_URL" in resource["serve_env"]:
            assert resource["serve_env"]["NATS_URL"].endswith(f":{port}")

"""Thin bus handlers of init: build or reuse an environment, smoke-run it, apply repairs."""

from __future__ import annotations

import importlib.metadata
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path

from faststream.nats import NatsBroker

from services.init.domain import InitState, after_exhausted, after_smoke, specify, unsatisfied
from shared.brain import failure_signature
from shared.contracts import EnvironmentFailed, Event, Objective, ObjectiveSet, RepairExhausted, RepairProposed
from shared.runtime import Context, Output, ServiceRuntime
from shared.sandbox import Limits, Outcome, run, sandbox_env
from shared.workspace import unpack

BUILD_LIMITS = Limits(wall_seconds=900, memory_bytes=None)
NO_SMOKE_COMMAND = "python -c \"import sys; print(sys.version)\""


def installed_distributions() -> dict[str, str | None]:
    return {(dist.metadata["Name"] or "").lower().replace("_", "-"): dist.version for dist in importlib.metadata.distributions()}


async def react(state: InitState, event: Event, ctx: Context) -> list[Output]:
    if isinstance(event, ObjectiveSet) and state.kind is None:
        return await _prepare(state, event, ctx)
    if isinstance(event, RepairProposed) and not (state.ready or state.failed_final) and state.objective is not None:
        return await _repair(state, event, ctx)
    if isinstance(event, RepairExhausted):
        return list(after_exhausted(event.campaign, state, event))
    return []


async def _prepare(state: InitState, event: ObjectiveSet, ctx: Context) -> list[Output]:
    objective = event.objective
    missing = unsatisfied(objective.requirements, installed_distributions())
    specified = specify(event.campaign, objective, missing)
    environment_bin = str(Path(sys.executable).parent)
    if missing:
        venv = _envs(ctx) / specified.spec_sha256[:16]
        built = await _build_venv(venv, objective.requirements, ctx)
        if not built.ok:
            failure = EnvironmentFailed(campaign=event.campaign, stage="build", signature=failure_signature(built.output_tail), error_tail=built.output_tail[-3000:], attempt=1, final=False)
            return [specified, failure]
        environment_bin = str(venv / "bin")
    smoke = await _smoke(objective, event.snapshot_sha256, environment_bin, ctx)
    return [specified, *after_smoke(event.campaign, objective, environment_bin, smoke.ok, smoke.duration_seconds, smoke.output_tail, failure_signature(smoke.output_tail), state.attempts + 1, [])]


async def _repair(state: InitState, event: RepairProposed, ctx: Context) -> list[Output]:
    objective = state.objective
    assert objective is not None and state.snapshot_sha256 is not None and state.spec_sha256 is not None
    venv = _envs(ctx) / f"{state.spec_sha256[:16]}-repaired"
    if not (venv / "bin" / "python").exists():
        created = await run(f"{shlex_quote(sys.executable)} -m venv {shlex_quote(str(venv))}", ctx.settings.data_dir, sandbox_env(str(Path(sys.executable).parent)), BUILD_LIMITS)
        if not created.ok:
            return list(after_smoke(event.campaign, objective, "", False, 0, created.output_tail, failure_signature(created.output_tail), state.attempts + 1, state.repairs, stage="repair"))
        if state.kind == "interpreter":
            _overlay_current_interpreter(venv)
    installed = await run(f"python -m pip install --disable-pip-version-check -q {shlex_quote(event.argument)}", ctx.settings.data_dir, sandbox_env(str(venv / "bin")), BUILD_LIMITS)
    if not installed.ok:
        return list(after_smoke(event.campaign, objective, "", False, 0, installed.output_tail, failure_signature(installed.output_tail), state.attempts + 1, state.repairs, stage="repair"))
    smoke = await _smoke(objective, state.snapshot_sha256, str(venv / "bin"), ctx)
    repairs = [*state.repairs, f"{event.action} {event.argument}"]
    return list(after_smoke(event.campaign, objective, str(venv / "bin"), smoke.ok, smoke.duration_seconds, smoke.output_tail, failure_signature(smoke.output_tail), state.attempts + 1, repairs))


def _overlay_current_interpreter(venv: Path) -> None:
    """Let the repaired environment see what the current interpreter already has."""
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    for site in (venv / "lib").glob("python*/site-packages"):
        (site / "_autosota_base.pth").write_text("\n".join(sorted(paths)) + "\n")


async def _build_venv(venv: Path, requirements: list[str], ctx: Context) -> Outcome:
    if (venv / ".autosota-ready").exists():
        return Outcome(0, False, "cached environment", False, 0.0)
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    (venv.parent / f"{venv.name}.requirements.txt").write_text("\n".join(requirements) + "\n")
    command = f"{shlex_quote(sys.executable)} -m venv {shlex_quote(str(venv))} && {shlex_quote(str(venv / 'bin' / 'python'))} -m pip install --disable-pip-version-check -q -r {shlex_quote(str(venv.parent / f'{venv.name}.requirements.txt'))}"
    outcome = await run(command, venv.parent, sandbox_env(str(Path(sys.executable).parent)), BUILD_LIMITS)
    if outcome.ok:
        (venv / ".autosota-ready").write_text("ok\n")
    return outcome


async def _smoke(objective: Objective, snapshot_sha256: str, environment_bin: str, ctx: Context) -> Outcome:
    workspace = ctx.settings.data_dir / "init" / "smoke" / snapshot_sha256[:16]
    shutil.rmtree(workspace, ignore_errors=True)
    try:
        unpack(await ctx.artifacts.get(snapshot_sha256), workspace)
        params = workspace / "autosota_params.json"
        params.write_text('{"seed": 0, "params": {}}')
        env = sandbox_env(environment_bin, {"AUTOSOTA_PARAMS": str(params)})
        return await run(objective.smoke_command or NO_SMOKE_COMMAND, workspace, env, Limits(wall_seconds=objective.timeout_seconds))
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def _envs(ctx: Context) -> Path:
    return (ctx.settings.data_dir / "envs").resolve()


def shlex_quote(text: str) -> str:
    return shlex.quote(text)


def register(broker: NatsBroker, runtime: ServiceRuntime[InitState]) -> None:
    runtime.subscribe_events(broker, react, "Consumes ObjectiveSet, RepairProposed and RepairExhausted; emits EnvironmentSpecified, EnvironmentReady, EnvironmentFailed and BaselineRequested.")

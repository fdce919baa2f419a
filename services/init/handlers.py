"""Bus handlers of init: provide an environment for a specification, smoke-run it, apply repairs.

An environment is an isolated virtual environment holding exactly the paper's resolved
requirements, built with uv into the machine-wide cache (`AUTOSOTA_ENV_CACHE_DIR`) and reused by
every campaign whose requirements resolve the same (`services/init/environments.py`). A
specification sees it through its own view under `<data_dir>/envs/<spec>-<environment>`, whose
manifest holds the code patch and time factor that repairs added, and how the environment was
built; the view's bin/ is what runners run.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from faststream.nats import NatsBroker

from services.init.domain import InitState, after_exhausted, after_smoke, repairs_to_apply, specify
from services.init.environments import BUILD_LIMITS, Toolchain, expose, provide
from services.init.repairs import (
    SOURCE_ACTIONS,
    RepairNotApplicable,
    effective_requirements,
    environment_key,
    parse_repair,
    rewritable,
    rewrite_sources,
    source_patch,
    timeout_factor,
)
from services.init.resolution import variant_of
from shared.brain import failure_signature
from shared.contracts import EnvironmentFailed, Event, Objective, ObjectiveSet, RepairExhausted, RepairProposed
from shared.runtime import Context, Output, ServiceRuntime
from shared.sandbox import Isolation, Limits, Outcome, run, sandbox_env
from shared.workspace import EnvironmentManifest, read_manifest, unpack

NO_SMOKE_COMMAND = "python -c \"import sys; print(sys.version)\""


@dataclass(frozen=True)
class Built:
    environment_bin: str
    outcome: Outcome
    manifest: EnvironmentManifest | None = None


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
    specified = specify(event.campaign, objective)
    built = await _environment(objective, event.snapshot_sha256, [], state, ctx)
    if not built.outcome.ok:
        failure = EnvironmentFailed(campaign=event.campaign, stage="build", signature=failure_signature(built.outcome.output_tail), error_tail=built.outcome.output_tail[-3000:], attempt=1, final=False)
        return [specified, failure]
    smoke = await _smoke(objective, event.snapshot_sha256, built, ctx)
    return [specified, *after_smoke(event.campaign, objective, built.environment_bin, smoke.ok, smoke.duration_seconds, smoke.output_tail, failure_signature(smoke.output_tail), state.attempts + 1, [])]


async def _repair(state: InitState, event: RepairProposed, ctx: Context) -> list[Output]:
    objective = state.objective
    assert objective is not None and state.snapshot_sha256 is not None
    repairs = repairs_to_apply(state)
    built = await _environment(objective, state.snapshot_sha256, repairs, state, ctx)
    if not built.outcome.ok:
        tail = built.outcome.output_tail
        return list(after_smoke(event.campaign, objective, "", False, 0, tail, _signature_of(tail), state.attempts + 1, repairs, stage="repair"))
    smoke = await _smoke(objective, state.snapshot_sha256, built, ctx)
    return list(after_smoke(event.campaign, objective, built.environment_bin, smoke.ok, smoke.duration_seconds, smoke.output_tail, failure_signature(smoke.output_tail), state.attempts + 1, repairs))


def _signature_of(tail: str) -> str:
    first = tail.splitlines()[0] if tail else ""
    return first if first.startswith("repair not applicable:") else failure_signature(tail)


async def _environment(objective: Objective, snapshot_sha256: str, repairs: list[str], state: InitState, ctx: Context) -> Built:
    """The specification's view of its environment: found by its key, else made over the cached environment."""
    parsed = [parse_repair(text) for text in repairs]
    requirements = effective_requirements(objective.requirements, parsed)
    patch = ""
    if any(action in SOURCE_ACTIONS for action, _ in parsed):
        try:
            patch = await _code_patch(objective, snapshot_sha256, parsed, ctx)
        except RepairNotApplicable as error:
            return Built("", Outcome(1, False, f"repair not applicable: {error}", False, 0.0))
    provided = await provide(requirements, Toolchain.here(ctx.settings, variant_of(state.pool)))
    if not provided.outcome.ok or provided.root is None:
        return Built("", provided.outcome)
    key = environment_key(requirements, parsed, snapshot_sha256, sys.executable)
    name = f"{key[:16]}-{provided.key[:8]}" + ("-repaired" if repairs else "")
    manifest = EnvironmentManifest(
        spec_sha256=key,
        requirements=tuple(requirements),
        repairs=tuple(repairs),
        source_patch=patch,
        timeout_factor=timeout_factor(parsed),
        repair_reasons=tuple(state.reasons.get(text, "") for text in repairs),
        environment_sha256=provided.key,
        builder=provided.builder,
        python=sys.version.split()[0],
        resolved=provided.pinned or (),
    )
    view = await asyncio.to_thread(expose, provided.root, _envs(ctx) / name, manifest)
    return Built(str(view / "bin"), provided.outcome, read_manifest(view / "bin"))


async def _code_patch(objective: Objective, snapshot_sha256: str, repairs: list[tuple[str, str]], ctx: Context) -> str:
    with tempfile.TemporaryDirectory(prefix="autosota-init-") as scratch:
        unpack(await ctx.artifacts.get(snapshot_sha256), Path(scratch))
        files = [path.relative_to(scratch).as_posix() for path in Path(scratch).rglob("*") if path.is_file() and not path.is_symlink()]
        sources: dict[str, str] = {}
        for relative in rewritable(files, objective.protected_paths):
            try:
                sources[relative] = (Path(scratch) / relative).read_text()
            except UnicodeDecodeError:
                continue
    return source_patch(sources, rewrite_sources(sources, repairs))


async def _smoke(objective: Objective, snapshot_sha256: str, built: Built, ctx: Context) -> Outcome:
    """The smoke command, confined as a runner would run it, with the environment's patch and time."""
    workspace = ctx.settings.data_dir.resolve() / "init" / "smoke" / snapshot_sha256[:16]
    shutil.rmtree(workspace, ignore_errors=True)
    try:
        unpack(await ctx.artifacts.get(snapshot_sha256), workspace)
        manifest = built.manifest
        if manifest is not None and manifest.source_patch:
            (workspace / ".autosota.patch").write_text(manifest.source_patch)
            host = sandbox_env(str(Path(sys.executable).parent), {"GIT_CEILING_DIRECTORIES": str(workspace.parent)})
            applied = await run("git apply --whitespace=nowarn .autosota.patch && rm .autosota.patch", workspace, host, BUILD_LIMITS)
            if not applied.ok:
                return applied
        params = workspace / "autosota_params.json"
        params.write_text('{"seed": 0, "params": {}}')
        env = sandbox_env(built.environment_bin, {"AUTOSOTA_PARAMS": str(params), "CUDA_VISIBLE_DEVICES": ""})
        factor = manifest.timeout_factor if manifest is not None else 1.0
        limits = Limits(wall_seconds=objective.timeout_seconds * factor, memory_bytes=ctx.settings.runner_memory_bytes or None)
        isolation = Isolation(network=False, read_only=tuple(objective.protected_paths)) if ctx.settings.sandbox_confine else None
        return await run(objective.smoke_command or NO_SMOKE_COMMAND, workspace, env, limits, isolation=isolation)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def _envs(ctx: Context) -> Path:
    return (ctx.settings.data_dir / "envs").resolve()


def register(broker: NatsBroker, runtime: ServiceRuntime[InitState]) -> None:
    runtime.subscribe_events(broker, react, "Consumes ObjectiveSet, RepairProposed and RepairExhausted; emits EnvironmentSpecified, EnvironmentReady, EnvironmentFailed and BaselineRequested.")

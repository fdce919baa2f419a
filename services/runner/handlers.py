"""Thin bus handlers of the runner: pull a work item, run it, report exactly one outcome."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

from faststream.nats import ConsumerConfig, JStream, NatsBroker, NatsMessage, PullSub
from faststream.middlewares import AckPolicy
from pydantic import ValidationError

from services.runner.domain import PARAMS_FILE, MetricsError, RunnerState, completed, failed, params_document, parse_metrics, permute_column
from shared.brain import failure_signature
from shared.contracts import Event, JobStarted, MessageRejected, Telemetry, WorkItem
from shared.runtime import ServiceRuntime
from shared.sandbox import Limits, run, sandbox_env
from shared.workspace import hash_paths, sha256_file, unpack

HEARTBEAT_SECONDS = 2.0
WORK_ACK_WAIT = 30.0
MAX_DELIVERIES = 5


class Runner:
    def __init__(self, runtime: ServiceRuntime[RunnerState]) -> None:
        self.runtime = runtime
        self.name = runtime.instance
        self.root = runtime.settings.data_dir / "runners" / self.name

    async def on_work(self, msg: NatsMessage) -> None:
        try:
            item = WorkItem.model_validate_json(msg.body)
        except ValidationError as error:
            self._reject(msg, f"malformed work item: {error.errors(include_url=False)}")
            await msg.ack()
            return
        if item.experiment_id in self.runtime.state(item.campaign).finished:
            await msg.ack()  # a redelivery of work this runner already reported
            return
        delivery = msg.raw_message.metadata.num_delivered
        self.runtime.commit(item.campaign, [JobStarted(campaign=item.campaign, experiment_id=item.experiment_id, runner=self.name, delivery=delivery)])
        beating = asyncio.create_task(self._heartbeat(item, msg))
        try:
            outcome = await self.execute(item)
        finally:
            beating.cancel()
        self.runtime.commit(item.campaign, [outcome])
        await msg.ack()

    async def execute(self, item: WorkItem) -> Event:
        workspace = self.root / "workspaces" / f"{item.campaign}-{item.experiment_id}"
        shutil.rmtree(workspace, ignore_errors=True)
        spent = 0.0
        try:
            try:
                unpack(await self._snapshot(item.snapshot_sha256), workspace)
            except Exception as error:
                return failed(item, self.name, "prepare", f"snapshot {item.snapshot_sha256[:12]} unavailable: {error}", "snapshot-unavailable", None, "", 0.0)
            (workspace / PARAMS_FILE).write_text(params_document(item))
            canary_sha256 = None
            if item.canary is not None:
                try:
                    canary_sha256 = _plant_canary(workspace, item)
                except (OSError, ValueError) as error:
                    return failed(item, self.name, "prepare", f"canary could not be planted: {error}", "canary-unplantable", None, "", 0.0)
            env = sandbox_env(item.environment_bin, {"AUTOSOTA_PARAMS": str(workspace / PARAMS_FILE), "GIT_CEILING_DIRECTORIES": str(workspace.parent)})
            limits = Limits(wall_seconds=item.timeout_seconds)
            if item.patch:
                (workspace / ".autosota.patch").write_text(item.patch)
                applied = await run("git apply --whitespace=nowarn .autosota.patch && rm .autosota.patch", workspace, env, limits)
                if not applied.ok:
                    return failed(item, self.name, "prepare", "the patch does not apply", failure_signature(applied.output_tail), applied.exit_code, applied.output_tail, applied.duration_seconds)
            sink = self._log_sink(item)
            trained = await run(item.train_command, workspace, env, limits, sink)
            spent += trained.duration_seconds
            if not trained.ok:
                return failed(item, self.name, "train", _why(trained), failure_signature(trained.output_tail), trained.exit_code, trained.output_tail, spent)
            evaluated = await run(item.evaluate_command, workspace, env, Limits(wall_seconds=item.timeout_seconds), sink)
            spent += evaluated.duration_seconds
            if not evaluated.ok:
                return failed(item, self.name, "evaluate", _why(evaluated), failure_signature(evaluated.output_tail), evaluated.exit_code, evaluated.output_tail, spent)
            try:
                metrics = parse_metrics(evaluated.output_tail)
            except MetricsError as error:
                return failed(item, self.name, "metrics", str(error), "metrics-unparsable", 0, evaluated.output_tail, spent)
            hashes = hash_paths(workspace, item.protected_paths)
            return completed(item, self.name, metrics, hashes, spent, evaluated.output_tail, canary_sha256)
        finally:
            shutil.rmtree(workspace, ignore_errors=True)

    async def _snapshot(self, digest: str) -> bytes:
        cached = self.root.parent / "snapshots" / digest
        if cached.is_file():
            return cached.read_bytes()
        data = await self.runtime.artifacts.get(digest)
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(f".{self.name}.partial")
        partial.write_bytes(data)
        partial.replace(cached)
        return data

    async def _heartbeat(self, item: WorkItem, msg: NatsMessage) -> None:
        beats = 0
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await self._telemetry(item, "heartbeat", "")
                beats += 1
                if beats % max(1, int(WORK_ACK_WAIT / 3 / HEARTBEAT_SECONDS)) == 0:
                    with contextlib.suppress(Exception):
                        await msg.in_progress()  # the lease: extended while the job is alive
                await asyncio.sleep(HEARTBEAT_SECONDS)

    def _log_sink(self, item: WorkItem):  # type: ignore[no-untyped-def]
        async def sink(line: str) -> None:
            await self._telemetry(item, "log", line[:2000])

        return sink

    async def _telemetry(self, item: WorkItem, kind: str, line: str) -> None:
        nc = self.runtime.nc
        if nc is None or nc.is_closed:
            return
        message = Telemetry(kind=kind, campaign=item.campaign, experiment_id=item.experiment_id, runner=self.name, time=self.runtime.clock(), line=line)  # type: ignore[arg-type]
        with contextlib.suppress(Exception):
            await nc.publish(self.runtime.subjects.telemetry(item.campaign, item.experiment_id), message.model_dump_json().encode())

    def _reject(self, msg: NatsMessage, reason: str) -> None:
        subject = msg.raw_message.subject
        rejection = MessageRejected(campaign="unknown", subject=subject, reason=reason[:2000], excerpt=msg.body[:500].decode("utf-8", "replace"), stream_sequence=msg.raw_message.metadata.sequence.stream)
        self.runtime.commit("unknown", [rejection])


def _plant_canary(workspace: Path, item: WorkItem) -> str:
    assert item.canary is not None
    target = (workspace / item.canary.path).resolve()
    if not target.is_relative_to(workspace.resolve()) or not target.is_file():
        raise ValueError(f"{item.canary.path} is not a file of the workspace")
    target.write_text(permute_column(target.read_text(), item.canary.column, item.canary.seed))
    return sha256_file(target)


def _why(outcome) -> str:  # type: ignore[no-untyped-def]
    if outcome.timed_out:
        return "time limit exceeded"
    return f"exited with code {outcome.exit_code}"


def register(broker: NatsBroker, runtime: ServiceRuntime[RunnerState]) -> Runner:
    runner = Runner(runtime)
    subjects = runtime.subjects
    pool = runtime.settings.pool

    @broker.subscriber(
        subjects.work(pool),
        stream=JStream(subjects.work_stream, declare=False),
        durable=f"runner-{pool}",
        pull_sub=PullSub(batch_size=1, timeout=1.0),
        config=ConsumerConfig(ack_wait=WORK_ACK_WAIT, max_deliver=MAX_DELIVERIES),
        ack_policy=AckPolicy.MANUAL,
        title=f"runner:work:{pool}",
        description="Pulls WorkItem messages of its pool, one at a time; the lease is extended while the job runs.",
    )
    async def on_work(msg: NatsMessage) -> None:
        await runner.on_work(msg)

    return runner

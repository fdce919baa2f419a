"""Bus handlers of the runner: pull work within capacity, hold its lease, record one result per job.

A runner pulls from `work.<pool>` only when it has a free slot, so it never holds a job it
cannot start. A running job's lease is its message's ack wait, renewed by in-progress
acknowledgements; a runner that dies loses it and the job goes to another runner. Results go
through `JobResults`, so a job finished by one runner and redelivered to another is recorded
once. A job that reaches the consumer's maximum deliveries without a result becomes a dead
letter: the server's advisory is captured in a stream and recorded as JobFailed(stage="dead_letter").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from faststream.nats import ConsumerConfig, JStream, NatsBroker, NatsMessage, PullSub
from faststream.middlewares import AckPolicy
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError
from pydantic import ValidationError

from services.runner.domain import (
    PARAMS_FILE,
    Capacity,
    RunnerState,
    completed,
    dead_letter,
    failed,
    lease_interval,
    params_document,
    permute_column,
    unfit_reason,
    withdrawn,
)
from services.runner.results import JobResults
from shared.brain import failure_signature
from shared.metrics import MetricsError, extract_metrics
from shared.parameters import Applied, ParameterApplyError, apply_parameters
from shared.protection import MAX_SOURCE_BYTES, MAX_SOURCE_FILES, changed_symbols, decode_source
from shared.contracts import CampaignCompleted, JobCompleted, JobFailed, JobStarted, MessageRejected, Telemetry, WorkItem
from shared.history import StoredMessage, admitted_event
from shared.runtime import ServiceRuntime
from shared.sandbox import Isolation, Limits, Sandbox, run, sandbox_env
from shared.workspace import hash_paths, read_manifest, sha256_file, unpack

log = logging.getLogger("autosota.runner")

HEARTBEAT_SECONDS = 2.0
WITHDRAWAL_CHECK_SECONDS = 2.0  # how soon a running job notices that its campaign has ended
PREPARE_LIMITS = Limits(wall_seconds=120, memory_bytes=None)


def dead_letter_stream(runtime: ServiceRuntime[RunnerState]) -> str:
    return f"{runtime.subjects.work_stream}_DEAD"


def max_deliveries_advisories(runtime: ServiceRuntime[RunnerState]) -> str:
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{runtime.subjects.work_stream}.*"


class Slots:
    """The runner's capacity: job slots and GPU devices, taken and given back."""

    def __init__(self, capacity: Capacity) -> None:
        self.capacity = capacity
        self.used = 0
        self.free_gpus = [str(index) for index in range(capacity.gpus)]
        self._changed = asyncio.Condition()

    def take_slot(self) -> None:
        assert self.used < self.capacity.slots, "a job was pulled without a free slot"
        self.used += 1

    async def take_gpus(self, count: int) -> tuple[str, ...]:
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.free_gpus) >= count)
            taken, self.free_gpus = self.free_gpus[:count], self.free_gpus[count:]
            return tuple(taken)

    async def give_back(self, gpus: tuple[str, ...]) -> None:
        async with self._changed:
            self.used -= 1
            self.free_gpus = sorted([*self.free_gpus, *gpus], key=int)
            self._changed.notify_all()

    async def wait_for_free_slot(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.used < self.capacity.slots)


class Runner:
    def __init__(self, runtime: ServiceRuntime[RunnerState], sandbox: Sandbox, capacity: Capacity) -> None:
        self.runtime = runtime
        self.sandbox = sandbox
        self.capacity = capacity
        self.name = runtime.instance
        self.root = runtime.settings.data_dir.resolve() / "runners" / self.name
        self.slots = Slots(capacity)
        self.jobs: set[asyncio.Task[None]] = set()
        self._results: JobResults | None = None
        self._ended: dict[str, str] = {}

    @property
    def ack_wait(self) -> float:
        return self.runtime.settings.work_ack_wait_seconds

    @property
    def max_deliveries(self) -> int:
        return self.runtime.settings.work_max_deliveries

    async def start(self) -> None:
        """Open the results bucket and the dead-letter stream (after the runtime connected)."""
        assert self.runtime.js is not None
        self._results = JobResults(self.runtime.js, self.runtime.subjects, self.name, self.runtime.settings.stream_replicas)
        await self._results.open()
        await _ensure_stream(
            self.runtime,
            StreamConfig(
                name=dead_letter_stream(self.runtime),
                subjects=[max_deliveries_advisories(self.runtime)],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                num_replicas=self.runtime.settings.stream_replicas,
            ),
        )
        remove_leftovers = getattr(self.sandbox, "remove_leftovers", None)
        if remove_leftovers is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(remove_leftovers)

    async def supervise_jobs(self) -> None:
        """Lives as long as the service; when it stops, running jobs go back to the queue at once."""
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Give running jobs back to the queue at once rather than after their lease runs out."""
        for job in list(self.jobs):
            job.cancel()
        for job in list(self.jobs):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job

    @property
    def results(self) -> JobResults:
        assert self._results is not None, "runner not started"
        return self._results

    # ------------------------------------------------------------ work

    async def on_work(self, msg: NatsMessage) -> None:
        """Accept one pulled job; return only once another slot is free, so nothing waits pulled."""
        try:
            item = WorkItem.model_validate_json(msg.body)
        except ValidationError as error:
            self._reject(msg, f"malformed work item: {error.errors(include_url=False)}")
            await msg.ack()
            return
        delivery = msg.raw_message.metadata.num_delivered
        unfit = unfit_reason(item, self.capacity)
        if unfit is not None:
            await self._refuse(item, msg, delivery, unfit)
            return
        if await self.results.existing(item.campaign, item.experiment_id) is not None:
            await msg.ack()  # finished by some runner already: its result is on the stream
            return
        ended = await self._campaign_ended(item.campaign)
        if ended is not None:
            await self._record(withdrawn(item, self.name, ended, 0.0))
            await msg.ack()
            return
        self.slots.take_slot()
        job = asyncio.create_task(self._job(item, msg, delivery), name=f"{self.name}:{item.campaign}/{item.experiment_id}")
        self.jobs.add(job)
        job.add_done_callback(self.jobs.discard)
        await self.slots.wait_for_free_slot()

    async def _refuse(self, item: WorkItem, msg: NatsMessage, delivery: int, why: str) -> None:
        if delivery >= self.max_deliveries:
            await self._record(dead_letter(item, self.name, delivery, f"no runner of pool {item.pool!r} could take it: {why}"))
            await msg.ack()
            return
        await msg.raw_message.nak(delay=min(self.ack_wait, 5.0))  # another runner of the pool may fit

    async def _job(self, item: WorkItem, msg: NatsMessage, delivery: int) -> None:
        lease = asyncio.create_task(self._hold_lease(msg))
        gpus: tuple[str, ...] = ()
        try:
            gpus = await self.slots.take_gpus(item.gpus)
            self.runtime.commit(item.campaign, [JobStarted(campaign=item.campaign, experiment_id=item.experiment_id, runner=self.name, delivery=delivery)])
            beating = asyncio.create_task(self._heartbeat(item))
            try:
                outcome = await self._execute_unless_ended(item, gpus)
            finally:
                beating.cancel()
            await self._record(outcome)
            await _acknowledge(msg)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await msg.raw_message.nak()
            raise
        except Exception:  # a fault of this runner, not of the job: another delivery may succeed
            log.exception("%s could not finish %s/%s", self.name, item.campaign, item.experiment_id)
            with contextlib.suppress(Exception):
                await msg.raw_message.nak(delay=self.ack_wait)
        finally:
            lease.cancel()
            await self.slots.give_back(gpus)

    async def _execute_unless_ended(self, item: WorkItem, gpus: tuple[str, ...]) -> JobCompleted | JobFailed:
        """Run the job, stopping it (its whole process tree) as soon as its campaign has ended."""
        started = time.monotonic()
        running = asyncio.create_task(self.execute(item, gpus))
        try:
            while True:
                done, _ = await asyncio.wait({running}, timeout=WITHDRAWAL_CHECK_SECONDS)
                if done:
                    return running.result()
                ended = await self._campaign_ended(item.campaign)
                if ended is not None:
                    running.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await running
                    return withdrawn(item, self.name, ended, time.monotonic() - started)
        finally:
            running.cancel()

    async def _campaign_ended(self, campaign: str) -> str | None:
        """Why a campaign's work is withdrawn: it has completed (read from the scheduler's own subject)."""
        if campaign in self._ended:
            return self._ended[campaign]
        assert self.runtime.js is not None
        subject = self.runtime.subjects.event("scheduler", campaign, "CampaignCompleted")
        try:
            raw = await self.runtime.js.get_last_msg(self.runtime.subjects.events_stream, subject)
        except Exception:  # not ended (or the bus is away): the job goes on
            return None
        event = admitted_event(self.runtime.subjects, StoredMessage.of(raw))
        if not isinstance(event, CampaignCompleted):
            return None
        self._ended[campaign] = f"campaign {campaign} ended ({event.outcome}) before this job finished"
        return self._ended[campaign]

    async def _record(self, outcome: JobCompleted | JobFailed) -> None:
        recorded, result = await self.results.record(outcome, self.runtime.clock())
        if recorded:
            # Kept in this runner's own ledger for its audit; the result itself is already on the bus.
            self.runtime.commit(result.campaign, [], observed=result)

    async def _hold_lease(self, msg: NatsMessage) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(lease_interval(self.ack_wait))
                with contextlib.suppress(Exception):
                    await msg.in_progress()

    # ------------------------------------------------------------ one job

    async def execute(self, item: WorkItem, gpus: tuple[str, ...] = ()) -> JobCompleted | JobFailed:
        workspace = self.root / "workspaces" / f"{item.campaign}-{item.experiment_id}"
        await asyncio.to_thread(shutil.rmtree, workspace, ignore_errors=True)
        spent = 0.0
        try:
            try:
                await asyncio.to_thread(unpack, await self._snapshot(item.snapshot_sha256), workspace)
            except Exception as error:
                return failed(item, self.name, "prepare", f"snapshot {item.snapshot_sha256[:12]} unavailable: {error}", "snapshot-unavailable", None, "", 0.0)
            shipped = await asyncio.to_thread(python_sources, workspace) if item.protected_symbols else {}
            manifest = read_manifest(item.environment_bin)
            host_env = sandbox_env(str(Path(sys.executable).parent), {"GIT_CEILING_DIRECTORIES": str(workspace.parent)})
            for label, patch in (("environment repair", manifest.source_patch if manifest else ""), ("idea", item.patch or "")):
                if not patch:
                    continue
                (workspace / ".autosota.patch").write_text(patch)
                patched = await run("git apply --whitespace=nowarn .autosota.patch && rm .autosota.patch", workspace, host_env, PREPARE_LIMITS)
                if not patched.ok:
                    return failed(item, self.name, "prepare", f"the {label} patch does not apply", failure_signature(patched.output_tail), patched.exit_code, patched.output_tail, patched.duration_seconds)
            try:
                parameters = await asyncio.to_thread(apply_item_parameters, workspace, item)
            except ParameterApplyError as error:
                return failed(item, self.name, "prepare", f"a parameter could not be applied: {error}", "parameter-unappliable", None, "", 0.0)
            (workspace / PARAMS_FILE).write_text(params_document(item))
            canary_sha256 = None
            if item.canary is not None:
                try:
                    canary_sha256 = await asyncio.to_thread(_plant_canary, workspace, item)
                except (OSError, ValueError) as error:
                    return failed(item, self.name, "prepare", f"canary could not be planted: {error}", "canary-unplantable", None, "", 0.0)
            view = self.sandbox.workspace_view(workspace)
            env = {**parameters.env, "AUTOSOTA_PARAMS": str(view / PARAMS_FILE), "GIT_CEILING_DIRECTORIES": str(view.parent)}
            factor = manifest.timeout_factor if manifest else 1.0
            memory = self.runtime.settings.runner_memory_bytes or None
            limits = Limits(wall_seconds=item.timeout_seconds * factor, memory_bytes=memory, cpus=self.capacity.job_cpus or None, gpu_devices=gpus, processes=self.runtime.settings.runner_job_processes)
            isolation = Isolation(network=False, read_only=tuple(item.protected_paths))
            environment_bin = self._environment_bin(item)
            sink = self._log_sink(item)
            trained = await self.sandbox.run(parameters.command, workspace, environment_bin, env, limits, isolation, sink)
            spent += trained.duration_seconds
            if not trained.ok:
                return failed(item, self.name, "train", _why(trained, limits), failure_signature(trained.output_tail), trained.exit_code, trained.output_tail, spent)
            evaluated = trained  # a script that trains and tests prints its metrics as it ends
            if item.evaluate_command.strip():
                # the results file is the evaluation's to write: one the training left is not read
                await asyncio.to_thread(_remove_results_file, workspace, item)
                evaluated = await self.sandbox.run(item.evaluate_command, workspace, environment_bin, env, limits, isolation, sink)
                spent += evaluated.duration_seconds
                if not evaluated.ok:
                    return failed(item, self.name, "evaluate", _why(evaluated, limits), failure_signature(evaluated.output_tail), evaluated.exit_code, evaluated.output_tail, spent)
            try:
                # off the event loop and bounded: a card's pattern may meet a line that makes it slow
                reading = asyncio.to_thread(extract_metrics, evaluated.output_tail, item.metrics, workspace_reader(workspace))
                metrics = await asyncio.wait_for(reading, timeout=METRICS_SECONDS)
            except MetricsError as error:
                return failed(item, self.name, "metrics", str(error), "metrics-unparsable", 0, evaluated.output_tail, spent)
            except TimeoutError:
                return failed(item, self.name, "metrics", f"reading the metrics took more than {METRICS_SECONDS:g} s; simplify the card's patterns", "metrics-too-slow", 0, evaluated.output_tail, spent)
            hashes = await asyncio.to_thread(hash_paths, workspace, item.protected_paths)
            changed = await asyncio.to_thread(changed_protected_code, workspace, shipped, item.protected_symbols) if item.protected_symbols else {}
            return completed(item, self.name, metrics, hashes, spent, evaluated.output_tail, canary_sha256, parameters, changed)
        finally:
            await asyncio.to_thread(shutil.rmtree, workspace, ignore_errors=True)

    def _environment_bin(self, item: WorkItem) -> str:
        """The job's environment; a runner on another machine without it uses its own interpreter."""
        if Path(item.environment_bin).is_dir():
            return item.environment_bin
        return str(Path(sys.executable).parent)

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

    async def _heartbeat(self, item: WorkItem) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await self._telemetry(item, "heartbeat", "")
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

    # ------------------------------------------------------------ dead letters

    async def on_dead_letter(self, msg: NatsMessage) -> None:
        """A job reached its maximum deliveries: record its failure once, and take it off the queue."""
        try:
            advisory = json.loads(msg.body)
            sequence = int(advisory["stream_seq"])
            deliveries = int(advisory.get("deliveries", self.max_deliveries))
        except (ValueError, KeyError, TypeError):
            await msg.ack()
            return
        assert self.runtime.js is not None
        work_stream = self.runtime.subjects.work_stream
        try:
            stored = await self.runtime.js.get_msg(work_stream, sequence)
        except NotFoundError:
            await msg.ack()  # acknowledged in the meantime: nothing is lost
            return
        try:
            item = WorkItem.model_validate_json(stored.data or b"")
        except ValidationError as error:
            self._reject(msg, f"dead letter of a malformed work item: {error.errors(include_url=False)}")
        else:
            why = "every runner that took it died or lost its lease before reporting a result"
            await self._record(dead_letter(item, self.name, deliveries, why))
        with contextlib.suppress(NotFoundError):
            await self.runtime.js.delete_msg(work_stream, sequence)
        await msg.ack()

    def _reject(self, msg: NatsMessage, reason: str) -> None:
        subject = msg.raw_message.subject
        rejection = MessageRejected(campaign="unknown", subject=subject, reason=reason[:2000], excerpt=msg.body[:500].decode("utf-8", "replace"), stream_sequence=msg.raw_message.metadata.sequence.stream)
        self.runtime.commit("unknown", [rejection])


async def _acknowledge(msg: NatsMessage) -> None:
    """Acknowledge and wait for the server to confirm, so the job is off the runner's books before its slot frees."""
    try:
        await msg.raw_message.ack_sync(timeout=5.0)
    except Exception:  # noqa: BLE001 - unconfirmed: the result is recorded, a redelivery only finds it
        with contextlib.suppress(Exception):
            await msg.ack()


async def _ensure_stream(runtime: ServiceRuntime[RunnerState], config: StreamConfig) -> None:
    assert runtime.js is not None and config.name is not None
    try:
        await runtime.js.stream_info(config.name)
    except NotFoundError:
        try:
            await runtime.js.add_stream(config)
        except BadRequestError:
            await runtime.js.stream_info(config.name)  # another runner created it first


def _plant_canary(workspace: Path, item: WorkItem) -> str:
    assert item.canary is not None
    target = (workspace / item.canary.path).resolve()
    if not target.is_relative_to(workspace.resolve()) or not target.is_file():
        raise ValueError(f"{item.canary.path} is not a file of the workspace")
    target.write_text(permute_column(target.read_text(), item.canary.column, item.canary.seed))
    return sha256_file(target)


def python_sources(workspace: Path) -> dict[str, str]:
    """The workspace's Python files by relative path (in path order, the first MAX_SOURCE_FILES)."""
    root = workspace.resolve()
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        if len(found) >= MAX_SOURCE_FILES:
            break
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_SOURCE_BYTES:
            continue
        found[path.relative_to(root).as_posix()] = decode_source(path.read_bytes())
    return found


def changed_protected_code(workspace: Path, shipped: dict[str, str], digests: dict[str, str]) -> dict[str, str]:
    """Each protected definition the run's workspace no longer matches, with how; code that cannot
    be checked counts as changed."""
    try:
        return {symbol: why[:500] for symbol, why in changed_symbols(shipped, python_sources(workspace), digests)}
    except Exception as error:  # noqa: BLE001 - fail closed: an unreadable workspace proves nothing
        return dict.fromkeys(digests, f"the protected code could not be checked: {type(error).__name__}: {str(error)[:300]}")


def _remove_results_file(workspace: Path, item: WorkItem) -> None:
    if item.metrics is None or item.metrics.file is None:
        return
    target = workspace / item.metrics.file
    if target.is_symlink() or target.is_file():
        target.unlink()


def apply_item_parameters(workspace: Path, item: WorkItem) -> Applied:
    """Apply the job's parameters the way the code takes them, editing the workspace's files; the
    params file still carries every value."""
    values, applications = dict(item.params), dict(item.applications)
    if item.seed_application is not None:
        values["seed"], applications["seed"] = item.seed, item.seed_application
    read = workspace_reader(workspace, CONFIG_FILE_LIMIT, "config file", ParameterApplyError)

    def read_config(path: str) -> bytes:
        data = read(path)
        if data is None:
            raise ParameterApplyError(f"{path} is not a file in the workspace")
        return data

    for name, application in applications.items():
        if application.file is not None and (workspace / application.file).is_symlink():
            raise ParameterApplyError(f"{application.file} (parameter {name}) is a symbolic link; a parameter edits the file itself")
    try:
        applied = apply_parameters(read_config, item.train_command, values, applications)
    except ParameterApplyError:
        raise
    except (ValueError, OverflowError, RecursionError, MemoryError, OSError, RuntimeError) as error:
        raise ParameterApplyError(f"{type(error).__name__}: {str(error)[:300]}") from None
    root = workspace.resolve()
    for path, text in applied.files.items():
        target = (root / path).resolve()
        if not target.is_relative_to(root):
            raise ParameterApplyError(f"{path} lies outside the workspace")
        target.write_bytes(text.encode("utf-8"))
    return applied


# A results file is a few numbers and a config a few pages; anything larger is not what the card meant.
RESULTS_FILE_LIMIT = 16 * 1024 * 1024
CONFIG_FILE_LIMIT = 4 * 1024 * 1024
METRICS_SECONDS = 20.0


def workspace_reader(workspace: Path, limit: int = RESULTS_FILE_LIMIT, kind: str = "results file", too_large: type[Exception] = MetricsError) -> Callable[[str], bytes | None]:
    """Reads a file of the workspace, never outside it: a symbolic link out of it reads as absent,
    a file larger than the limit raises the caller's error."""
    root = workspace.resolve()

    def read(path: str) -> bytes | None:
        try:
            target = (root / path).resolve()
        except (OSError, RuntimeError):  # a symbolic link loop
            return None
        if not target.is_relative_to(root) or not target.is_file():
            return None
        if target.stat().st_size > limit:
            raise too_large(f"the {kind} {path} is {target.stat().st_size} bytes, more than the {limit} a {kind} may have")
        return target.read_bytes()

    return read


def _why(outcome, limits: Limits) -> str:  # type: ignore[no-untyped-def]
    if outcome.timed_out:
        return f"time limit exceeded: killed after {limits.wall_seconds:g} s (timeout_seconds in the task card sets it)"
    killed_for = getattr(outcome, "killed_for", None)
    if killed_for == "memory":
        return f"out of memory: killed at the job's memory limit ({outcome.limits_applied}; AUTOSOTA_RUNNER_MEMORY_BYTES sets it)"
    if killed_for == "processes":
        return f"too many processes: killed at the job's process limit ({outcome.limits_applied}; AUTOSOTA_RUNNER_JOB_PROCESSES sets it)"
    return f"exited with code {outcome.exit_code}"


def register(broker: NatsBroker, runtime: ServiceRuntime[RunnerState], sandbox: Sandbox) -> Runner:
    settings = runtime.settings
    capacity = Capacity(pool=settings.pool, slots=settings.runner_slots, gpus=settings.runner_gpus, gpu_type=settings.runner_gpu_type, job_cpus=settings.runner_job_cpus)
    runner = Runner(runtime, sandbox, capacity)
    subjects = runtime.subjects

    @broker.subscriber(
        subjects.work(capacity.pool),
        stream=JStream(subjects.work_stream, declare=False),
        durable=f"runner-{capacity.pool}",
        inbox_prefix=runtime.pull_inbox_prefix,
        pull_sub=PullSub(batch_size=1, timeout=1.0),
        config=ConsumerConfig(ack_wait=settings.work_ack_wait_seconds, max_deliver=settings.work_max_deliveries),
        ack_policy=AckPolicy.MANUAL,
        title=f"runner:work:{capacity.pool}",
        description="Pulls WorkItem messages of its pool, one per free slot; the lease (ack wait) is renewed while the job runs.",
    )
    async def on_work(msg: NatsMessage) -> None:
        await runner.on_work(msg)

    @broker.subscriber(
        max_deliveries_advisories(runtime),
        stream=JStream(dead_letter_stream(runtime), declare=False),
        durable="runner-dead-letters",
        inbox_prefix=runtime.pull_inbox_prefix,
        pull_sub=PullSub(batch_size=1, timeout=1.0),
        ack_policy=AckPolicy.MANUAL,
        title="runner:dead-letters",
        description="The server's max-deliveries advisories for work items, captured in a stream; each becomes one JobFailed(stage='dead_letter').",
    )
    async def on_dead_letter(msg: NatsMessage) -> None:
        await runner.on_dead_letter(msg)

    return runner

"""What a runner decides: which jobs it can run, how an experiment's output becomes a result, and
how a job's one result is identified across every runner of the pool."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import random
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import NAMESPACE_URL, UUID, uuid5

from shared.contracts import Event, JobCompleted, JobFailed, WorkItem, parse_event
from shared.parameters import Applied

RELEVANT = frozenset({"JobCompleted", "JobFailed"})
PARAMS_FILE = "autosota_params.json"
RESULT_NAMESPACE = uuid5(NAMESPACE_URL, "autosota/job-result")
DEAD_LETTER_SIGNATURE = "dead letter: delivered the maximum number of times without a result"
_KEY_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass
class RunnerState:
    finished: set[str] = field(default_factory=set)


class RunnerDomain:
    relevant = RELEVANT

    def initial_state(self, campaign: str) -> RunnerState:
        return RunnerState()

    def evolve(self, state: RunnerState, event: Event) -> RunnerState:
        if isinstance(event, JobCompleted | JobFailed):
            state.finished.add(event.experiment_id)
        return state


def permute_column(csv_text: str, column: str, seed: int) -> str:
    """The same table with one column's values shuffled: the leakage canary's test labels."""
    rows = list(csv.reader(io.StringIO(csv_text)))
    if not rows or column not in rows[0]:
        raise ValueError(f"column {column!r} not in the file's header")
    index = rows[0].index(column)
    values = [row[index] for row in rows[1:]]
    random.Random(seed).shuffle(values)
    for row, value in zip(rows[1:], values, strict=True):
        row[index] = value
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def params_document(item: WorkItem) -> str:
    return json.dumps({"seed": item.seed, "params": item.params}, sort_keys=True)


def completed(item: WorkItem, runner: str, metrics: dict[str, float], hashes: dict[str, str | None], seconds: float, tail: str, canary_sha256: str | None = None, applied: Applied | None = None, changed_symbols: dict[str, str] | None = None) -> JobCompleted:
    return JobCompleted(
        changed_symbols=changed_symbols or {},
        train_command=applied.command if applied else item.train_command,
        applied=applied.lines if applied else [],
        applied_patch=applied.patch if applied else "",
        campaign=item.campaign,
        experiment_id=item.experiment_id,
        purpose=item.purpose,
        runner=runner,
        metrics=metrics,
        evaluate_command=item.evaluate_command,
        protected_hashes=hashes,
        duration_seconds=round(seconds, 3),
        output_tail=tail[-4000:],
        canary_sha256=canary_sha256,
    )


def failed(item: WorkItem, runner: str, stage: str, reason: str, signature: str, exit_code: int | None, tail: str, seconds: float) -> JobFailed:
    return JobFailed(
        campaign=item.campaign,
        experiment_id=item.experiment_id,
        purpose=item.purpose,
        runner=runner,
        stage=stage,  # type: ignore[arg-type]
        reason=reason,
        signature=signature,
        exit_code=exit_code,
        output_tail=tail[-4000:],
        duration_seconds=round(seconds, 3),
    )


# ---------------------------------------------------------------- capacity


@dataclass(frozen=True)
class Capacity:
    """What one runner process can run at once."""

    pool: str
    slots: int = 1
    gpus: int = 0
    gpu_type: str = ""
    job_cpus: float = 0.0  # CPU cores each job may use in a container; 0: no limit


def unfit_reason(item: WorkItem, capacity: Capacity) -> str | None:
    """Why this runner can never run the job (None when it can, possibly after waiting)."""
    if item.pool != capacity.pool:
        return f"the job is for pool {item.pool!r}, this runner serves {capacity.pool!r}"
    if item.gpus > capacity.gpus:
        return f"the job needs {item.gpus} GPU(s), this runner has {capacity.gpus}"
    if item.gpus and item.gpu_type and item.gpu_type.lower() != capacity.gpu_type.lower():
        return f"the job needs {item.gpu_type} GPUs, this runner has {capacity.gpu_type or 'GPUs of no declared type'}"
    return None


def lease_interval(ack_wait_seconds: float) -> float:
    """How often a running job renews its lease: three times per ack wait."""
    return max(0.2, ack_wait_seconds / 3)


# ---------------------------------------------------------------- one result per job


def result_key(campaign: str, experiment_id: str) -> str:
    """The job's key in the results bucket (its claim on a result)."""
    if _KEY_SAFE.match(experiment_id):
        return f"{campaign}.{experiment_id}"
    return f"{campaign}.x{hashlib.sha256(experiment_id.encode()).hexdigest()[:32]}"


def result_message_id(campaign: str, experiment_id: str, key: bytes) -> str:
    """Nats-Msg-Id of a job's result: the same from whichever runner publishes it, keyed with the
    runners' shared secret so that no other user of the bus can spend it first."""
    digest = hmac.new(key, f"{campaign}/{experiment_id}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"runner:result:{digest}"


def result_event_id(campaign: str, experiment_id: str) -> UUID:
    return uuid5(RESULT_NAMESPACE, f"{campaign}/{experiment_id}")


def stamp_result(outcome: JobCompleted | JobFailed, runner: str, now: datetime) -> JobCompleted | JobFailed:
    """The envelope of a job's result; its id depends on the job alone, not on who ran it."""
    return outcome.model_copy(update={"event_id": result_event_id(outcome.campaign, outcome.experiment_id), "producer": runner, "time": now})


ClaimState = Literal["claimed", "published"]


@dataclass(frozen=True)
class Claim:
    """A runner's claim on a job's result, held in the results bucket."""

    runner: str
    state: ClaimState
    event: JobCompleted | JobFailed

    def encode(self) -> bytes:
        return json.dumps({"runner": self.runner, "state": self.state, "event": self.event.model_dump(mode="json")}).encode()

    @classmethod
    def decode(cls, data: bytes) -> Claim:
        body: dict[str, Any] = json.loads(data)
        event = parse_event(body["event"])
        if not isinstance(event, JobCompleted | JobFailed):
            raise ValueError(f"a claim holds {event.event_type}, not a job result")
        return cls(runner=str(body["runner"]), state=body["state"], event=event)

    def published(self) -> Claim:
        return Claim(self.runner, "published", self.event)


WITHDRAWN_SIGNATURE = "withdrawn: the campaign ended"


def withdrawn(item: WorkItem, runner: str, why: str, seconds: float) -> JobFailed:
    """The recorded end of a job whose campaign ended before it did: queued work is dropped, running work stopped."""
    return failed(item, runner, "withdrawn", why, WITHDRAWN_SIGNATURE, None, "", seconds)


def dead_letter(item: WorkItem, runner: str, deliveries: int, why: str) -> JobFailed:
    """The recorded failure of a job no runner finished within its deliveries."""
    return failed(item, runner, "dead_letter", f"{why} (delivered {deliveries} times)", DEAD_LETTER_SIGNATURE, None, "", 0.0)

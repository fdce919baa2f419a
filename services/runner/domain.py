"""What a runner decides: which jobs it has finished, how an experiment's output becomes a result."""

from __future__ import annotations

import csv
import io
import json
import math
import random
from dataclasses import dataclass, field

from shared.contracts import Event, JobCompleted, JobFailed, WorkItem

RELEVANT = frozenset({"JobCompleted", "JobFailed"})
PARAMS_FILE = "autosota_params.json"


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


class MetricsError(ValueError):
    pass


def parse_metrics(output: str) -> dict[str, float]:
    """The metrics the evaluation printed: the last output line that is a JSON object of numbers."""
    for line in reversed(output.splitlines()):
        line = line.strip()
        if not (line.startswith("{") and line.endswith("}")):
            continue
        try:
            decoded = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(decoded, dict):
            continue
        metrics: dict[str, float] = {}
        for name, value in decoded.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise MetricsError(f"metric {name!r} is not a number: {value!r}")
            if not math.isfinite(value):
                raise MetricsError(f"metric {name!r} is not finite: {value!r}")
            metrics[name] = float(value)
        return metrics
    raise MetricsError("the evaluation printed no JSON object of metrics on a line of its own")


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


def completed(item: WorkItem, runner: str, metrics: dict[str, float], hashes: dict[str, str | None], seconds: float, tail: str, canary_sha256: str | None = None) -> JobCompleted:
    return JobCompleted(
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

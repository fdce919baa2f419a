"""How the objective is set: the task card's fields, checked against the paper's own table."""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.contracts import Event, Objective, ObjectiveFailed, ObjectiveSet, ParameterSpec, ResourcesPrepared

TASK_CARD = "autosota.toml"
RELEVANT = frozenset({"ResourcesPrepared", "ObjectiveSet", "ObjectiveFailed"})
REQUIRED_FIELDS = {
    "paper": ["title", "text", "method"],
    "objective": ["primary_metric", "direction", "protected_paths"],
    "experiment": ["train_command", "evaluate_command"],
}
# Relative difference above which the card's number and the paper's table disagree.
REPORTED_TOLERANCE = 1e-6


@dataclass
class ObjectiveState:
    snapshot_sha256: str | None = None
    files: dict[str, str] | None = None
    decided: bool = False


class ObjectiveDomain:
    relevant = RELEVANT

    def initial_state(self, campaign: str) -> ObjectiveState:
        return ObjectiveState()

    def evolve(self, state: ObjectiveState, event: Event) -> ObjectiveState:
        if isinstance(event, ResourcesPrepared):
            state.snapshot_sha256 = event.snapshot_sha256
            state.files = dict(event.files)
        elif isinstance(event, ObjectiveSet | ObjectiveFailed):
            state.decided = True
        return state


class TaskCardError(ValueError):
    pass


def parse_task_card(text: str) -> dict[str, Any]:
    try:
        card = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise TaskCardError(f"{TASK_CARD} is not valid TOML: {error}") from None
    missing = [
        f"[{section}] {name}"
        for section, names in REQUIRED_FIELDS.items()
        for name in names
        if name not in card.get(section, {})
    ]
    if missing:
        raise TaskCardError(f"{TASK_CARD} lacks required fields: {', '.join(missing)}")
    return card


def _normalise(cell: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", cell.lower())


def _number(cell: str) -> float | None:
    match = re.search(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", cell.replace(",", ""))
    return float(match.group()) if match else None


def reported_from_tables(paper_text: str, method: str, metric: str) -> float | None:
    """The metric's value in the method's row of any markdown table of the paper."""
    rows = [line.strip() for line in paper_text.splitlines()]
    header: list[str] | None = None
    for line in rows:
        if not (line.startswith("|") and line.endswith("|")):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if all(re.fullmatch(r":?-{2,}:?", cell) for cell in cells if cell):
            continue
        if header is None:
            header = cells
            continue
        columns = [i for i, name in enumerate(header) if _normalise(name).startswith(_normalise(metric))]
        if columns and _normalise(method) in _normalise(cells[0]) and columns[0] < len(cells):
            return _number(cells[columns[0]])
    return None


def build_objective(card: dict[str, Any], paper_text: str, files: dict[str, str], requirements_text: str | None) -> Objective:
    """The frozen rubric, or TaskCardError saying what is wrong."""
    paper, goal = card["paper"], card["objective"]
    environment, experiment = card.get("environment", {}), card["experiment"]
    metric = goal["primary_metric"]
    from_table = reported_from_tables(paper_text, paper["method"], metric)
    from_card = goal.get("reported_value")
    if from_card is None and from_table is None:
        raise TaskCardError(f"no reported value for {metric!r}: neither the task card nor a table row for {paper['method']!r} in {paper['text']} gives one")
    if from_card is not None and from_table is not None and not math.isclose(from_card, from_table, rel_tol=REPORTED_TOLERANCE):
        raise TaskCardError(f"the task card reports {metric}={from_card} but the paper's table says {from_table}")
    source = f"table row {paper['method']!r} of {paper['text']}" if from_table is not None else f"{TASK_CARD}"
    protected = [str(path).rstrip("/") for path in goal["protected_paths"]]
    absent = [path for path in protected if not any(name == path or name.startswith(path + "/") for name in files)]
    if absent:
        raise TaskCardError(f"protected paths not in the paper folder: {', '.join(absent)}")
    try:
        return Objective(
            title=paper["title"],
            method=paper["method"],
            primary_metric=metric,
            direction=goal["direction"],
            reported_value=float(from_table if from_table is not None else from_card),
            reported_source=source,
            secondary_metrics=dict(goal.get("secondary_metrics", {})),
            protected_paths=protected,
            constraints=list(goal.get("constraints", [])),
            train_command=experiment["train_command"],
            evaluate_command=experiment["evaluate_command"],
            smoke_command=environment.get("smoke_command"),
            requirements=_requirements(requirements_text),
            timeout_seconds=float(experiment.get("timeout_seconds", 120)),
            baseline_seeds=list(experiment.get("baseline_seeds", [0, 1, 2])),
            search_space={name: ParameterSpec.model_validate(spec) for name, spec in card.get("search_space", {}).items()},
            test_labels=goal.get("test_labels"),
        )
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors(include_url=False))
        raise TaskCardError(f"{TASK_CARD} has invalid values: {problems}") from None


def _requirements(text: str | None) -> list[str]:
    if not text:
        return []
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def decide(event: ResourcesPrepared, objective: Objective | None, error: str | None) -> list[Event]:
    if objective is None:
        return [ObjectiveFailed(campaign=event.campaign, reason=error or "objective could not be set")]
    return [ObjectiveSet(campaign=event.campaign, objective=objective, snapshot_sha256=event.snapshot_sha256)]

"""How the objective is set: the task card's fields, checked against the paper's own table.

When the card is missing or lacks fields and the service has a model, the model reads the paper
text and README for the missing ones only; the card's own fields always win. A reading is accepted
only when its quote holds the reported number and appears in a document, and its evaluation
script exists in the paper folder.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from shared.brain import ModelLedger, ObjectiveReading
from shared.contracts import BrainSelected, Event, ModelCalled, Objective, ObjectiveFailed, ObjectiveSet, ParameterSpec, ResourcesPrepared
from shared.parameters import Application, validate_application
from shared.protection import ProtectionError, split_entry

TASK_CARD = "autosota.toml"
AGENT = "objective"
RELEVANT = frozenset({"ResourcesPrepared", "ObjectiveSet", "ObjectiveFailed", "ModelCalled", "BrainSelected"})
DOCUMENT_SUFFIXES = (".md", ".txt", ".rst")
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
    models: ModelLedger = field(default_factory=ModelLedger)
    brain_selected: bool = False


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
        elif isinstance(event, ModelCalled):
            state.models.add(event)
        elif isinstance(event, BrainSelected) and event.agent == AGENT:
            state.brain_selected = True
        return state


class TaskCardError(ValueError):
    pass


def parse_task_card(text: str) -> dict[str, Any]:
    card = read_toml(text)
    missing = missing_fields(card)
    if missing:
        raise TaskCardError(f"{TASK_CARD} lacks required fields: {', '.join(missing)}")
    return card


def read_toml(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise TaskCardError(f"{TASK_CARD} is not valid TOML: {error}") from None


def missing_fields(card: dict[str, Any]) -> list[str]:
    return [
        f"[{section}] {name}"
        for section, names in REQUIRED_FIELDS.items()
        for name in names
        if name not in card.get(section, {})
    ]


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


def build_objective(card: dict[str, Any], paper_text: str, files: dict[str, str], requirements_text: str | None, card_source: str | None = None) -> Objective:
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
    source = f"table row {paper['method']!r} of {paper['text']}" if from_table is not None else (card_source or f"{TASK_CARD}")
    protected = [str(path).rstrip("/") for path in goal["protected_paths"]]
    try:
        located = [split_entry(path)[0] for path in protected]
    except ProtectionError as error:
        raise TaskCardError(f"{TASK_CARD}: protected_paths: {error}") from None
    absent = [path for path in dict.fromkeys(located) if not any(name == path or name.startswith(path + "/") for name in files)]
    if absent:
        raise TaskCardError(f"protected paths not in the paper folder: {', '.join(absent)}")
    try:
        objective = Objective(
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
            rules=goal.get("rules"),
            reproduction_tolerance=goal.get("reproduction_tolerance"),
            metrics=goal.get("metrics"),
            seed=experiment.get("seed"),
        )
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors(include_url=False))
        raise TaskCardError(f"{TASK_CARD} has invalid values: {problems}") from None
    _check_applications(objective, files)
    return objective


def _check_applications(objective: Objective, files: dict[str, str]) -> None:
    """Every parameter's way into the code names a file the paper has, and none may edit what is protected."""
    def protected(path: str) -> bool:
        return any(path == entry or path.startswith(entry + "/") for entry in objective.protected_locations)

    applications: dict[str, Application] = dict(objective.applications)
    if objective.seed is not None:
        if "seed" in objective.search_space:
            raise TaskCardError(f"{TASK_CARD}: a search-space parameter is named 'seed' and [experiment] seed says how the seed is applied; rename the parameter")
        applications["seed"] = objective.seed
    problems = [problem for name, application in applications.items() if (problem := validate_application(name, application, files, protected))]
    if problems:
        raise TaskCardError(f"{TASK_CARD}: {'; '.join(problems)}")


def _requirements(text: str | None) -> list[str]:
    if not text:
        return []
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def decide(event: ResourcesPrepared, objective: Objective | None, error: str | None, record: list[Event] | tuple[Event, ...] = ()) -> list[Event]:
    if objective is None:
        return [*record, ObjectiveFailed(campaign=event.campaign, reason=error or "objective could not be set")]
    return [*record, ObjectiveSet(campaign=event.campaign, objective=objective, snapshot_sha256=event.snapshot_sha256)]


# ---------------------------------------------------------------- reading the paper with a model


def documents_to_read(files: dict[str, str], card: dict[str, Any]) -> list[str]:
    """The paper text the card names, then every top-level text document (README first)."""
    named = card.get("paper", {}).get("text")
    top = sorted((path for path in files if "/" not in path and path.lower().endswith(DOCUMENT_SUFFIXES)), key=lambda p: (not p.lower().startswith("readme"), p))
    ordered = ([named] if isinstance(named, str) and named in files else []) + [p for p in top if p != named]
    return ordered


def fields_to_find(card: dict[str, Any], reported_in_table: bool) -> list[str]:
    missing = missing_fields(card)
    if "reported_value" not in card.get("objective", {}) and not reported_in_table:
        missing.append("[objective] reported_value")
    return missing


def merge_reading(card: dict[str, Any], reading: ObjectiveReading, paper_text_path: str) -> dict[str, Any]:
    """The card with the model's reading filling only what the card leaves out."""
    merged = {section: dict(values) for section, values in card.items() if isinstance(values, dict)}
    paper = merged.setdefault("paper", {})
    paper.setdefault("title", reading.title)
    paper.setdefault("method", reading.method)
    paper.setdefault("text", paper_text_path)
    goal = merged.setdefault("objective", {})
    goal.setdefault("primary_metric", reading.primary_metric)
    goal.setdefault("direction", reading.direction)
    goal.setdefault("protected_paths", list(reading.protected_paths))
    goal.setdefault("secondary_metrics", {m.name: m.tolerance for m in reading.secondary_metrics})
    if "reported_value" not in goal and goal["primary_metric"] == reading.primary_metric:
        goal["reported_value"] = reading.reported_value
    experiment = merged.setdefault("experiment", {})
    experiment.setdefault("train_command", reading.train_command)
    experiment.setdefault("evaluate_command", reading.evaluate_command)
    return merged


def _number_variants(value: float) -> set[str]:
    return {f"{value:g}", f"{value}", f"{value:.3f}", f"{value:.2f}", f"{value:.4f}", f"{value * 100:g}", f"{value * 100:.1f}"}


def check_reading(reading: ObjectiveReading, documents: dict[str, str], files: dict[str, str]) -> tuple[str | None, str | None]:
    """(the document the quote comes from, None), or (None, why the reading cannot be trusted)."""
    quote = " ".join(reading.reported_quote.split())
    if not any(variant in quote for variant in _number_variants(reading.reported_value)):
        return None, f"the quote {quote[:200]!r} does not state the reported value {reading.reported_value:g}"
    source = next((path for path, text in documents.items() if quote and quote in " ".join(text.split())), None)
    if source is None:
        return None, f"the quote {quote[:200]!r} is not in {', '.join(documents) or 'any document'}"
    scripts = [word for word in reading.evaluate_command.split() if word.endswith((".py", ".sh"))]
    absent = [script for script in scripts if script not in files]
    if absent:
        return None, f"the evaluation command {reading.evaluate_command!r} names files not in the paper folder: {', '.join(absent)}"
    return source, None

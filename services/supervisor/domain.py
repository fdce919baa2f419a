"""What the supervisor decides: the red lines of a campaign, enforced by code.

It owns the protected-file baseline, the audit of every proposed idea before it runs (search
space, protected paths, shadowing modules, evaluation invocation, tampering code, test-label
reads, suspicious literals, the paper's own rules), the check of every completed experiment
(protected hashes, the frozen evaluation command, the metric list, trade-offs), and the
verification round that certifies or refutes a nominated candidate: fresh seeds for candidate
and baseline, a seed-sensitivity check, a leakage canary, and a one-sided Welch t-test.

Rules are named after AutoSOTA's red lines: R1 metric parameters and evaluation invocation
fixed, R2 evaluation code untouched, R3 no hard-coded predictions, R4 no hidden trade-offs,
R5 no test data in training, R6 no altered data, R7 the paper's own constraints.
"""

from __future__ import annotations

import ast
import copy
import math
import re
import shlex
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from services.supervisor.patches import (
    DIGITS,
    NUMBERS_PER_BLOCK,
    NUMBERS_PER_LINE,
    OPAQUE,
    PINNED_SEED,
    PROCESS_ESCAPE,
    STARTUP_HOOKS,
    STARTUP_SUFFIXES,
    STDLIB_MODULES,
    WRITE_MARKERS,
    PatchSummary,
    code_part,
    covers,
    display_path,
    escapes_workspace,
    import_root,
    imported_modules,
    is_code,
    is_protected,
    module_name,
    names_file,
    normalise_path,
    numeric_blocks,
    parse_patch,
    path_readings,
    string_literals,
)
from services.supervisor.statistics import mean, welch_one_sided
from shared.protection import MAX_SOURCE_FILES, symbol_digests
from shared.contracts import (
    Arm,
    BaselineRequested,
    Budget,
    CampaignStarted,
    CandidateNominated,
    Event,
    ExperimentDispatched,
    Idea,
    IdeaCleared,
    IdeaRejected,
    IdeasProposed,
    JobCompleted,
    JobFailed,
    LabelCanary,
    Objective,
    ObjectiveSet,
    ProtectionEstablished,
    Purpose,
    ResourcesPrepared,
    ResultRejected,
    ResultValidated,
    SotaCertified,
    SotaRefuted,
    VerificationDispatched,
    WorkItem,
)

__all__ = ["covers", "is_protected", "normalise_path", "parse_patch"]

RELEVANT = frozenset(
    {
        "CampaignStarted", "ResourcesPrepared", "ObjectiveSet", "BaselineRequested", "ProtectionEstablished",
        "ExperimentDispatched", "JobCompleted", "JobFailed", "IdeasProposed", "IdeaCleared", "IdeaRejected",
        "ResultValidated", "ResultRejected", "CandidateNominated", "VerificationDispatched", "SotaCertified",
        "SotaRefuted",
    }
)

ALPHA = 0.05
TEST_NAME = "welch-t-one-sided"
DISPATCHER = "supervisor"
ARMS: tuple[Arm, ...] = ("candidate", "baseline")
TASK_CARD = "autosota.toml"
# A candidate that keeps more than this share of its advantage when the test labels are shuffled has seen them.
CANARY_RETAINED_LIMIT = 0.5
CANARY_SEED_OFFSET = 7
EVIDENCE_LINES = 5

Verdict = tuple[bool, str, dict[str, Any]]
Finding = tuple[str, dict[str, Any]]
CLEARED: Verdict = (True, "", {})


# ---------------------------------------------------------------- state


@dataclass
class DispatchRecord:
    purpose: Purpose
    idea_id: str | None
    arm: Arm | None = None
    seed: int | None = None
    canary: bool = False


@dataclass
class VerificationRound:
    attempt: int
    idea_id: str
    params: dict[str, Any]
    patch: str | None
    seeds: int
    decided: bool = False


@dataclass
class SupervisorState:
    budget: Budget = field(default_factory=Budget)
    pool: str = "cpu"
    snapshot_sha256: str | None = None
    snapshot_files: dict[str, str] | None = None
    objective: Objective | None = None
    environment_bin: str | None = None
    baseline_params: dict[str, Any] | None = None
    protected_files: dict[str, str] | None = None
    evaluation_imports: list[str] = field(default_factory=list)
    shadow_guards: list[str] = field(default_factory=list)
    protected_symbols: dict[str, str] = field(default_factory=dict)
    dispatched: dict[str, DispatchRecord] = field(default_factory=dict)
    validated: dict[str, ResultValidated] = field(default_factory=dict)
    rejected: dict[str, ResultRejected] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    ideas_cleared: set[str] = field(default_factory=set)
    ideas_rejected: dict[str, str] = field(default_factory=dict)
    verification: VerificationRound | None = None


class SupervisorDomain:
    relevant = RELEVANT

    def initial_state(self, campaign: str) -> SupervisorState:
        return SupervisorState()

    def evolve(self, state: SupervisorState, event: Event) -> SupervisorState:
        return fold(state, event)


def fold(state: SupervisorState, event: Event) -> SupervisorState:
    """Apply one event. Every branch is idempotent: the supervisor sees its own events twice."""
    if isinstance(event, CampaignStarted):
        state.budget, state.pool = event.budget, event.pool
    elif isinstance(event, ResourcesPrepared):
        state.snapshot_sha256, state.snapshot_files = event.snapshot_sha256, dict(event.files)
    elif isinstance(event, ObjectiveSet):
        state.objective = event.objective
    elif isinstance(event, BaselineRequested):
        state.environment_bin, state.baseline_params = event.environment_bin, dict(event.params)
    elif isinstance(event, ProtectionEstablished):
        state.protected_files = dict(event.protected_files)
        state.evaluation_imports = list(event.evaluation_imports)
        state.shadow_guards = list(event.shadow_guards)
        state.protected_symbols = dict(event.protected_symbols)
    elif isinstance(event, ExperimentDispatched):
        state.dispatched[event.experiment_id] = DispatchRecord(event.purpose, event.idea_id, seed=event.seed)
    elif isinstance(event, VerificationDispatched):
        state.dispatched[event.experiment_id] = DispatchRecord("verification", event.idea_id, event.arm, event.seed, event.canary)
    elif isinstance(event, JobFailed):
        state.failed[event.experiment_id] = event.reason
    elif isinstance(event, IdeaCleared):
        state.ideas_cleared.add(event.idea.idea_id)
    elif isinstance(event, IdeaRejected):
        state.ideas_rejected[event.idea.idea_id] = event.rule
    elif isinstance(event, ResultValidated):
        state.validated[event.experiment_id] = event
    elif isinstance(event, ResultRejected):
        state.rejected[event.experiment_id] = event
    elif isinstance(event, CandidateNominated):
        current = state.verification
        if current is None or (current.attempt, current.idea_id) != (event.attempt, event.idea_id):
            state.verification = VerificationRound(
                event.attempt, event.idea_id, dict(event.params), event.patch, state.budget.verification_seeds
            )
    elif isinstance(event, SotaCertified | SotaRefuted):
        if state.verification is not None and state.verification.idea_id == event.idea_id:
            state.verification.decided = True
    return state


# ---------------------------------------------------------------- protection


def protected_snapshot_files(files: dict[str, str], protected_entries: list[str]) -> dict[str, str]:
    """Every snapshot file under a protected path, with the hash it must keep."""
    return {path: digest for path, digest in sorted(files.items()) if is_protected(protected_entries, path)}


def protected_sources_needed(state: SupervisorState) -> list[str]:
    """The Python files the protection record is computed from (empty once it exists): the protected
    ones, whose imports it lists, and, when definitions are protected, every one they may refer to."""
    if state.protected_files is not None or state.snapshot_files is None or state.objective is None:
        return []
    protected = [path for path in protected_snapshot_files(state.snapshot_files, state.objective.protected_paths) if path.endswith(".py")]
    if not protected and len(state.objective.protected_locations) == len(state.objective.protected_paths):
        return []
    python = [path for path in sorted(state.snapshot_files) if path.endswith(".py")]
    return list(dict.fromkeys([*protected, *python[:MAX_SOURCE_FILES]]))


def protected_symbol_entries(objective: Objective, protected_sources: dict[str, str]) -> list[str]:
    """The definitions whose code must not change: those the card names, and every top-level one of a
    protected Python file, so that what they call elsewhere in the repository is covered too."""
    named = [entry for entry in objective.protected_paths if "::" in entry]
    derived: list[str] = []
    for path, text in sorted(protected_sources.items()):
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            continue  # its file hash still protects it
        derived += [f"{path}::{node.name}" for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
    return [*named, *derived]


def evaluation_imports(sources: dict[str, str]) -> list[str]:
    """Every top-level module the protected code imports: a file of that name must not appear beside it."""
    return sorted(set().union(*(imported_modules(text) for text in sources.values())) if sources else set())


def decide_protection(state: SupervisorState, campaign: str, sources: dict[str, str] | None = None) -> list[Event]:
    if state.protected_files is not None or state.snapshot_files is None or state.objective is None:
        return []
    sources = sources or {}
    protected = protected_snapshot_files(state.snapshot_files, state.objective.protected_paths)
    protected_sources = {path: text for path, text in sources.items() if path in protected}
    imports = evaluation_imports(protected_sources)
    guards = shadow_guards(state.objective, protected, imports, state.snapshot_files)
    # a named definition that does not exist raises ProtectionError: the campaign fails with it
    symbols = symbol_digests(sources, protected_symbol_entries(state.objective, protected_sources))
    return [ProtectionEstablished(campaign=campaign, protected_files=protected, evaluation_imports=imports, shadow_guards=guards, protected_symbols=symbols)]


def protected_module_names(protected_entries: list[str], protected_files: dict[str, str]) -> set[str]:
    """Modules (and the packages holding them) that the evaluation protocol may import."""
    names: set[str] = set()
    for path in [*(entry.split("::", 1)[0] for entry in protected_entries), *protected_files]:
        name = module_name(path)
        if name is None:
            continue
        names.add(name)
        names.update(part for part in normalise_path(path).split("/")[:-1] if part.isidentifier())
    return names


def import_roots(protected_entries: list[str], protected_files: dict[str, str]) -> set[str]:
    """Folders Python puts first on sys.path when it runs a protected script: the workspace and theirs."""
    located = [entry.split("::", 1)[0] for entry in protected_entries]
    return {"."} | {import_root(path) for path in [*located, *protected_files] if path.endswith(".py")}


def shadow_guards(objective: Objective, protected_files: dict[str, str], imports: Iterable[str], snapshot_files: Iterable[str] = ()) -> list[str]:
    """Paths that must not exist after a run: a module there would replace one the evaluation imports.

    A module the paper itself ships (its own `models.py`, its `utils/` package) is what the
    evaluation is meant to import, not a plant: it is no guard. Whether a patch may edit it is the
    protected paths' and symbols' question."""
    names = (set(imports) | STARTUP_HOOKS) - set(sys.builtin_module_names)
    shipped = set(snapshot_files)
    shipped_folders = {"/".join(path.split("/")[:depth]) for path in shipped for depth in range(1, path.count("/") + 1)}
    guards: set[str] = set()
    for root in import_roots(objective.protected_paths, protected_files):
        prefix = "" if root == "." else root + "/"
        for name in names:
            guards.update({f"{prefix}{name}.py", f"{prefix}{name}.pyc", f"{prefix}{name}"})
    return sorted(guard for guard in guards if not is_protected(objective.protected_paths, guard) and guard not in shipped and guard not in shipped_folders)


# ---------------------------------------------------------------- the patch audit


def evaluation_files(objective: Objective) -> set[str]:
    """The task card and every file the frozen evaluation command names: they define how scoring is invoked."""
    try:
        tokens = shlex.split(objective.evaluate_command)
    except ValueError:
        tokens = objective.evaluate_command.split()
    named = {
        normalise_path(token)
        for index, token in enumerate(tokens)
        if not token.startswith("-") and (index > 0 or "/" in token) and ("." in token or "/" in token)
    }
    return {TASK_CARD} | named


def _readings(paths: Iterable[str]) -> set[str]:
    return {reading for path in paths for reading in path_readings(path)}


def _excerpt(lines: list[tuple[str, str]]) -> list[str]:
    return [f"{path}: {line.strip()[:160]}" for path, line in lines[:EVIDENCE_LINES]]


def patch_findings(objective: Objective, protected_files: dict[str, str], imports: Iterable[str], patch: str) -> list[Finding]:
    """Every red line a patch crosses before it runs, most serious first, each with its evidence."""
    summary = parse_patch(patch)
    if not summary.touched:
        return [("patch-malformed", {"reason": "the patch names no file"})]
    findings: list[Finding] = []
    escaping = sorted(path for path in summary.touched if escapes_workspace(path))
    if escaping:
        findings.append(("R2", {"reason": "the patch reaches outside the workspace", "paths": escaping}))
    if summary.symlinks:
        findings.append(("R2", {"reason": "the patch creates a symbolic link", "paths": sorted(map(display_path, summary.symlinks))}))
    entries = [*objective.protected_paths, *protected_files]
    hits = sorted(reading for reading in _readings(summary.touched) if is_protected(entries, reading))
    code_hits = [path for path in hits if is_code(path)]
    data_hits = [path for path in hits if not is_code(path)]
    if code_hits:
        findings.append(("R2", {"reason": "the patch touches protected paths", "paths": code_hits, "protected_paths": objective.protected_paths}))
    if data_hits:
        findings.append(("R6", {"reason": "the patch alters, filters or relabels protected data", "paths": data_hits, "protected_paths": objective.protected_paths}))
    invocation = sorted(_readings(summary.touched) & evaluation_files(objective) - set(hits))
    if invocation:
        findings.append(("R1", {"reason": "the patch changes how the evaluation is invoked", "paths": invocation, "evaluate_command": objective.evaluate_command}))
    findings += _shadowing(objective, protected_files, set(imports), summary)
    findings += _tampering_code(objective, protected_files, summary)
    findings += _test_label_reads(objective, summary)
    findings += _suspicious_literals(summary)
    findings += _rule_violations_in_patch(objective, summary)
    return findings


def _shadowing(objective: Objective, protected_files: dict[str, str], imports: set[str], summary: PatchSummary) -> list[Finding]:
    protected_modules = protected_module_names(objective.protected_paths, protected_files)
    sensitive = protected_modules | imports | STDLIB_MODULES | STARTUP_HOOKS
    roots = import_roots(objective.protected_paths, protected_files)
    shadowing: set[str] = set()
    for path in _readings(summary.created):
        name = module_name(path)
        if path.endswith(STARTUP_SUFFIXES) or name in STARTUP_HOOKS or name in protected_modules:
            shadowing.add(path)
        elif name in sensitive and import_root(path) in roots:
            shadowing.add(path)
    findings: list[Finding] = []
    if shadowing:
        modules = sorted({module_name(path) or path for path in shadowing})
        findings.append(("R2", {"reason": "the patch creates modules that shadow protected ones", "paths": sorted(shadowing), "modules": modules}))
    changed_imports = sorted(
        path for path in _readings(summary.touched) - _readings(summary.created)
        if module_name(path) in imports and import_root(path) in roots and not is_protected(objective.protected_paths, path)
    )
    if changed_imports:
        findings.append(("R2", {"reason": "the patch changes a module the evaluation imports", "paths": changed_imports}))
    return findings


def _tampering_code(objective: Objective, protected_files: dict[str, str], summary: PatchSummary) -> list[Finding]:
    """Added code that names the evaluation's files, writes protected data, or outlives the run."""
    protected = sorted(set(protected_files) | {normalise_path(p) for p in objective.protected_paths if is_code(p)})
    code_files = [path for path in protected if is_code(path)]
    data_files = [path for path in protected if not is_code(path)]
    naming_code = [(path, line) for path, line in summary.added_lines() if any(names_file(line, target) for target in code_files)]
    writing_data = [
        (path, line) for path, line in summary.added_lines()
        if WRITE_MARKERS.search(code_part(line)) and any(names_file(line, target) for target in data_files)
    ]
    escaping = [(path, line) for path, line in summary.added_lines() if PROCESS_ESCAPE.search(code_part(line))]
    findings: list[Finding] = []
    if naming_code:
        findings.append(("R2", {"reason": "the patch's code names a protected evaluation file", "lines": _excerpt(naming_code)}))
    if escaping:
        findings.append(("R2", {"reason": "the patch starts processes that outlive the run and could act after its checks", "lines": _excerpt(escaping)}))
    if writing_data:
        findings.append(("R6", {"reason": "the patch's code writes protected data", "lines": _excerpt(writing_data)}))
    return findings


def _test_label_reads(objective: Objective, summary: PatchSummary) -> list[Finding]:
    labels = objective.test_labels
    if labels is None:
        return []
    column = re.compile(re.escape(labels.column) if len(labels.column) >= 3 else rf"[\"']{re.escape(labels.column)}[\"']")
    reads = [(path, line) for path, line in summary.added_lines() if names_file(line, labels.path) and column.search(code_part(line))]
    if not reads:
        return []
    return [("R5", {"reason": "the patch reads the test labels outside the evaluation", "test_labels": labels.model_dump(), "lines": _excerpt(reads)})]


def _suspicious_literals(summary: PatchSummary) -> list[Finding]:
    findings: list[Finding] = []
    if summary.binary:
        findings.append(("R3", {"reason": "the patch adds binary content the audit cannot read", "paths": sorted(map(display_path, summary.binary))}))
    dense = sorted(
        path for path, lines in summary.added.items()
        if any(densest >= NUMBERS_PER_LINE or total >= NUMBERS_PER_BLOCK for densest, total in numeric_blocks(lines))
    )
    if dense:
        findings.append(("R3", {"reason": "the patch adds long runs of numeric literals (hard-coded predictions or scores?)", "paths": dense}))
    opaque = [
        (path, line) for path, line in summary.added_lines()
        if any(OPAQUE.search(literal) or DIGITS.search(literal) for literal in string_literals(line)) or DIGITS.search(code_part(line))
    ]
    if opaque:
        findings.append(("R3", {"reason": "the patch adds long opaque literals (encoded predictions or hashes?)", "lines": _excerpt(opaque)}))
    pinned = [(path, line) for path, line in summary.added_lines() if PINNED_SEED.search(code_part(line))]
    if pinned:
        findings.append(("R3", {"reason": "the patch pins a random seed, so fresh-seed re-runs could not measure seed noise", "lines": _excerpt(pinned)}))
    return findings


def _rule_violations_in_patch(objective: Objective, summary: PatchSummary) -> list[Finding]:
    rules = objective.rules
    if rules is None:
        return []
    findings: list[Finding] = []
    forbidden = sorted(path for path in _readings(summary.touched) if is_protected(rules.forbidden_files, path))
    if forbidden:
        findings.append(("R7", {"reason": "the patch touches files the paper's rules fix", "paths": forbidden, "forbidden_files": rules.forbidden_files}))
    for pattern in rules.forbidden_patterns:
        try:
            compiled = re.compile(pattern)
        except re.error:
            continue  # a malformed rule is the objective's problem; it cannot be enforced here
        matches = [(path, line) for path, line in summary.added_lines() if compiled.search(line)]
        if matches:
            findings.append(("R7", {"reason": "the patch's code matches a pattern the paper's rules forbid", "pattern": pattern, "lines": _excerpt(matches)}))
    return findings


def param_findings(objective: Objective, params: dict[str, Any]) -> list[Finding]:
    """The search space (R1) and the paper's parameter rules (R7)."""
    findings: list[Finding] = []
    unknown = sorted(key for key in params if key not in objective.search_space)
    inadmissible = {
        key: value
        for key, value in sorted(params.items())
        if key in objective.search_space and not objective.search_space[key].admits(value)
    }
    if unknown or inadmissible:
        findings.append(("R1-search-space", {"unknown_keys": unknown, "inadmissible": inadmissible}))
    rules = objective.rules
    if rules is not None:
        broken: dict[str, Any] = {}
        for key, value in sorted(params.items()):
            number = value if isinstance(value, int | float) and not isinstance(value, bool) else None
            if key in rules.forbidden_params:
                broken[key] = {"value": value, "rule": "forbidden"}
            elif number is not None and key in rules.max_params and number > rules.max_params[key]:
                broken[key] = {"value": value, "max": rules.max_params[key]}
            elif number is not None and key in rules.min_params and number < rules.min_params[key]:
                broken[key] = {"value": value, "min": rules.min_params[key]}
        if broken:
            findings.append(("R7", {"reason": "the parameters break the paper's rules", "params": broken}))
    return findings


# ---------------------------------------------------------------- ideas


def audit_idea(objective: Objective, protected_files: dict[str, str], idea: Idea, imports: Iterable[str] = ()) -> Verdict:
    """(cleared, rule, evidence) for one proposed idea: the first red line it crosses, and any others."""
    findings = param_findings(objective, idea.params)
    if idea.patch and not objective.evaluate_command.strip():
        # the training script prints the metrics itself: changed code could print any number
        findings.append(("R2", {"reason": "a code change needs an evaluation command of its own; this paper's training prints its metrics, so only parameters may change"}))
    elif idea.patch:
        findings += patch_findings(objective, protected_files, imports, idea.patch)
    if not findings:
        return CLEARED
    rule, evidence = findings[0]
    others = [{"rule": other_rule, "reason": other.get("reason", other_rule)} for other_rule, other in findings[1:]]
    return False, rule, {**evidence, "also": others} if others else evidence


def decide_ideas(state: SupervisorState, proposed: IdeasProposed) -> list[Event]:
    outputs: list[Event] = []
    seen = state.ideas_cleared | set(state.ideas_rejected)
    for idea in proposed.ideas:
        if idea.idea_id in seen:
            continue
        seen.add(idea.idea_id)
        if state.objective is None:
            cleared, rule, evidence = False, "objective-unknown", {"reason": "no objective has been set"}
        else:
            cleared, rule, evidence = audit_idea(state.objective, state.protected_files or {}, idea, state.evaluation_imports)
        if cleared:
            outputs.append(IdeaCleared(campaign=proposed.campaign, idea=idea))
        else:
            outputs.append(IdeaRejected(campaign=proposed.campaign, idea=idea, rule=rule, evidence=evidence))
    return outputs


# ---------------------------------------------------------------- results


def protection_violations(
    protected_entries: list[str], protected_files: dict[str, str], reported: dict[str, str | None]
) -> list[dict[str, str | None]]:
    """Protected files missing, changed, or added after a run, with expected and actual hashes."""
    expected = {normalise_path(path): digest for path, digest in protected_files.items()}
    actual = {
        normalise_path(path): digest
        for path, digest in reported.items()
        if digest is not None and is_protected(protected_entries, path)
    }
    return [
        {"path": path, "expected": expected.get(path), "actual": actual.get(path)}
        for path in sorted(expected.keys() | actual.keys())
        if expected.get(path) != actual.get(path)
    ]


def planted_modules(objective: Objective, protected_files: dict[str, str], created: dict[str, str]) -> list[str]:
    """Files a run created that Python would import: on the evaluation's import path, or start-up hooks anywhere."""
    roots = import_roots(objective.protected_paths, protected_files)
    return sorted(
        path for path in created
        if path.endswith(STARTUP_SUFFIXES) or module_name(path) in STARTUP_HOOKS
        or (module_name(path) is not None and import_root(path) in roots)
    )


def violation_rule(violations: list[dict[str, str | None]], guards: Iterable[str] = ()) -> str:
    """R2 when evaluation code changed or a shadowing module appeared, R6 when only data changed."""
    guarded = list(guards)
    code = [v for v in violations if is_code(str(v["path"])) or is_protected(guarded, str(v["path"]))]
    return "R2" if code or not violations else "R6"


def secondary_worsenings(
    objective: Objective, values: dict[str, float], reference: dict[str, float]
) -> list[dict[str, float | str]]:
    """Secondary metrics worse than the reference by more than their tolerance, in the primary's direction."""
    worse: list[dict[str, float | str]] = []
    for metric, tolerance in sorted(objective.secondary_metrics.items()):
        if metric not in values or metric not in reference:
            continue
        worsening = -objective.gain(values[metric], reference[metric])
        allowed = tolerance * abs(reference[metric])
        if worsening > allowed:
            worse.append(
                {"metric": metric, "value": values[metric], "reference": reference[metric],
                 "tolerance": tolerance, "worsening": worsening, "allowed": allowed}
            )
    return worse


def check_result(
    objective: Objective,
    protected_files: dict[str, str],
    job: JobCompleted,
    *,
    purpose: Purpose,
    idea_id: str | None,
    baseline_means: dict[str, float] | None,
    guards: list[str] | None = None,
    canary: bool = False,
) -> ResultValidated | ResultRejected:
    """Judge one completed experiment: protected files (R2/R6), the frozen command (R1), the metric list, and (ideas only) R4.

    A canary run's test-label file is expected to hash as the runner permuted it, nothing else.
    """

    def rejected(rule: str, evidence: dict[str, Any]) -> ResultRejected:
        return ResultRejected(
            campaign=job.campaign, experiment_id=job.experiment_id, purpose=purpose, idea_id=idea_id, rule=rule, evidence=evidence
        )

    expected = dict(protected_files)
    if canary and objective.test_labels is not None:
        if job.canary_sha256 is None:
            return rejected("R5", {"reason": "a canary run came back without its permuted test labels", "test_labels": objective.test_labels.model_dump()})
        expected[normalise_path(objective.test_labels.path)] = job.canary_sha256
    entries = [*objective.protected_paths, *(guards or [])]
    violations = protection_violations(entries, expected, job.protected_hashes)
    if violations:
        return rejected(violation_rule(violations, guards or []), {"violations": violations})
    if job.changed_symbols:
        return rejected("R2", {"reason": "the run changed protected code", "symbols": dict(sorted(job.changed_symbols.items()))})
    planted = planted_modules(objective, protected_files, job.created_files)
    if planted:
        return rejected("R2", {"reason": "the run left modules where the evaluation would import them", "paths": planted,
                               "created_files": {path: job.created_files[path] for path in planted}})
    if job.evaluate_command.strip() != objective.evaluate_command.strip():
        return rejected("R1", {"expected": objective.evaluate_command, "actual": job.evaluate_command})
    missing = [name for name in objective.metric_names if not math.isfinite(job.metrics.get(name, math.nan))]
    if missing:
        return rejected("metrics-missing", {"missing": missing, "reported": sorted(job.metrics)})
    if purpose == "idea" and baseline_means and objective.primary_metric in baseline_means:
        primary = objective.primary_metric
        if objective.better(job.metrics[primary], baseline_means[primary]):
            worse = secondary_worsenings(objective, job.metrics, baseline_means)
            if worse:
                return rejected(
                    "R4",
                    {"primary": {"metric": primary, "value": job.metrics[primary], "baseline_mean": baseline_means[primary]},
                     "violations": worse},
                )
    return ResultValidated(
        campaign=job.campaign, experiment_id=job.experiment_id, purpose=purpose, idea_id=idea_id, metrics=dict(job.metrics)
    )


def baseline_means(state: SupervisorState) -> dict[str, float] | None:
    """Per-metric mean of the validated baseline runs (the reproduced baseline)."""
    runs = [result.metrics for result in state.validated.values() if result.purpose == "baseline"]
    if not runs:
        return None
    names = set.intersection(*(set(metrics) for metrics in runs))
    return {name: mean([metrics[name] for metrics in runs]) for name in sorted(names)}


def state_guards(state: SupervisorState) -> list[str]:
    """The guards recorded with the protection (computed again only for a record that predates them)."""
    if state.shadow_guards or state.objective is None or state.protected_files is None:
        return list(state.shadow_guards)
    return shadow_guards(state.objective, state.protected_files, state.evaluation_imports)


def decide_result(state: SupervisorState, job: JobCompleted) -> list[Event]:
    """Validate or reject a completed job once, then see whether a verification round is complete."""
    if job.experiment_id in state.validated or job.experiment_id in state.rejected:
        return []
    record = state.dispatched.get(job.experiment_id)
    purpose: Purpose = record.purpose if record else job.purpose
    idea_id = record.idea_id if record else None
    result: ResultValidated | ResultRejected
    if state.objective is None or state.protected_files is None:
        result = ResultRejected(
            campaign=job.campaign, experiment_id=job.experiment_id, purpose=purpose, idea_id=idea_id, rule="R2",
            evidence={"reason": "no protected-file baseline was established before this result"},
        )
    else:
        result = check_result(
            state.objective, state.protected_files, job, purpose=purpose, idea_id=idea_id, baseline_means=baseline_means(state),
            guards=state_guards(state), canary=bool(record and record.canary),
        )
    after = fold(copy.deepcopy(state), result)
    return [result, *decide_verdict(after, job.campaign)]


# The sandbox keeps protected paths read-only; a run that tried to write one fails with these.
REFUSED_PYTHON = re.compile(r"\[Errno (?:1|13|30)\] [^:'\"\n]*: ['\"]([^'\"\n]+)['\"](?: -> ['\"]([^'\"\n]+)['\"])?")
REFUSED_SHELL = re.compile(r"cannot [a-z ]+?['\"\u2018]?([^'\"\u2019:\n]+)['\"\u2019]?: (?:Read-only file system|Permission denied|Operation not permitted)")


def refused_paths(output: str) -> list[str]:
    """Paths the run was refused write access to, as its error messages print them."""
    found: list[str] = []
    for match in REFUSED_PYTHON.finditer(output):
        found += [path for path in match.groups() if path]
    found += [match.group(1).strip() for match in REFUSED_SHELL.finditer(output)]
    return list(dict.fromkeys(found))


def _workspace_relative(path: str, job: JobFailed) -> str | None:
    marker = f"/{job.campaign}-{job.experiment_id}/"
    cleaned = path.replace("\\", "/")
    if marker in cleaned:
        return normalise_path(cleaned.split(marker, 1)[1])
    return None if cleaned.startswith("/") else normalise_path(cleaned)


def tampering_failure(objective: Objective, protected_files: dict[str, str], job: JobFailed, purpose: Purpose, idea_id: str | None) -> ResultRejected | None:
    """A run that failed because it tried to change a protected file broke R2 (code) or R6 (data), refused or not."""
    if job.stage not in ("train", "evaluate"):
        return None
    touched: set[str] = set()
    for path in refused_paths(job.output_tail):
        relative = _workspace_relative(path, job)
        if relative is not None and is_protected(objective.protected_paths, relative):
            touched.add(relative)
        else:
            touched.update(name for name in protected_files if path.replace("\\", "/").endswith("/" + name))
    if not touched:
        return None
    lines = [line.strip()[:200] for line in job.output_tail.splitlines() if any(path in line for path in refused_paths(line))]
    rule = "R2" if any(is_code(path) for path in touched) else "R6"
    return ResultRejected(
        campaign=job.campaign, experiment_id=job.experiment_id, purpose=purpose, idea_id=idea_id, rule=rule,
        evidence={"reason": "the run tried to change protected files; the sandbox refused", "stage": job.stage,
                  "paths": sorted(touched), "lines": lines[:EVIDENCE_LINES]},
    )


def decide_failure(state: SupervisorState, job: JobFailed) -> list[Event]:
    """A failed run that tried to tamper is rejected under its rule; then see whether a verification round is decided."""
    outputs: list[Event] = []
    if job.experiment_id not in state.rejected and state.objective is not None and state.protected_files is not None:
        record = state.dispatched.get(job.experiment_id)
        rejection = tampering_failure(
            state.objective, state.protected_files, job, record.purpose if record else job.purpose, record.idea_id if record else None
        )
        if rejection is not None:
            outputs.append(rejection)
            state = fold(copy.deepcopy(state), rejection)
    return [*outputs, *decide_verdict(state, job.campaign)]


# ---------------------------------------------------------------- verification


def verification_experiments(attempt: int, seeds: int) -> list[tuple[Arm, int, str]]:
    """(arm, seed, experiment_id) of every seed run of a verification round, in a fixed order."""
    return [
        (arm, 1000 * attempt + index, f"verify-{attempt}-{arm}-s{1000 * attempt + index}")
        for arm in ARMS
        for index in range(seeds)
    ]


def canary_experiments(objective: Objective, attempt: int) -> list[tuple[Arm, int, str]]:
    """(arm, seed, experiment_id) of the leakage-canary runs: one per arm, where the test labels are known."""
    if objective.test_labels is None:
        return []
    return [(arm, 1000 * attempt, f"verify-{attempt}-{arm}-canary") for arm in ARMS]


def plan_verification(state: SupervisorState, nominated: CandidateNominated) -> tuple[list[Event], list[WorkItem]]:
    """The dispatch events and work items of a candidate's verification round (nothing if already planned)."""
    experiments = verification_experiments(nominated.attempt, state.budget.verification_seeds)
    if any(experiment_id in state.dispatched for _, _, experiment_id in experiments):
        return [], []
    objective, environment_bin, snapshot = state.objective, state.environment_bin, state.snapshot_sha256
    if objective is None or environment_bin is None or snapshot is None:
        needed = {"objective": objective, "environment": environment_bin, "snapshot": snapshot}
        missing = ", ".join(name for name, value in needed.items() if value is None)
        reason = f"cannot re-run the candidate without: {missing}"
        return [_refutation(nominated.campaign, nominated.idea_id, objective, [], [], "verification-impossible", reason)], []
    baseline_params = state.baseline_params if state.baseline_params is not None else objective.baseline_params
    # Verification runs also report any module that appeared where the evaluation would import it.
    protected_paths = [*objective.protected_locations, *state_guards(state)]
    planned = [(arm, seed, experiment_id, False) for arm, seed, experiment_id in experiments]
    planned += [(arm, seed, experiment_id, True) for arm, seed, experiment_id in canary_experiments(objective, nominated.attempt)]
    events: list[Event] = []
    items: list[WorkItem] = []
    for arm, seed, experiment_id, canary in planned:
        candidate = arm == "candidate"
        labels = objective.test_labels
        events.append(
            VerificationDispatched(
                campaign=nominated.campaign, experiment_id=experiment_id, idea_id=nominated.idea_id, arm=arm, seed=seed, canary=canary
            )
        )
        items.append(
            WorkItem(
                campaign=nominated.campaign,
                experiment_id=experiment_id,
                purpose="verification",
                dispatcher=DISPATCHER,
                snapshot_sha256=snapshot,
                params=dict(nominated.params if candidate else baseline_params),
                seed=seed,
                patch=nominated.patch if candidate else None,
                train_command=objective.train_command,
                evaluate_command=objective.evaluate_command,
                environment_bin=environment_bin,
                protected_paths=protected_paths,
                protected_symbols=dict(state.protected_symbols),
                timeout_seconds=objective.timeout_seconds,
                pool=state.pool,
                canary=LabelCanary(path=labels.path, column=labels.column, seed=seed + CANARY_SEED_OFFSET) if canary and labels else None,
                metrics=objective.metrics,
                applications=objective.applications,
                seed_application=objective.seed,
            )
        )
    return events, items


def decide_verdict(state: SupervisorState, campaign: str) -> list[Event]:
    """Certify or refute the current candidate once its round is complete, or as soon as a run fails."""
    round_ = state.verification
    if round_ is None or round_.decided or state.objective is None:
        return []
    objective = state.objective
    experiments = verification_experiments(round_.attempt, round_.seeds)
    canaries = canary_experiments(objective, round_.attempt)
    values: dict[Arm, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    for arm, _, experiment_id in experiments:
        if experiment_id in state.validated:
            values[arm].append(state.validated[experiment_id].metrics)
    primary = objective.primary_metric
    candidate_values = [metrics[primary] for metrics in values["candidate"]]
    baseline_values = [metrics[primary] for metrics in values["baseline"]]
    for _, _, experiment_id in [*experiments, *canaries]:
        if experiment_id in state.rejected:
            rejection = state.rejected[experiment_id]
            return [_refutation(campaign, round_.idea_id, objective, candidate_values, baseline_values, rejection.rule,
                                f"verification run {experiment_id} was rejected under {rejection.rule}: {rejection.evidence}",
                                {"experiment_id": experiment_id, **rejection.evidence})]
        if experiment_id in state.failed and experiment_id not in state.validated:
            return [_refutation(campaign, round_.idea_id, objective, candidate_values, baseline_values, "verification-failed",
                                f"verification run {experiment_id} failed: {state.failed[experiment_id]}",
                                {"experiment_id": experiment_id, "reason": state.failed[experiment_id]})]
    if any(experiment_id not in state.validated for _, _, experiment_id in [*experiments, *canaries]):
        return []
    canary_runs = {arm: state.validated[experiment_id].metrics for arm, _, experiment_id in canaries} if canaries else None
    return [judge_verification(campaign, objective, round_, values["candidate"], values["baseline"], canary_runs)]


def seed_sensitivity(candidate_values: list[float], baseline_values: list[float]) -> dict[str, Any]:
    """R3: a candidate whose score ignores fresh seeds, while the paper's own method does not, reproduces a fixed answer."""
    candidate_fixed = len(set(candidate_values)) == 1
    # Only a baseline that differs on every seed shows the method's score depends on its seed.
    baseline_seeded = len(baseline_values) >= 2 and len(set(baseline_values)) == len(baseline_values)
    return {
        "candidate_distinct_values": len(set(candidate_values)),
        "baseline_distinct_values": len(set(baseline_values)),
        "passed": not (candidate_fixed and baseline_seeded),
    }


def leakage_canary(objective: Objective, candidate_mean: float, canary_runs: dict[Arm, dict[str, float]]) -> dict[str, Any]:
    """R5: with the test labels shuffled an honest model falls to the label-free level; one that saw them keeps its score.

    retained is the share of the candidate's advantage over the baseline's shuffled-label score
    that survives the shuffle: about 0 for an honest model, about 1 for one fitted to the labels.
    """
    primary = objective.primary_metric
    shuffled_candidate = canary_runs["candidate"][primary]
    shuffled_baseline = canary_runs["baseline"][primary]
    advantage = objective.gain(candidate_mean, shuffled_baseline)
    retained = objective.gain(shuffled_candidate, shuffled_baseline) / advantage if advantage > 0 else None
    return {
        "metric": primary,
        "candidate_mean": candidate_mean,
        "shuffled_candidate": shuffled_candidate,
        "shuffled_baseline": shuffled_baseline,
        "retained": retained,
        "limit": CANARY_RETAINED_LIMIT,
        "test_labels": objective.test_labels.model_dump() if objective.test_labels else None,
        "passed": retained is None or retained <= CANARY_RETAINED_LIMIT,
    }


def judge_verification(
    campaign: str,
    objective: Objective,
    round_: VerificationRound,
    candidate_runs: list[dict[str, float]],
    baseline_runs: list[dict[str, float]],
    canary_runs: dict[Arm, dict[str, float]] | None = None,
) -> SotaCertified | SotaRefuted:
    """The leakage canary (R5), seed sensitivity (R3), a one-sided Welch t-test, then R4, in that order."""
    primary = objective.primary_metric
    candidate_values = [metrics[primary] for metrics in candidate_runs]
    baseline_values = [metrics[primary] for metrics in baseline_runs]
    # Minimising is maximising the negation, so one test "first > second" serves both directions.
    sign = 1.0 if objective.direction == "maximize" else -1.0
    test = welch_one_sided([sign * value for value in candidate_values], [sign * value for value in baseline_values])
    candidate_mean, baseline_mean = mean(candidate_values), mean(baseline_values)
    statistic = _json_safe(test.statistic)
    welch = {"test": TEST_NAME, "statistic": statistic, "df": test.df, "p_value": test.p_value, "alpha": ALPHA,
             "candidate_mean": candidate_mean, "baseline_mean": baseline_mean}

    def refuted(rule: str, reason: str, evidence: dict[str, Any]) -> SotaRefuted:
        return SotaRefuted(
            campaign=campaign, idea_id=round_.idea_id, metric=primary, candidate_values=candidate_values,
            baseline_values=baseline_values, rule=rule, reason=reason, test=TEST_NAME, statistic=statistic,
            p_value=test.p_value, alpha=ALPHA, evidence=evidence,
        )

    summary = (
        f"{primary}: candidate mean {candidate_mean:.6g} vs baseline mean {baseline_mean:.6g} "
        f"({objective.direction}), Welch t={test.statistic:.4g}, df={test.df:.3g}, one-sided p={test.p_value:.4g}, alpha={ALPHA}"
    )
    canary = leakage_canary(objective, candidate_mean, canary_runs) if canary_runs else None
    if canary is not None and not canary["passed"]:
        return refuted(
            "R5",
            f"leakage canary: with the test labels shuffled the candidate still scores {canary['shuffled_candidate']:.6g} "
            f"(baseline {canary['shuffled_baseline']:.6g}), keeping {canary['retained']:.0%} of its advantage; it has seen the test labels",
            {"check": "leakage-canary", **canary, "welch": welch},
        )
    seeds = seed_sensitivity(candidate_values, baseline_values)
    if not seeds["passed"]:
        return refuted(
            "R3",
            f"the candidate scores {candidate_values[0]:.6g} whatever its seed while the baseline varies: "
            f"a hard-coded or seed-pinned result, not a reproduction; {summary}",
            {"check": "seed-sensitivity", **seeds, "welch": welch},
        )
    if not (objective.better(candidate_mean, baseline_mean) and test.p_value < ALPHA):
        return refuted("seed-noise", f"improvement not beyond seed noise: {summary}", {"check": "welch", **welch})
    secondary_names = sorted(objective.secondary_metrics)
    secondary_means = {
        "candidate": {name: mean([metrics[name] for metrics in candidate_runs]) for name in secondary_names},
        "baseline": {name: mean([metrics[name] for metrics in baseline_runs]) for name in secondary_names},
    }
    worse = secondary_worsenings(objective, secondary_means["candidate"], secondary_means["baseline"])
    if worse:
        described = "; ".join(
            f"{item['metric']} {item['value']:.6g} vs {item['reference']:.6g} "
            f"(worse by {item['worsening']:.4g}, allowed {item['allowed']:.4g})"
            for item in worse
        )
        return refuted("R4", f"primary gain costs secondary metrics beyond tolerance: {described}; {summary}",
                       {"check": "secondary-metrics", "violations": worse, "welch": welch})
    checks: dict[str, Any] = {"seed_sensitivity": seeds}
    if canary is not None:
        checks["leakage_canary"] = canary
    return SotaCertified(
        campaign=campaign,
        idea_id=round_.idea_id,
        params=round_.params,
        patch=round_.patch,
        metric=primary,
        candidate_values=candidate_values,
        baseline_values=baseline_values,
        candidate_mean=candidate_mean,
        baseline_mean=baseline_mean,
        gain_vs_reproduced=objective.gain(candidate_mean, baseline_mean),
        gain_vs_reported=objective.gain(candidate_mean, objective.reported_value),
        reported_value=objective.reported_value,
        test=TEST_NAME,
        statistic=statistic,
        p_value=test.p_value,
        alpha=ALPHA,
        secondary_means=secondary_means,
        checks=checks,
    )


def _refutation(
    campaign: str,
    idea_id: str,
    objective: Objective | None,
    candidate_values: list[float],
    baseline_values: list[float],
    rule: str,
    reason: str,
    evidence: dict[str, Any] | None = None,
) -> SotaRefuted:
    # No test was run: the statistic is neutral and p is 1 (nothing shown).
    return SotaRefuted(
        campaign=campaign,
        idea_id=idea_id,
        metric=objective.primary_metric if objective else "",
        candidate_values=candidate_values,
        baseline_values=baseline_values,
        rule=rule,
        reason=reason[:2000],
        test=TEST_NAME,
        statistic=0.0,
        p_value=1.0,
        alpha=ALPHA,
        evidence=evidence or {},
    )


def _json_safe(value: float) -> float:
    # JSON carries no infinity; an exact (zero-variance) win is reported as the largest float.
    return math.copysign(sys.float_info.max, value) if math.isinf(value) else value

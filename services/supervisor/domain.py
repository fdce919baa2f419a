"""What the supervisor decides: the red lines of a campaign, enforced by code.

It owns the protected-file baseline (R2), the audit of every proposed idea (search space, patches
touching the evaluation protocol), the check of every completed experiment (R1, R2, metrics, R4),
and the verification round that certifies or refutes a nominated candidate against a fresh
baseline re-run with a one-sided Welch t-test.
"""

from __future__ import annotations

import ast
import copy
import math
import posixpath
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from services.supervisor.statistics import mean, welch_one_sided
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
SYMLINK_MODE = "120000"
NULL_PATH = "/dev/null"
# Python imports any of these as a module named after the file's first dotted part.
MODULE_SUFFIXES = (".py", ".pyw", ".pyc", ".pyd", ".so")
PACKAGE_MARKERS = frozenset({"__init__.py", "__init__.pyc"})
HUNK_MARKERS = frozenset({" ", "", "-", "+", "\\"})

Verdict = tuple[bool, str, dict[str, Any]]
CLEARED: Verdict = (True, "", {})


# ---------------------------------------------------------------- state


@dataclass
class DispatchRecord:
    purpose: Purpose
    idea_id: str | None
    arm: Arm | None = None
    seed: int | None = None


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
    elif isinstance(event, ExperimentDispatched):
        state.dispatched[event.experiment_id] = DispatchRecord(event.purpose, event.idea_id, seed=event.seed)
    elif isinstance(event, VerificationDispatched):
        state.dispatched[event.experiment_id] = DispatchRecord("verification", event.idea_id, event.arm, event.seed)
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


# ---------------------------------------------------------------- paths


def normalise_path(path: str) -> str:
    """A relative posix path without '.', '..' or trailing slashes ('.' is the root itself)."""
    return posixpath.normpath(path.strip().replace("\\", "/").lstrip("/") or ".")


def escapes_workspace(path: str) -> bool:
    """Absolute paths and any '..' component: an honest patch against the snapshot needs neither."""
    cleaned = path.strip().replace("\\", "/")
    return cleaned.startswith("/") or ".." in cleaned.split("/")


def covers(protected_entry: str, path: str) -> bool:
    """True when path is the protected entry or lies under it (a folder entry covers its files)."""
    entry, target = normalise_path(protected_entry), normalise_path(path)
    return entry == "." or target == entry or target.startswith(entry + "/")


def is_protected(protected_entries: Iterable[str], path: str) -> bool:
    return any(covers(entry, path) for entry in protected_entries)


def protected_snapshot_files(files: dict[str, str], protected_entries: list[str]) -> dict[str, str]:
    """Every snapshot file under a protected path, with the hash it must keep."""
    return {path: digest for path, digest in sorted(files.items()) if is_protected(protected_entries, path)}


def decide_protection(state: SupervisorState, campaign: str) -> list[Event]:
    if state.protected_files is not None or state.snapshot_files is None or state.objective is None:
        return []
    protected = protected_snapshot_files(state.snapshot_files, state.objective.protected_paths)
    return [ProtectionEstablished(campaign=campaign, protected_files=protected)]


def module_name(path: str) -> str | None:
    """The top-level name under which Python would import this file, if it is importable."""
    parts = normalise_path(path).split("/")
    if parts[-1] in PACKAGE_MARKERS:
        return parts[-2] if len(parts) > 1 else None
    if parts[-1].endswith(MODULE_SUFFIXES):
        return parts[-1].split(".", 1)[0] or None
    return None


def protected_module_names(protected_entries: list[str], protected_files: dict[str, str]) -> set[str]:
    """Modules (and the packages holding them) that the evaluation protocol may import."""
    names: set[str] = set()
    for path in [*protected_entries, *protected_files]:
        name = module_name(path)
        if name is None:
            continue
        names.add(name)
        names.update(part for part in normalise_path(path).split("/")[:-1] if part.isidentifier())
    return names


# ---------------------------------------------------------------- patches


@dataclass
class PatchSummary:
    """The file operations a unified diff announces in its headers."""

    touched: set[str] = field(default_factory=set)
    created: set[str] = field(default_factory=set)
    symlinks: set[str] = field(default_factory=set)


def _header_path(text: str) -> str:
    """The path of a ---/+++ style header: unquoted, without a trailing timestamp."""
    text = text.strip()
    if text.startswith('"'):
        closing = text.find('"', 1)
        while closing > 0 and text[closing - 1] == "\\":
            closing = text.find('"', closing + 1)
        quoted = text[: closing + 1] if closing > 0 else text + '"'
        try:
            return ast.literal_eval("b" + quoted).decode("utf-8", "replace")
        except (SyntaxError, ValueError):
            return quoted.strip('"')
    return text.split("\t", 1)[0].rstrip()


def _git_header_paths(rest: str) -> list[str]:
    """Both paths of 'diff --git A B'; when spaces make it ambiguous, prefer the split where A equals B."""
    rest = rest.strip()
    if rest.startswith('"'):
        first = _header_path(rest)
        closing = rest.find('"', 1)
        return [first, _header_path(rest[closing + 1 :])] if closing > 0 else [first]
    splits = [index for index, character in enumerate(rest) if character == " "]
    for index in splits:
        left, right = rest[:index], rest[index + 1 :]
        if _strip_prefix(left, "a/") == _strip_prefix(right, "b/"):
            return [left, right]
    return [rest[: splits[0]], rest[splits[0] + 1 :]] if splits else [rest]


def _strip_prefix(path: str, prefix: str) -> str:
    return path[len(prefix) :] if path.startswith(prefix) else path


def _hunk_lengths(header: str) -> tuple[int, int]:
    """Old and new line counts from '@@ -l[,s] +l[,s] @@'."""
    ranges = header.split("@@")[1].split() if header.count("@@") >= 2 else []
    lengths = []
    for sign in "-+":
        spec = next((r[1:] for r in ranges if r.startswith(sign)), "0")
        count = spec.split(",", 1)[1] if "," in spec else "1"
        lengths.append(int(count) if count.isdigit() else 0)
    return lengths[0], lengths[1]


def parse_patch(patch: str) -> PatchSummary:
    """Read the file headers of a unified (or git) diff; hunk bodies are skipped by their counts."""
    summary = PatchSummary()
    section_new: str | None = None
    previous_old: str | None = None
    old_left = new_left = 0
    for line in patch.splitlines():
        marker = line[:1]
        if (old_left > 0 or new_left > 0) and marker in HUNK_MARKERS:
            if marker in (" ", ""):
                old_left, new_left = old_left - 1, new_left - 1
            elif marker == "-":
                old_left -= 1
            elif marker == "+":
                new_left -= 1
            continue
        # Any other line ends a hunk early, so no header can hide behind an inflated line count.
        old_left = new_left = 0
        if line.startswith("diff --git "):
            paths = _git_header_paths(line[len("diff --git ") :])
            summary.touched.update(paths)
            section_new, previous_old = paths[-1], None
        elif line.startswith("--- "):
            previous_old = _header_path(line[4:])
            if previous_old != NULL_PATH:
                summary.touched.add(previous_old)
        elif line.startswith("+++ "):
            new_path = _header_path(line[4:])
            if new_path != NULL_PATH:
                summary.touched.add(new_path)
                if previous_old == NULL_PATH:
                    summary.created.add(new_path)
            section_new = new_path
        elif line.startswith("rename from "):
            # Renaming a protected file away deletes it (a copy's source is only read).
            summary.touched.add(_header_path(line[len("rename from ") :]))
        elif line.startswith(("rename to ", "copy to ")):
            destination = _header_path(line.split(" to ", 1)[1])
            summary.touched.add(destination)
            summary.created.add(destination)
        elif line.startswith("new file mode "):
            if section_new is not None:
                summary.created.add(section_new)
                if line.split()[-1] == SYMLINK_MODE:
                    summary.symlinks.add(section_new)
        elif line.startswith("new mode "):
            if line.split()[-1] == SYMLINK_MODE and section_new is not None:
                summary.symlinks.add(section_new)
        elif line.startswith("@@"):
            old_left, new_left = _hunk_lengths(line)
    return summary


def path_readings(path: str) -> set[str]:
    """Where a header path may land: as written (-p0) and without its first component (-p1)."""
    normal = normalise_path(path)
    readings = {normal}
    if "/" in normal:
        readings.add(normal.split("/", 1)[1])
    return readings


def audit_patch(objective: Objective, protected_files: dict[str, str], patch: str) -> Verdict:
    """R2 at the idea stage: a patch may not reach the evaluation protocol, directly or by shadowing."""
    summary = parse_patch(patch)
    if not summary.touched:
        return False, "patch-malformed", {"reason": "the patch names no file"}
    if summary.symlinks:
        return False, "R2", {"reason": "the patch creates a symbolic link", "paths": sorted(summary.symlinks)}
    escaping = sorted(path for path in summary.touched if escapes_workspace(path))
    if escaping:
        return False, "R2", {"reason": "the patch reaches outside the workspace", "paths": escaping}
    entries = [*objective.protected_paths, *protected_files]
    hits = sorted({reading for path in summary.touched for reading in path_readings(path) if is_protected(entries, reading)})
    if hits:
        return False, "R2", {
            "reason": "the patch touches protected paths",
            "paths": hits,
            "protected_paths": objective.protected_paths,
        }
    protected_modules = protected_module_names(objective.protected_paths, protected_files)
    shadowing = sorted(path for path in summary.created if module_name(path) in protected_modules)
    if shadowing:
        return False, "R2", {
            "reason": "the patch creates modules that shadow protected ones",
            "paths": shadowing,
            "modules": sorted({module_name(path) for path in shadowing if module_name(path)}),
        }
    return CLEARED


# ---------------------------------------------------------------- ideas


def audit_idea(objective: Objective, protected_files: dict[str, str], idea: Idea) -> Verdict:
    """(cleared, rule, evidence) for one proposed idea."""
    if idea.kind == "PARAM":
        unknown = sorted(key for key in idea.params if key not in objective.search_space)
        inadmissible = {
            key: value
            for key, value in sorted(idea.params.items())
            if key in objective.search_space and not objective.search_space[key].admits(value)
        }
        if unknown or inadmissible:
            return False, "R1-search-space", {"unknown_keys": unknown, "inadmissible": inadmissible}
    if idea.patch:
        return audit_patch(objective, protected_files, idea.patch)
    return CLEARED


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
            cleared, rule, evidence = audit_idea(state.objective, state.protected_files or {}, idea)
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
) -> ResultValidated | ResultRejected:
    """Judge one completed experiment against R2, R1, the metric list, and (ideas only) R4."""

    def rejected(rule: str, evidence: dict[str, Any]) -> ResultRejected:
        return ResultRejected(
            campaign=job.campaign, experiment_id=job.experiment_id, purpose=purpose, idea_id=idea_id, rule=rule, evidence=evidence
        )

    violations = protection_violations(objective.protected_paths, protected_files, job.protected_hashes)
    if violations:
        return rejected("R2", {"violations": violations})
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
            state.objective, state.protected_files, job, purpose=purpose, idea_id=idea_id, baseline_means=baseline_means(state)
        )
    after = fold(copy.deepcopy(state), result)
    return [result, *decide_verdict(after, job.campaign)]


# ---------------------------------------------------------------- verification


def verification_experiments(attempt: int, seeds: int) -> list[tuple[Arm, int, str]]:
    """(arm, seed, experiment_id) of every run of a verification round, in a fixed order."""
    return [
        (arm, 1000 * attempt + index, f"verify-{attempt}-{arm}-s{1000 * attempt + index}")
        for arm in ARMS
        for index in range(seeds)
    ]


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
    events: list[Event] = []
    items: list[WorkItem] = []
    for arm, seed, experiment_id in experiments:
        candidate = arm == "candidate"
        events.append(
            VerificationDispatched(
                campaign=nominated.campaign, experiment_id=experiment_id, idea_id=nominated.idea_id, arm=arm, seed=seed
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
                protected_paths=list(objective.protected_paths),
                timeout_seconds=objective.timeout_seconds,
                pool=state.pool,
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
    values: dict[Arm, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    for arm, _, experiment_id in experiments:
        if experiment_id in state.validated:
            values[arm].append(state.validated[experiment_id].metrics)
    primary = objective.primary_metric
    candidate_values = [metrics[primary] for metrics in values["candidate"]]
    baseline_values = [metrics[primary] for metrics in values["baseline"]]
    for _, _, experiment_id in experiments:
        if experiment_id in state.rejected:
            rejection = state.rejected[experiment_id]
            return [_refutation(campaign, round_.idea_id, objective, candidate_values, baseline_values, rejection.rule,
                                f"verification run {experiment_id} was rejected under {rejection.rule}: {rejection.evidence}")]
        if experiment_id in state.failed and experiment_id not in state.validated:
            return [_refutation(campaign, round_.idea_id, objective, candidate_values, baseline_values, "verification-failed",
                                f"verification run {experiment_id} failed: {state.failed[experiment_id]}")]
    if any(experiment_id not in state.validated for _, _, experiment_id in experiments):
        return []
    return [judge_verification(campaign, objective, round_, values["candidate"], values["baseline"])]


def judge_verification(
    campaign: str,
    objective: Objective,
    round_: VerificationRound,
    candidate_runs: list[dict[str, float]],
    baseline_runs: list[dict[str, float]],
) -> SotaCertified | SotaRefuted:
    """One-sided Welch t-test of candidate over baseline in the objective's direction, then R4."""
    primary = objective.primary_metric
    candidate_values = [metrics[primary] for metrics in candidate_runs]
    baseline_values = [metrics[primary] for metrics in baseline_runs]
    # Minimising is maximising the negation, so one test "first > second" serves both directions.
    sign = 1.0 if objective.direction == "maximize" else -1.0
    test = welch_one_sided([sign * value for value in candidate_values], [sign * value for value in baseline_values])
    candidate_mean, baseline_mean = mean(candidate_values), mean(baseline_values)
    statistic = _json_safe(test.statistic)

    def refuted(rule: str, reason: str) -> SotaRefuted:
        return SotaRefuted(
            campaign=campaign, idea_id=round_.idea_id, metric=primary, candidate_values=candidate_values,
            baseline_values=baseline_values, rule=rule, reason=reason, test=TEST_NAME, statistic=statistic,
            p_value=test.p_value, alpha=ALPHA,
        )

    summary = (
        f"{primary}: candidate mean {candidate_mean:.6g} vs baseline mean {baseline_mean:.6g} "
        f"({objective.direction}), Welch t={test.statistic:.4g}, df={test.df:.3g}, one-sided p={test.p_value:.4g}, alpha={ALPHA}"
    )
    if not (objective.better(candidate_mean, baseline_mean) and test.p_value < ALPHA):
        return refuted("seed-noise", f"improvement not beyond seed noise: {summary}")
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
        return refuted("R4", f"primary gain costs secondary metrics beyond tolerance: {described}; {summary}")
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
    )


def _refutation(
    campaign: str,
    idea_id: str,
    objective: Objective | None,
    candidate_values: list[float],
    baseline_values: list[float],
    rule: str,
    reason: str,
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
    )


def _json_safe(value: float) -> float:
    # JSON carries no infinity; an exact (zero-variance) win is reported as the largest float.
    return math.copysign(sys.float_info.max, value) if math.isinf(value) else value

"""How a repair changes an environment's specification: its requirements, its code, its time.

Pure functions. A specification is the paper's requirements plus the repairs applied so far, in
order. Package repairs rewrite the requirement list (a stale pin that does not resolve is relaxed:
dropped, or turned into the lower bound the repair names); code repairs (a forced CPU device, a
relinked data path, a smaller batch) rewrite the paper's unprotected source files and travel as
one patch; a time repair multiplies the time limit. Equal specifications have equal keys, so an
environment is built once and found again by its key.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import posixpath
import re
from collections.abc import Iterable

from packaging.requirements import InvalidRequirement, Requirement

PACKAGE_ACTIONS = frozenset({"install_package", "pin_requirement", "relax_requirement"})
SOURCE_ACTIONS = frozenset({"force_cpu", "relink_path", "reduce_batch_size"})
TIME_ACTIONS = frozenset({"extend_timeout"})
REWRITABLE_SUFFIXES = (".py", ".yaml", ".yml", ".json", ".cfg", ".ini")
TASK_CARD = "autosota.toml"
MAX_TIMEOUT_FACTOR = 16.0

Repair = tuple[str, str]  # (action, argument)

_STRING = re.compile(r"""(?P<quote>['"])(?P<text>[^'"\n]*)(?P=quote)""")
_CUDA_LITERAL = re.compile(r"""(['"])cuda(?::\d+)?\1""")
_CUDA_CALL = re.compile(r"\.cuda\(\s*\)")
_BATCH = re.compile(r"""(?P<name>['"]?\b[A-Za-z_]*batch(?:_?size)?\b['"]?\s*[:=]\s*)(?P<value>\d+)\b""", re.IGNORECASE)


class RepairNotApplicable(ValueError):
    """The repair finds nothing to change in this paper."""


def parse_repair(text: str) -> Repair:
    action, _, argument = text.partition(" ")
    return action, argument


def describe(repair: Repair) -> str:
    return f"{repair[0]} {repair[1]}"


def _name(requirement: str) -> str | None:
    try:
        return Requirement(requirement).name.lower().replace("_", "-")
    except InvalidRequirement:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
        return match.group(1).lower().replace("_", "-") if match else None


def _bounded(requirement: str) -> bool:
    try:
        return bool(Requirement(requirement).specifier)
    except InvalidRequirement:
        return False


def effective_requirements(base: Iterable[str], repairs: Iterable[Repair]) -> list[str]:
    """The requirement list after the package repairs, in order (a later one wins).

    `relax_requirement numpy` drops the pin of numpy; `relax_requirement numpy>=1.21` replaces it with that bound.
    """
    requirements = [line.strip() for line in base if line.strip()]
    for action, argument in repairs:
        if action not in PACKAGE_ACTIONS:
            continue
        name = _name(argument)
        if action == "relax_requirement":
            relaxed = argument.strip() if _bounded(argument) else name or argument
            requirements = [relaxed if _name(line) == name else line for line in requirements]
            continue
        kept = [line for line in requirements if _name(line) != name]
        requirements = [*kept, argument]
    return requirements


def timeout_factor(repairs: Iterable[Repair]) -> float:
    factor = 1.0
    for action, argument in repairs:
        if action in TIME_ACTIONS:
            try:
                factor *= max(1.0, float(argument))
            except ValueError:
                continue
    return min(factor, MAX_TIMEOUT_FACTOR)


def environment_key(requirements: Iterable[str], repairs: Iterable[Repair], snapshot_sha256: str, interpreter: str) -> str:
    """The key an environment is cached by: everything that makes it what it is."""
    changes = [list(r) for r in repairs if r[0] not in PACKAGE_ACTIONS]
    spec = {
        "interpreter": interpreter,
        "requirements": sorted(requirements),
        "changes": changes,
        "snapshot": snapshot_sha256 if any(r[0] in SOURCE_ACTIONS for r in changes) else None,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _protected(path: str, protected: Iterable[str]) -> bool:
    for entry in protected:
        entry = entry.rstrip("/")
        if path == entry or path.startswith(entry + "/"):
            return True
    return False


def rewritable(files: Iterable[str], protected: Iterable[str]) -> list[str]:
    """The files a code repair may change: source and configuration outside the protected paths."""
    guarded = list(protected)
    return sorted(p for p in files if p.endswith(REWRITABLE_SUFFIXES) and posixpath.basename(p) != TASK_CARD and not _protected(p, guarded))


def rewrite_sources(sources: dict[str, str], repairs: Iterable[Repair]) -> dict[str, str]:
    """The sources after every code repair; raises RepairNotApplicable when one changes nothing."""
    current = dict(sources)
    for action, argument in repairs:
        if action not in SOURCE_ACTIONS:
            continue
        rewrite = {"force_cpu": _force_cpu, "relink_path": _relink, "reduce_batch_size": _smaller_batch}[action]
        changed = {path: new for path, text in current.items() if (new := rewrite(text, argument)) != text}
        if not changed:
            raise RepairNotApplicable(f"{action} {argument} finds nothing to change in the paper's code")
        current.update(changed)
    return current


def source_patch(before: dict[str, str], after: dict[str, str]) -> str:
    """A unified diff (git apply accepts it) from the original sources to the rewritten ones."""
    chunks: list[str] = []
    for path in sorted(after):
        if after[path] == before.get(path):
            continue
        diff = difflib.unified_diff(before[path].splitlines(keepends=True), after[path].splitlines(keepends=True), f"a/{path}", f"b/{path}")
        chunks.append("".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in diff))
    return "".join(chunks)


def _force_cpu(text: str, argument: str) -> str:
    text = _CUDA_LITERAL.sub(lambda m: f"{m.group(1)}cpu{m.group(1)}", text)
    return _CUDA_CALL.sub(".cpu()", text)


def _relink(text: str, argument: str) -> str:
    """Replace the string literal the missing path was built from with the snapshot's path."""
    missing, _, found = argument.partition("=")
    if not missing or not found:
        return text

    def swap(match: re.Match[str]) -> str:
        literal = match.group("text")
        if len(literal) < 2 or not missing.startswith(literal):
            return match.group(0)
        rest = missing[len(literal):]
        if rest and not rest.startswith("/") and not literal.endswith("/"):
            return match.group(0)
        if not found.endswith(rest.lstrip("/")):
            return match.group(0)
        replacement = found[: len(found) - len(rest.lstrip("/"))].rstrip("/") or "."
        return f"{match.group('quote')}{replacement}{match.group('quote')}"

    return _STRING.sub(swap, text)


def _smaller_batch(text: str, argument: str) -> str:
    divisor = max(2, int(argument)) if argument.isdigit() else 2
    return _BATCH.sub(lambda m: f"{m.group('name')}{max(1, int(m.group('value')) // divisor)}", text)

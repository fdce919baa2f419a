"""What a resolution decides: the key of a resolved environment, what an installer's refusal means,
and which local builds a pool prefers.

Pure functions. An environment is cached by the hash of its pinned requirement list, the Python it
is built on and the variant of the pool it serves, so equal resolutions share one environment.
When uv cannot resolve or build a requirement, its message is read into the requirements at
fault, and summed up in one last line worded as pip words it ("No matching distribution found
for numpy==0.0.1", "Cannot install a==1 and b==2 because these package versions have
conflicting dependencies"): that line is the failure's signature, and the fix service's rules
and failure memory already know those words. On a CPU pool, a local CPU build of torch (or
torchvision, torchaudio) that the paper's pins admit is preferred to the index's default build,
which is a CUDA build of several GB.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import Version

TORCH_FAMILY = frozenset({"torch", "torchvision", "torchaudio"})
CPU_VARIANT = "cpu"
ACCELERATOR_VARIANT = "accelerator"

_NO_SOLUTION = re.compile(r"No solution found when resolving dependencies")
_NO_VERSION = re.compile(r"there is no version of (\S+?)(?=\s+and\b|,|\s*$)", re.MULTILINE)
_NOT_FOUND = re.compile(r"(\S+) was not found in the (?:package registry|provided package locations)[^\n]*?you require (\S+?)(?=\s+and\b|,|\s*$)", re.MULTILINE)
_NO_WHEELS = re.compile(r"(\S+) has no wheels with a matching (Python (?:ABI|version|implementation) tag|platform tag)")
_WRONG_PYTHON = re.compile(r"the (?:current|requested) Python version \(([^)]+)\) does not satisfy (\S+) and (\S+) depends on")
_NO_BUILD = re.compile(r"Failed to (?:download and )?build `([^`]+)`")
_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!*]+)")


@dataclass(frozen=True)
class Unresolvable:
    """A requirement the installer refused, and why, in a few words."""

    requirement: str
    why: str


def variant_of(pool: str) -> str:
    """The build variant a pool needs: CPU builds for a CPU pool, the index's default builds elsewhere."""
    return CPU_VARIANT if pool.lower().startswith("cpu") else ACCELERATOR_VARIANT


def cache_key(pinned: Iterable[str], python: str, variant: str, resolved: bool = True) -> str:
    """The key an environment is cached by on this machine: what is installed, on which Python, for which pool."""
    spec = {"pinned" if resolved else "unresolved": sorted(line.strip() for line in pinned if line.strip()), "python": python, "variant": variant}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def pinned_lines(compiled: str) -> list[str]:
    """The requirement lines of a compiled requirements file, without comments and options."""
    lines = (line.split(" #", 1)[0].strip() for line in compiled.splitlines())
    return [line for line in lines if line and not line.startswith(("#", "-"))]


def refusals(output: str) -> list[Unresolvable]:
    """The requirements uv could not resolve or build, most specific first."""
    found: list[Unresolvable] = []
    found += [Unresolvable(m.group(1), "there is no such version") for m in _NO_VERSION.finditer(output)]
    found += [Unresolvable(m.group(2), "there is no such package") for m in _NOT_FOUND.finditer(output)]
    found += [Unresolvable(m.group(1), f"it has no wheel with a matching {m.group(2)} for this Python") for m in _NO_WHEELS.finditer(output)]
    found += [Unresolvable(m.group(3), f"it needs Python {m.group(2).removeprefix('Python')}, this is {m.group(1)}") for m in _WRONG_PYTHON.finditer(output)]
    found += [Unresolvable(m.group(1), "it does not build for this Python") for m in _NO_BUILD.finditer(output)]
    unique: dict[str, Unresolvable] = {}
    for refusal in found:
        unique.setdefault(refusal.requirement, refusal)
    return list(unique.values())


def is_package_failure(output: str) -> bool:
    """Whether uv failed because of the requirements themselves (another installer would fail too)."""
    return bool(_NO_SOLUTION.search(output) or refusals(output))


def summary(output: str) -> str:
    """One line saying which requirements cannot be installed, in pip's words; empty when uv's message names none."""
    refused = refusals(output)
    if refused:
        first = refused[0]
        return f"No matching distribution found for {first.requirement} ({first.why})"
    if _NO_SOLUTION.search(output):
        pins = list(dict.fromkeys(f"{name}=={version}" for name, version in _PIN.findall(output)))
        if pins:
            return f"Cannot install {' and '.join(pins)} because these package versions have conflicting dependencies"
        return "ResolutionImpossible: the requirements have no solution"
    return ""


def preferred_cpu_builds(requirements: Iterable[str], wheel_files: Iterable[str], supported: Iterable[Tag]) -> list[str]:
    """Constraints pinning the newest local CPU build of each torch package the requirements admit.

    torch is preferred whenever any package of its family is named, since those pull it in.
    """
    named: dict[str, list[Requirement]] = {}
    for line in requirements:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.marker is None or requirement.marker.evaluate():
            named.setdefault(canonicalize_name(requirement.name), []).append(requirement)
    if not TORCH_FAMILY & set(named):
        return []
    tags = set(supported)
    builds: dict[str, list[Version]] = {}
    for filename in wheel_files:
        try:
            name, version, _, wheel_tags = parse_wheel_filename(filename)
        except InvalidWheelFilename:
            continue
        if name in TORCH_FAMILY and "cpu" in (version.local or "") and wheel_tags & tags:
            builds.setdefault(name, []).append(version)
    constraints = []
    for name, versions in sorted(builds.items()):
        if name not in named and name != "torch":
            continue
        admitted = [v for v in versions if all(r.specifier.contains(v, prereleases=True) for r in named.get(name, []))]
        if admitted:
            constraints.append(f"{name}=={max(admitted)}")
    return constraints

"""Rule-based repairs, tried before the brain: each failure kind maps to ranked candidate repairs.

Pure functions of the failure (its signature and output tail) and what fix knows of the paper
(its requirements and snapshot files). Covered: a version conflict the installer cannot
resolve (relax the pin), a removed API (pin the package below the release that removed it), a
hard-coded CUDA device without a GPU (force the CPU), a missing data path that the snapshot
holds elsewhere (relink it), an out-of-memory (a smaller batch), and a time limit (more time).
A missing module is left to the brain's table of module names.
"""

from __future__ import annotations

import posixpath
import re
from packaging.requirements import InvalidRequirement, Requirement

from services.fix.domain import PaperFacts, Repair

# Attributes a release removed: (module, attribute) -> requirement that still has them.
REMOVED_ATTRIBUTES: dict[tuple[str, str], str] = {
    **{("numpy", name): "numpy<1.24" for name in ("float", "int", "bool", "object", "complex", "str", "long", "unicode")},
    **{
        ("numpy", name): "numpy<2"
        for name in (
            "NaN", "NAN", "Inf", "Infinity", "NINF", "PINF", "NZERO", "PZERO", "infty", "float_", "complex_", "string_",
            "unicode_", "product", "cumproduct", "sometrue", "alltrue", "round_", "asfarray", "find_common_type",
            "msort", "set_string_function", "mat", "issubclass_", "cast", "source", "lookfor", "who", "safe_eval",
            "deprecate", "disp", "byte_bounds", "compare_chararrays", "format_parser", "recfromcsv", "recfromtxt",
        )
    },
    ("pandas", "append"): "pandas<2",
    ("pandas", "iteritems"): "pandas<2",
    ("pandas", "swaplevel"): "pandas<2",
}
# Names a release removed from a module: (module, name) -> requirement that still has them.
REMOVED_IMPORTS: dict[tuple[str, str], str] = {
    ("scipy.misc", "imread"): "scipy<1.2",
    ("scipy.misc", "imresize"): "scipy<1.3",
    ("sklearn.metrics", "plot_confusion_matrix"): "scikit-learn<1.2",
    ("sklearn.metrics", "plot_roc_curve"): "scikit-learn<1.2",
    ("sklearn.datasets", "load_boston"): "scikit-learn<1.2",
    ("torch._six", "string_classes"): "torch<2",
    ("collections", "Mapping"): "python<3.10",
}
_REMOVED_IN_RELEASE = re.compile(r"`?np\.(\w+)`? was removed in the NumPy (\d+)\.\d+ release")
_NO_ATTRIBUTE = re.compile(r"(?:module '([\w.]+)'|'(DataFrame|Series)' object) has no attribute '(\w+)'")
_CANNOT_IMPORT = re.compile(r"cannot import name '(\w+)' from '([\w.]+)'")
_NO_DISTRIBUTION = re.compile(r"(?:No matching distribution found for|Could not find a version that satisfies the requirement) ([A-Za-z0-9][A-Za-z0-9._-]*)\s*([<>=!~][^\s(;]*)?")
_CONFLICT = re.compile(r"Cannot install ([^\n]+?) because these package versions have conflicting dependencies")
_CONFLICT_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*[\w.]+")
_NO_GPU = re.compile(
    r"Torch not compiled with CUDA enabled|Found no NVIDIA driver|No CUDA GPUs are available|no CUDA-capable device|"
    r"CUDA driver initialization failed|CUDA is not available|Attempting to deserialize object on a CUDA device",
    re.IGNORECASE,
)
_MISSING_FILE = re.compile(r"No such file or directory: '([^'\n]+)'")
_OUT_OF_MEMORY = re.compile(r"MemoryError|Unable to allocate|out of memory|OutOfMemoryError|Cannot allocate memory", re.IGNORECASE)
_TIME_LIMIT = re.compile(r"\[killed after the [\d.]+ s time limit\]$")


def candidates(signature: str, error_tail: str, facts: PaperFacts) -> list[Repair]:
    """Ranked repairs for this failure, most specific first; empty when no rule applies."""
    text = f"{error_tail}\n{signature}"
    found: list[Repair] = _time_limit(signature, error_tail)
    for rule in (_version_conflict, _removed_api, _no_gpu, _missing_path, _out_of_memory):
        found.extend(rule(text, facts))
    unique: list[Repair] = []
    for repair in found:
        if repair not in unique:
            unique.append(repair)
    return unique


def applicable(repair: Repair, signature: str, error_tail: str, facts: PaperFacts) -> bool:
    """Whether a repair remembered for this signature fits this failure too (paths differ per paper)."""
    if repair.action != "relink_path":
        return True
    return repair in _missing_path(f"{error_tail}\n{signature}", facts)


def _time_limit(signature: str, error_tail: str) -> list[Repair]:
    """The sandbox's kill note ends the output of a command stopped at its time limit."""
    if _TIME_LIMIT.search(error_tail.rstrip()) or signature == "[killed after the <n> s time limit]":
        return [Repair("extend_timeout", "2"), Repair("extend_timeout", "4")]
    return []


def _pinned(facts: PaperFacts) -> dict[str, str]:
    pinned: dict[str, str] = {}
    for line in facts.requirements:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.specifier:
            pinned[requirement.name.lower().replace("_", "-")] = line
    return pinned


def _version_conflict(text: str, facts: PaperFacts) -> list[Repair]:
    pinned = _pinned(facts)
    names: list[str] = []
    for match in _NO_DISTRIBUTION.finditer(text):
        names.append(match.group(1).lower().replace("_", "-"))
    for match in _CONFLICT.finditer(text):
        names.extend(pin.lower().replace("_", "-") for pin in _CONFLICT_PIN.findall(match.group(1)))
    if "ResolutionImpossible" in text and not names:
        names.extend(pinned)
    return [Repair("relax_requirement", name) for name in dict.fromkeys(names) if name in pinned]


def _removed_api(text: str, facts: PaperFacts) -> list[Repair]:
    found: list[Repair] = []
    for match in _REMOVED_IN_RELEASE.finditer(text):
        found.append(Repair("pin_requirement", f"numpy<{match.group(2)}"))
    for match in _NO_ATTRIBUTE.finditer(text):
        module = match.group(1) or "pandas"
        top = module.split(".")[0]
        pin = REMOVED_ATTRIBUTES.get((top, match.group(3)))
        if pin:
            found.append(Repair("pin_requirement", pin))
    for match in _CANNOT_IMPORT.finditer(text):
        pin = REMOVED_IMPORTS.get((match.group(2), match.group(1)))
        if pin and not pin.startswith("python"):
            found.append(Repair("pin_requirement", pin))
    return found


def _no_gpu(text: str, facts: PaperFacts) -> list[Repair]:
    return [Repair("force_cpu", "cuda")] if _NO_GPU.search(text) else []


def _missing_path(text: str, facts: PaperFacts) -> list[Repair]:
    """A path the code opens that is not there, while the snapshot holds a file of that name."""
    found: list[Repair] = []
    for missing in dict.fromkeys(_MISSING_FILE.findall(text)):
        name = posixpath.basename(missing.rstrip("/"))
        if not name or "<" in missing:
            continue
        holders = sorted((p for p in facts.files if posixpath.basename(p) == name), key=lambda p: (-_shared_suffix(p, missing), len(p), p))
        if holders and missing.removeprefix("./") != holders[0]:
            found.append(Repair("relink_path", f"{missing}={holders[0]}"))
    return found


def _shared_suffix(path: str, other: str) -> int:
    count = 0
    for a, b in zip(reversed(path.split("/")), reversed(other.split("/")), strict=False):
        if a != b:
            break
        count += 1
    return count


def _out_of_memory(text: str, facts: PaperFacts) -> list[Repair]:
    return [Repair("reduce_batch_size", "2"), Repair("reduce_batch_size", "4")] if _OUT_OF_MEMORY.search(text) else []

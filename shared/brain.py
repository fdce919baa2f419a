"""How agents decide: the brain interface, its request types, and the deterministic no-model brain.

The no-model brain proposes parameter ideas with Optuna's TPE sampler, seeded from the campaign
and round so the same history always gives the same ideas, and repairs environments from a
rule table. `failure_signature` turns an error tail into the key that failures are grouped by.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal, NamedTuple, Protocol

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from pydantic import BaseModel, ConfigDict

from shared.contracts import Idea, Objective, ParameterSpec

optuna.logging.set_verbosity(optuna.logging.WARNING)

STARTUP_TRIALS = 4
DUPLICATE_RETRIES = 32

# ---------------------------------------------------------------- requests and answers


class PastTrial(NamedTuple):
    """One point already tried: its parameters, its primary value when scored, and its status."""

    params: dict[str, Any]
    value: float | None
    status: str  # "baseline", "validated", "rejected", "failed", "pending"


class IdeationRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    campaign: str
    round: int
    count: int
    objective: Objective
    history: list[PastTrial] = []


class RepairRequest(BaseModel):
    model_config = ConfigDict(frozen=True)

    signature: str
    error_tail: str = ""


class RepairSuggestion(BaseModel):
    model_config = ConfigDict(frozen=True)

    action: Literal["install_package"]
    argument: str
    rationale: str = ""


class Brain(Protocol):
    name: str

    def propose_ideas(self, request: IdeationRequest) -> list[Idea]: ...

    def propose_repair(self, failure: RepairRequest) -> RepairSuggestion | None: ...


# ---------------------------------------------------------------- failure signatures

_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Warning|Failure)\b")
_MISSING_MODULE = re.compile(r"No module named ['\"]?([A-Za-z_][\w.]*)['\"]?")
_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b")
_PATH = re.compile(r"(?:[A-Za-z]:|~|\.{1,2})?(?:[\w.@+-]*[/\\])+[\w.@+-]*")
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w])")
_SPACES = re.compile(r"\s+")
SIGNATURE_MAX_CHARS = 300


def failure_signature(text: str) -> str:
    """A stable key for a failure: its last exception line with run-specific details removed."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return "no output"
    line = next((line for line in reversed(lines) if _EXCEPTION_LINE.match(line)), lines[-1])
    missing = _MISSING_MODULE.search(line)
    if missing:
        # The module name is what tells one missing-module failure from another.
        return f"{_normalise(line[: missing.start()])} No module named '{missing.group(1)}'".strip()
    return _normalise(line)


def _normalise(line: str) -> str:
    line = _QUOTED.sub("<q>", line)
    line = _HEX.sub("<addr>", line)
    line = _PATH.sub("<path>", line)
    line = _NUMBER.sub("<n>", line)
    return _SPACES.sub(" ", line).strip()[:SIGNATURE_MAX_CHARS]


# ---------------------------------------------------------------- repair rules

# Import names whose distribution on the package index is named differently.
MODULE_PACKAGES: dict[str, str] = {
    "sklearn": "scikit-learn",
    "skimage": "scikit-image",
    "yaml": "PyYAML",
    "cv2": "opencv-python",
    "PIL": "Pillow",
    "bs4": "beautifulsoup4",
    "dateutil": "python-dateutil",
    "dotenv": "python-dotenv",
    "attr": "attrs",
    "Crypto": "pycryptodome",
    "OpenSSL": "pyOpenSSL",
    "jwt": "PyJWT",
    "serial": "pyserial",
    "usb": "pyusb",
    "zmq": "pyzmq",
    "magic": "python-magic",
    "docx": "python-docx",
    "pptx": "python-pptx",
    "fitz": "PyMuPDF",
    "git": "GitPython",
    "Bio": "biopython",
    "umap": "umap-learn",
    "faiss": "faiss-cpu",
    "MySQLdb": "mysqlclient",
    "psycopg2": "psycopg2-binary",
    "pkg_resources": "setuptools",
    "mpl_toolkits": "matplotlib",
    "google.protobuf": "protobuf",
    "websocket": "websocket-client",
    "slugify": "python-slugify",
    "multipart": "python-multipart",
    "jose": "python-jose",
    "gi": "PyGObject",
    "win32api": "pywin32",
    "Levenshtein": "python-Levenshtein",
}
_PACKAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def package_for_module(module: str) -> str:
    """The package that provides an importable module, by the table or by its top-level name."""
    parts = module.split(".")
    for depth in range(len(parts), 0, -1):
        known = MODULE_PACKAGES.get(".".join(parts[:depth]))
        if known:
            return known
    return parts[0]


def rule_based_repair(failure: RepairRequest) -> RepairSuggestion | None:
    for text in (failure.signature, failure.error_tail):
        matches = _MISSING_MODULE.findall(text)
        if matches:
            module = matches[-1]
            package = package_for_module(module)
            if _PACKAGE_NAME.match(package):
                return RepairSuggestion(
                    action="install_package",
                    argument=package,
                    rationale=f"module {module!r} is missing; package {package!r} provides it",
                )
    return None


# ---------------------------------------------------------------- parameter ideas


def sampler_seed(campaign: str, round_: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{campaign}:{round_}".encode()).digest()[:4], "big")


def distribution_for(spec: ParameterSpec) -> BaseDistribution | None:
    """The Optuna distribution of a parameter, or None when the spec cannot describe one."""
    try:
        if spec.type == "categorical":
            return CategoricalDistribution(list(spec.choices or [])) if spec.choices else None
        if spec.low is None or spec.high is None:
            return None
        if spec.type == "int":
            return IntDistribution(int(spec.low), int(spec.high), log=spec.log)
        return FloatDistribution(float(spec.low), float(spec.high), log=spec.log)
    except (ValueError, TypeError):
        return None


def _fill(params: dict[str, Any], space: dict[str, BaseDistribution], objective: Objective) -> dict[str, Any] | None:
    """The trial's params over the whole space (baseline where unspecified), None if any is outside it."""
    filled: dict[str, Any] = {}
    for name, distribution in space.items():
        value = params.get(name, objective.search_space[name].baseline)
        if isinstance(distribution, IntDistribution) and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not objective.search_space[name].admits(value):
            return None
        filled[name] = value
    return filled


def _key(params: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((name, repr(value)) for name, value in params.items()))


class NoModelBrain:
    """Optuna TPE for parameter ideas, a rule table for repairs; no model, fully deterministic."""

    name = "no-model"

    def propose_ideas(self, request: IdeationRequest) -> list[Idea]:
        objective = request.objective
        space = {name: d for name, spec in objective.search_space.items() if (d := distribution_for(spec)) is not None}
        if not space or request.count <= 0:
            return []
        seed = sampler_seed(request.campaign, request.round)
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS, multivariate=True)
        study = optuna.create_study(direction=objective.direction, sampler=sampler)
        tried: set[tuple[tuple[str, str], ...]] = set()
        scored = unscored = 0
        for past in request.history:
            params = _fill(past.params, space, objective)
            if params is None:
                continue
            tried.add(_key(params))
            if past.value is not None:
                study.add_trial(optuna.trial.create_trial(params=params, distributions=space, value=past.value))
                scored += 1
            else:
                # RUNNING trials sit in TPE's worse group (constant liar): neither repeated nor approached.
                study.add_trial(optuna.trial.create_trial(state=TrialState.RUNNING, params=params, distributions=space))
                unscored += 1
        mode = "TPE" if scored >= STARTUP_TRIALS else f"random start-up (TPE after {STARTUP_TRIALS} scored trials)"
        best = f", best so far {study.best_value:g}" if scored else ""
        rationale = (
            f"Optuna TPESampler(multivariate, seed {seed}), {mode}: informed by {scored} scored and "
            f"{unscored} unscored (pending, failed or rejected) trials{best}; {objective.direction} "
            f"{objective.primary_metric}"
        )
        ideas: list[Idea] = []
        for k in range(request.count):
            params = self._ask_untried(study, space, tried)
            if params is None:
                break
            tried.add(_key(params))
            ideas.append(Idea(idea_id=f"r{request.round}-{k}", kind="PARAM", params=params, rationale=rationale))
        return ideas

    @staticmethod
    def _ask_untried(study: optuna.Study, space: dict[str, BaseDistribution], tried: set[tuple[tuple[str, str], ...]]) -> dict[str, Any] | None:
        for _ in range(DUPLICATE_RETRIES):
            trial = study.ask(space)
            if _key(trial.params) not in tried:
                # Left RUNNING so the next ask of this batch steers away from it.
                return dict(trial.params)
            study.tell(trial, state=TrialState.FAIL)
        return None

    def propose_repair(self, failure: RepairRequest) -> RepairSuggestion | None:
        return rule_based_repair(failure)

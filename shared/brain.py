"""How agents decide: the brain interface, its request types, and the deterministic no-model brain.

The no-model brain proposes parameter ideas with Optuna's TPE sampler, seeded from the campaign
and round so the same history always gives the same ideas, and repairs environments from a
rule table. `failure_signature` turns an error tail into the key that failures are grouped by.

A brain with a model (shared.brains) answers the `think_*` questions with a `Thought`: the answer,
every model call it made as a `ModelCalled` event, and the fallback it took, if any. The agent
commits those events together with the decision the answer informed, so a replay can answer
from the record instead of the model.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, NamedTuple, Protocol, TypeVar

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState
from pydantic import BaseModel, ConfigDict, Field

from shared.contracts import BrainFellBack, BrainSelected, Event, Idea, IdeaBase, ModelCalled, Objective, ParameterSpec

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


class CodeIdeationRequest(BaseModel):
    """What a model needs to propose structural ideas: the goal, the code to change, the history."""

    model_config = ConfigDict(frozen=True)

    campaign: str
    round: int
    count: int
    objective: Objective
    base: IdeaBase | None = None
    files: dict[str, str] = Field(default_factory=dict, description="editable files of the base code: path -> text")
    read_only: dict[str, str] = Field(default_factory=dict, description="protected files shown for reference")
    history: list[str] = Field(default_factory=list, description="one line per idea tried, with its outcome")


class CodeIdea(BaseModel):
    """A structural idea as a model answers it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["CODE", "ALGO"]
    title: str
    rationale: str
    expected_effect: str
    risk: Literal["low", "medium", "high"]
    diff: str = Field(description="unified diff against the code shown, paths relative to the paper folder")


class CodeIdeas(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ideas: list[CodeIdea]


class ObjectiveReadingRequest(BaseModel):
    """The paper's documents and the task card's known fields; the model fills in the missing ones."""

    model_config = ConfigDict(frozen=True)

    campaign: str
    files: list[str]
    documents: dict[str, str] = Field(description="path -> text of the paper text and README files")
    known: dict[str, Any] = Field(default_factory=dict, description="fields the task card already gives")
    missing: list[str] = Field(default_factory=list)


class SecondaryMetric(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    tolerance: float = Field(description="tolerated relative worsening, 0.05 = 5%")


class ObjectiveReading(BaseModel):
    """The rubric as a model reads it from the paper, with the sentence the reported number comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str
    method: str
    primary_metric: str
    direction: Literal["minimize", "maximize"]
    reported_value: float
    reported_quote: str = Field(description="the sentence or table row of the paper that states reported_value")
    train_command: str
    evaluate_command: str
    protected_paths: list[str]
    secondary_metrics: list[SecondaryMetric]


# ---------------------------------------------------------------- thoughts: answers with their record

T = TypeVar("T")


@dataclass(frozen=True)
class CallScope:
    """Who asks, about which decision, and what the campaign's model calls have used so far."""

    agent: str
    campaign: str
    scope: str
    tokens_used: int = 0
    cost_used: float = 0.0


@dataclass(frozen=True)
class Fallback:
    """Why the no-model brain answered instead of the model; permanent ones stop further calls."""

    kind: str
    reason: str
    permanent: bool


@dataclass(frozen=True)
class Thought(Generic[T]):
    answer: T
    brain: str
    calls: tuple[ModelCalled, ...] = ()
    fallback: Fallback | None = None

    def events(self, scope: CallScope, purpose: str) -> list[Event]:
        """The record to commit with the decision: every call, then the fallback if one was taken."""
        recorded: list[Event] = list(self.calls)
        if self.fallback is not None:
            recorded.append(
                BrainFellBack(
                    campaign=scope.campaign,
                    agent=scope.agent,
                    purpose=purpose,
                    kind=self.fallback.kind,
                    reason=self.fallback.reason,
                    permanent=self.fallback.permanent,
                )
            )
        return recorded


@dataclass
class ModelLedger:
    """Tokens and money a campaign's model calls have used, each recorded call counted once."""

    tokens: int = 0
    cost: float = 0.0
    counted: set[str] = field(default_factory=set)

    def add(self, event: ModelCalled) -> None:
        if event.event_id is not None:
            # A service folds its own calls when it commits them and again when they come back on the bus.
            if str(event.event_id) in self.counted:
                return
            self.counted.add(str(event.event_id))
        self.tokens += event.prompt_tokens + event.completion_tokens
        self.cost += event.cost

    def scope(self, agent: str, campaign: str, scope: str) -> CallScope:
        return CallScope(agent=agent, campaign=campaign, scope=scope, tokens_used=self.tokens, cost_used=self.cost)


class Brain(Protocol):
    name: str

    def propose_ideas(self, request: IdeationRequest) -> list[Idea]: ...

    def propose_repair(self, failure: RepairRequest) -> RepairSuggestion | None: ...


class ThinkingBrain(Brain, Protocol):
    """A brain that may consult a model; every answer comes with the record of how it was reached."""

    uses_model: bool

    def selected(self, agent: str, campaign: str) -> BrainSelected: ...

    def unavailable(self, scope: CallScope) -> Fallback | None: ...

    def think_code_ideas(self, request: CodeIdeationRequest, scope: CallScope) -> Thought[list[CodeIdea]]: ...

    def think_code_revision(self, request: CodeIdeationRequest, idea: CodeIdea, error: str, scope: CallScope) -> Thought[CodeIdea | None]: ...

    def think_repair(self, failure: RepairRequest, scope: CallScope) -> Thought[RepairSuggestion | None]: ...

    def think_objective(self, request: ObjectiveReadingRequest, scope: CallScope) -> Thought[ObjectiveReading | None]: ...


def uses_model(brain: object) -> bool:
    return bool(getattr(brain, "uses_model", False))


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
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("[output truncated")]
    if not lines:
        return "no output"
    if lines[-1].startswith("[killed after"):
        return _normalise(lines[-1])  # the sandbox's time-limit note says more than any warning above it
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
    uses_model = False

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

    # The questions only a model can answer get an empty answer, with no call made.

    def unavailable(self, scope: CallScope) -> Fallback | None:
        return Fallback("no-model", "no model is configured", permanent=True)

    def think_code_ideas(self, request: CodeIdeationRequest, scope: CallScope) -> Thought[list[CodeIdea]]:
        return Thought([], self.name)

    def think_code_revision(self, request: CodeIdeationRequest, idea: CodeIdea, error: str, scope: CallScope) -> Thought[CodeIdea | None]:
        return Thought(None, self.name)

    def think_repair(self, failure: RepairRequest, scope: CallScope) -> Thought[RepairSuggestion | None]:
        return Thought(rule_based_repair(failure), self.name)

    def think_objective(self, request: ObjectiveReadingRequest, scope: CallScope) -> Thought[ObjectiveReading | None]:
        return Thought(None, self.name)

"""The public contract between services: every event and work item that crosses the bus.

Each event is a flat pydantic model: the envelope fields (event id, campaign, causation id,
producer, time, schema version) followed by its own payload. Services build events with the
payload alone; the runtime stamps the envelope before anything is stored or published.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from shared.metrics import MetricSource
from shared.parameters import Application

SCHEMA_VERSION = 1

# Bounds on what a card or a request may carry: every event must fit in one bus message, whatever
# a paper's card says. Longer material (a paper's text, a snapshot) travels through the artifact store.
ShortText = Annotated[str, StringConstraints(max_length=500)]
Text = Annotated[str, StringConstraints(max_length=4000)]
RepoPath = Annotated[str, StringConstraints(min_length=1, max_length=1000)]
MAX_LIST_ITEMS = 2000
MAX_SNAPSHOT_FILES = 4000

Direction = Literal["minimize", "maximize"]
Purpose = Literal["baseline", "idea", "verification"]
Arm = Literal["candidate", "baseline"]


class Event(BaseModel):
    """Envelope shared by every domain event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: str
    event_id: UUID | None = None
    campaign: str = Field(pattern=r"^[A-Za-z0-9_-]{1,80}$")
    causation_id: UUID | None = None
    producer: str = ""
    time: datetime | None = None
    schema_version: int = SCHEMA_VERSION

    # The service whose subject tree this event type belongs to.
    owner: ClassVar[str] = ""


# ---------------------------------------------------------------- value objects


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_experiments: int = Field(default=16, ge=0, description="idea experiments, baseline and verification runs excluded")
    wall_clock_seconds: float = Field(default=600.0, gt=0)
    parallelism: int = Field(default=2, ge=1, description="experiments in flight at once")
    verification_seeds: int = Field(default=5, ge=2)


class ParameterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None
    baseline: Any
    apply: Application | None = Field(default=None, description="how the value reaches the code: a flag, a config key, a constant, an environment variable; default: the params file")

    def admits(self, value: Any) -> bool:
        if self.type == "categorical":
            # True == 1 in Python; a choice of 1 does not admit True, nor a choice of False admit 0
            return any(value == choice and isinstance(value, bool) == isinstance(choice, bool) for choice in self.choices or [])
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.type == "int" and not float(value).is_integer():
            return False
        return self.low is not None and self.high is not None and self.low <= value <= self.high


class LabelColumn(BaseModel):
    """Where the test labels live, so a leakage canary can permute them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    column: str


class LabelCanary(LabelColumn):
    """Permute this column of this CSV file in the workspace before training."""

    seed: int


class ObjectiveRules(BaseModel):
    """Machine-checkable forms of the paper's constraints (R7), from the task card's [objective.rules]."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    forbidden_params: list[ShortText] = Field(default_factory=list, max_length=200, description="parameters no idea may set")
    min_params: dict[ShortText, float] = Field(default_factory=dict, max_length=200, description="parameter -> smallest value allowed")
    max_params: dict[ShortText, float] = Field(default_factory=dict, max_length=200, description="parameter -> largest value allowed")
    forbidden_files: list[RepoPath] = Field(default_factory=list, max_length=MAX_LIST_ITEMS, description="files or folders no patch may touch")
    forbidden_patterns: list[ShortText] = Field(default_factory=list, max_length=200, description="regular expressions no added patch line may match")


class Objective(BaseModel):
    """The rubric a campaign is judged by, frozen before optimisation starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: ShortText
    method: ShortText
    primary_metric: ShortText
    direction: Direction
    reported_value: float
    reported_source: Text
    secondary_metrics: dict[ShortText, float] = Field(default_factory=dict, max_length=100, description="metric -> tolerated relative worsening")
    protected_paths: list[RepoPath] = Field(max_length=MAX_LIST_ITEMS)
    constraints: list[Text] = Field(default_factory=list, max_length=100)
    train_command: Text
    evaluate_command: Text
    smoke_command: Text | None = None
    requirements: list[ShortText] = Field(default_factory=list, max_length=500)
    timeout_seconds: float = 120.0
    baseline_seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], max_length=100)
    search_space: dict[ShortText, ParameterSpec] = Field(default_factory=dict, max_length=200)
    test_labels: LabelColumn | None = None
    rules: ObjectiveRules | None = None
    metrics: MetricSource | None = Field(default=None, description="where the evaluation leaves its metrics; default: the last JSON line it prints")
    seed: Application | None = Field(default=None, description="how the seed reaches the code; default: the params file")
    reproduction_tolerance: float | None = Field(default=None, ge=0, description="the largest gap between the reported value and the measured mean still counted as reproduced; default: the larger of 2 % of the reported value and three seed standard deviations")

    @property
    def metric_names(self) -> list[str]:
        return [self.primary_metric, *self.secondary_metrics]

    @property
    def baseline_params(self) -> dict[str, Any]:
        return {name: spec.baseline for name, spec in self.search_space.items()}

    @property
    def protected_locations(self) -> list[str]:
        """The protected files and folders, without the entries that name one definition (`file.py::name`)."""
        return [entry for entry in self.protected_paths if "::" not in entry]

    @property
    def applications(self) -> dict[str, Application]:
        """The parameters that reach the code some other way than the params file."""
        return {name: spec.apply for name, spec in self.search_space.items() if spec.apply is not None and not spec.apply.is_params_file}

    def better(self, a: float, b: float) -> bool:
        """True when a is strictly better than b in the objective's direction."""
        return a < b if self.direction == "minimize" else a > b

    def gain(self, new: float, reference: float) -> float:
        """Signed improvement of new over reference: positive means better."""
        return reference - new if self.direction == "minimize" else new - reference


class Idea(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    idea_id: str
    kind: Literal["PARAM", "CODE", "ALGO"] = "PARAM"
    params: dict[str, Any] = Field(default_factory=dict)
    patch: str | None = Field(default=None, description="unified diff against the snapshot")
    rationale: str = ""
    risk: Literal["low", "medium", "high"] = "low"
    expected_effect: str = ""


class IdeaBase(BaseModel):
    """The code and parameters new ideas build on: the best so far, or a structural idea on honeymoon."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    idea_id: str | None = Field(default=None, description="None: the paper's own code and parameters")
    params: dict[str, Any] = Field(default_factory=dict)
    patch: str | None = Field(default=None, description="unified diff against the snapshot")
    value: float | None = None


class WorkItem(BaseModel):
    """One experiment for a runner: everything it needs travels in here or in the object store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    campaign: str
    experiment_id: str
    purpose: Purpose
    dispatcher: str
    snapshot_sha256: str
    params: dict[str, Any]
    seed: int
    patch: str | None = None
    train_command: str
    evaluate_command: str
    environment_bin: str
    protected_paths: list[str]
    timeout_seconds: float
    pool: str = "cpu"
    canary: LabelCanary | None = None
    gpus: int = Field(default=0, ge=0, description="accelerators the job needs; a runner with fewer never runs it")
    gpu_type: str | None = Field(default=None, description="the accelerator model the job needs, when it matters")
    metrics: MetricSource | None = Field(default=None, description="where the evaluation leaves its metrics")
    applications: dict[str, Application] = Field(default_factory=dict, description="parameter -> how its value reaches the code (the params file carries every value too)")
    protected_symbols: dict[str, str] = Field(default_factory=dict, description="path::qualname -> the digest the workspace must still match after the run")
    seed_application: Application | None = None


# ---------------------------------------------------------------- scheduler


class CampaignStarted(Event):
    owner: ClassVar[str] = "scheduler"
    event_type: Literal["CampaignStarted"] = "CampaignStarted"
    paper_path: RepoPath
    budget: Budget
    pool: str = "cpu"
    continue_unreproduced: bool = Field(default=False, description="search on when the baseline does not reproduce the paper's number")


class ExperimentDispatched(Event):
    owner: ClassVar[str] = "scheduler"
    event_type: Literal["ExperimentDispatched"] = "ExperimentDispatched"
    experiment_id: str
    purpose: Purpose
    idea_id: str | None = None
    params: dict[str, Any]
    seed: int
    patch: str | None = None
    pool: str = "cpu"


class BaselineReproduced(Event):
    owner: ClassVar[str] = "scheduler"
    event_type: Literal["BaselineReproduced"] = "BaselineReproduced"
    metric: str
    values: list[float]
    mean: float
    std: float
    reported_value: float
    gap_to_reported: float = Field(description="measured mean minus reported value")
    reproduced: bool = Field(default=True, description="the reported value lies within the tolerance of the measured mean")
    tolerance: float = Field(default=0.0, ge=0, description="the largest gap still counted as reproduced, in the metric's units")


class IdeasRequested(Event):
    owner: ClassVar[str] = "scheduler"
    event_type: Literal["IdeasRequested"] = "IdeasRequested"
    count: int
    round: int
    structural: int = Field(default=0, description="how many of the ideas should be CODE or ALGO changes (the Leap rule)")
    base: IdeaBase | None = Field(default=None, description="what the ideas build on")


class BestUpdated(Event):
    owner: ClassVar[str] = "scheduler"
    event_type: Literal["BestUpdated"] = "BestUpdated"
    idea_id: str
    experiment_id: str
    value: float
    previous_value: float
    params: dict[str, Any]


class CandidateNominated(Event):
    owner: ClassVar[str] = "scheduler"
    event_type: Literal["CandidateNominated"] = "CandidateNominated"
    idea_id: str
    params: dict[str, Any]
    patch: str | None = None
    screening_value: float
    attempt: int = 1


class CampaignCompleted(Event):
    owner: ClassVar[str] = "scheduler"
    event_type: Literal["CampaignCompleted"] = "CampaignCompleted"
    outcome: Literal["certified", "not_improved", "not_reproduced", "failed", "stopped"]
    reason: str
    idea_experiments: int


# ---------------------------------------------------------------- resource


class ResourcesPrepared(Event):
    owner: ClassVar[str] = "resource"
    event_type: Literal["ResourcesPrepared"] = "ResourcesPrepared"
    snapshot_sha256: str
    files: dict[str, str] = Field(max_length=MAX_SNAPSHOT_FILES, description="relative path -> sha256 of its content")
    size_bytes: int


class ResourcesFailed(Event):
    owner: ClassVar[str] = "resource"
    event_type: Literal["ResourcesFailed"] = "ResourcesFailed"
    reason: str


# ---------------------------------------------------------------- objective


class ObjectiveSet(Event):
    owner: ClassVar[str] = "objective"
    event_type: Literal["ObjectiveSet"] = "ObjectiveSet"
    objective: Objective
    snapshot_sha256: str


class ObjectiveFailed(Event):
    owner: ClassVar[str] = "objective"
    event_type: Literal["ObjectiveFailed"] = "ObjectiveFailed"
    reason: str


# ---------------------------------------------------------------- init


class EnvironmentSpecified(Event):
    owner: ClassVar[str] = "init"
    event_type: Literal["EnvironmentSpecified"] = "EnvironmentSpecified"
    kind: Literal["interpreter", "venv"]
    spec_sha256: str
    requirements: list[str]
    unsatisfied: list[str] = Field(default_factory=list)


class EnvironmentReady(Event):
    owner: ClassVar[str] = "init"
    event_type: Literal["EnvironmentReady"] = "EnvironmentReady"
    environment_bin: str
    smoke_seconds: float
    repairs_applied: list[str] = Field(default_factory=list)


class EnvironmentFailed(Event):
    owner: ClassVar[str] = "init"
    event_type: Literal["EnvironmentFailed"] = "EnvironmentFailed"
    stage: Literal["build", "smoke", "repair"]
    signature: str
    error_tail: str
    attempt: int
    final: bool = False


class BaselineRequested(Event):
    owner: ClassVar[str] = "init"
    event_type: Literal["BaselineRequested"] = "BaselineRequested"
    environment_bin: str
    params: dict[str, Any]
    seeds: list[int]


# ---------------------------------------------------------------- fix

# install_package <requirement>; pin_requirement <requirement with an upper bound>; relax_requirement
# <name> (drop its version pin); force_cpu <device literal>; relink_path <missing>=<snapshot path>;
# reduce_batch_size <divisor>; extend_timeout <factor>
RepairAction = Literal["install_package", "pin_requirement", "relax_requirement", "force_cpu", "relink_path", "reduce_batch_size", "extend_timeout"]


class RepairProposed(Event):
    owner: ClassVar[str] = "fix"
    event_type: Literal["RepairProposed"] = "RepairProposed"
    signature: str
    action: RepairAction
    argument: str
    from_memory: bool = False


class RepairExhausted(Event):
    owner: ClassVar[str] = "fix"
    event_type: Literal["RepairExhausted"] = "RepairExhausted"
    signature: str
    reason: str


# ---------------------------------------------------------------- monitor


class StallDetected(Event):
    owner: ClassVar[str] = "monitor"
    event_type: Literal["StallDetected"] = "StallDetected"
    experiment_id: str
    silent_seconds: float
    state: Literal["queued", "running"]


class BudgetExhausted(Event):
    owner: ClassVar[str] = "monitor"
    event_type: Literal["BudgetExhausted"] = "BudgetExhausted"
    budget: Literal["wall_clock"]
    used: float
    limit: float


class SupervisoryAction(Event):
    """The monitor's answer to a dead end: the same failure again and again, or no progress for too long."""

    owner: ClassVar[str] = "monitor"
    event_type: Literal["SupervisoryAction"] = "SupervisoryAction"
    action: Literal["continue", "resume", "fallback", "terminate", "rollback"]
    trigger: Literal["repeated_failure", "no_progress"]
    reason: str
    signature: str | None = None
    experiment_ids: list[str] = Field(default_factory=list)


# ---------------------------------------------------------------- ideator


class IdeasProposed(Event):
    owner: ClassVar[str] = "ideator"
    event_type: Literal["IdeasProposed"] = "IdeasProposed"
    ideas: list[Idea]
    brain: str
    round: int


# ---------------------------------------------------------------- supervisor


class ProtectionEstablished(Event):
    owner: ClassVar[str] = "supervisor"
    event_type: Literal["ProtectionEstablished"] = "ProtectionEstablished"
    protected_files: dict[str, str] = Field(description="relative path -> sha256 at baseline")
    evaluation_imports: list[str] = Field(default_factory=list, description="top-level modules the protected code imports")
    shadow_guards: list[str] = Field(default_factory=list, description="paths that must not exist after a run: a module there would shadow one the evaluation imports")
    protected_symbols: dict[str, str] = Field(default_factory=dict, description="path::qualname -> digest of its AST: each protected definition and what it refers to in the repository")


class IdeaCleared(Event):
    owner: ClassVar[str] = "supervisor"
    event_type: Literal["IdeaCleared"] = "IdeaCleared"
    idea: Idea


class IdeaRejected(Event):
    owner: ClassVar[str] = "supervisor"
    event_type: Literal["IdeaRejected"] = "IdeaRejected"
    idea: Idea
    rule: str
    evidence: dict[str, Any]


class ResultValidated(Event):
    owner: ClassVar[str] = "supervisor"
    event_type: Literal["ResultValidated"] = "ResultValidated"
    experiment_id: str
    purpose: Purpose
    idea_id: str | None = None
    metrics: dict[str, float]


class ResultRejected(Event):
    owner: ClassVar[str] = "supervisor"
    event_type: Literal["ResultRejected"] = "ResultRejected"
    experiment_id: str
    purpose: Purpose
    idea_id: str | None = None
    rule: str
    evidence: dict[str, Any]


class VerificationDispatched(Event):
    owner: ClassVar[str] = "supervisor"
    event_type: Literal["VerificationDispatched"] = "VerificationDispatched"
    experiment_id: str
    idea_id: str
    arm: Arm
    seed: int
    canary: bool = Field(default=False, description="a leakage-canary run: the test labels are permuted before training")


class SotaCertified(Event):
    owner: ClassVar[str] = "supervisor"
    event_type: Literal["SotaCertified"] = "SotaCertified"
    idea_id: str
    params: dict[str, Any]
    patch: str | None = None
    metric: str
    candidate_values: list[float]
    baseline_values: list[float]
    candidate_mean: float
    baseline_mean: float
    gain_vs_reproduced: float = Field(description="positive is better, against the fresh baseline re-run")
    gain_vs_reported: float = Field(description="positive is better, against the paper's number")
    reported_value: float
    test: str
    statistic: float
    p_value: float
    alpha: float
    secondary_means: dict[str, dict[str, float]] = Field(default_factory=dict)
    checks: dict[str, Any] = Field(default_factory=dict, description="the other checks passed before certification, with their numbers")


class SotaRefuted(Event):
    owner: ClassVar[str] = "supervisor"
    event_type: Literal["SotaRefuted"] = "SotaRefuted"
    idea_id: str
    metric: str
    candidate_values: list[float]
    baseline_values: list[float]
    rule: str
    reason: str
    test: str
    statistic: float
    p_value: float
    alpha: float
    evidence: dict[str, Any] = Field(default_factory=dict)


# ---------------------------------------------------------------- runner


class JobStarted(Event):
    owner: ClassVar[str] = "runner"
    event_type: Literal["JobStarted"] = "JobStarted"
    experiment_id: str
    runner: str
    delivery: int


class JobCompleted(Event):
    owner: ClassVar[str] = "runner"
    event_type: Literal["JobCompleted"] = "JobCompleted"
    experiment_id: str
    purpose: Purpose
    runner: str
    metrics: dict[str, float]
    evaluate_command: str
    protected_hashes: dict[str, str | None]
    duration_seconds: float
    output_tail: str
    canary_sha256: str | None = Field(default=None, description="hash of the permuted label file, for a canary run")
    created_files: dict[str, str] = Field(default_factory=dict, description="files the run left that the snapshot did not hold, outside outputs/: path -> sha256")
    train_command: str = Field(default="", description="the training command as it ran, with the parameters' flags")
    applied: list[ShortText] = Field(default_factory=list, max_length=MAX_LIST_ITEMS, description="how each parameter reached the code")
    applied_patch: str = Field(default="", description="the parameters' edits of config files and constants, as a diff")
    changed_symbols: dict[str, ShortText] = Field(default_factory=dict, max_length=MAX_LIST_ITEMS, description="protected symbol -> how the workspace after the run no longer matches it")

    @field_validator("metrics")
    @classmethod
    def _finite(cls, metrics: dict[str, float]) -> dict[str, float]:
        # NaN cannot travel through JSON; the runner reports it as a failure instead.
        return {name: value for name, value in metrics.items() if math.isfinite(value)}


class JobFailed(Event):
    owner: ClassVar[str] = "runner"
    event_type: Literal["JobFailed"] = "JobFailed"
    experiment_id: str
    purpose: Purpose
    runner: str
    stage: Literal["prepare", "train", "evaluate", "metrics", "dead_letter", "withdrawn"]
    reason: str
    signature: str
    exit_code: int | None = None
    output_tail: str = ""
    duration_seconds: float = 0.0


# ---------------------------------------------------------------- the optimisation loop's structural decisions


class LeapStarted(Event):
    """The Leap rule: after several PARAM ideas in a row, the next request asks for a structural idea."""

    owner: ClassVar[str] = "scheduler"
    event_type: Literal["LeapStarted"] = "LeapStarted"
    round: int
    after_param_ideas: list[str]
    reason: str


class HoneymoonStarted(Event):
    """A structural idea that does not beat the best becomes the base for a few follow-ups."""

    owner: ClassVar[str] = "scheduler"
    event_type: Literal["HoneymoonStarted"] = "HoneymoonStarted"
    idea_id: str
    value: float
    best_value: float
    follow_ups: int
    reason: str


class RolledBack(Event):
    """The honeymoon's follow-ups did not beat the best: new ideas build on the best again."""

    owner: ClassVar[str] = "scheduler"
    event_type: Literal["RolledBack"] = "RolledBack"
    from_idea_id: str
    to_idea_id: str | None = Field(description="None: the paper's own code and parameters")
    to_value: float | None = None
    follow_ups_tried: list[str]
    reason: str


class IdeaDropped(Event):
    """A model's idea the ideator could not turn into a runnable change (its diff did not apply)."""

    owner: ClassVar[str] = "ideator"
    event_type: Literal["IdeaDropped"] = "IdeaDropped"
    idea: Idea
    round: int
    reason: str
    error: str


# ---------------------------------------------------------------- brains (any agent that thinks with a model)


class ModelCalled(Event):
    """One exchange with a model, recorded with the decision it informed so replay can answer from it."""

    owner: ClassVar[str] = "*"
    event_type: Literal["ModelCalled"] = "ModelCalled"
    agent: str
    purpose: str
    call_key: str = Field(description="stable name of the call within its decision; replay looks answers up by it")
    backend: str
    model: str
    prompt_sha256: str = Field(description="sha256 of the prompt's canonical JSON; the artifact key when the prompt is not inline")
    prompt_chars: int
    prompt: str | None = Field(default=None, description="the prompt's canonical JSON when short; else in the artifact store")
    answer: str | None = None
    outcome: Literal["answered", "invalid", "failed"]
    error_kind: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_seconds: float = 0.0
    cost: float = 0.0
    retry_after_seconds: float | None = None


class BrainSelected(Event):
    """The model an agent thinks with in this campaign, and the budgets it respects."""

    owner: ClassVar[str] = "*"
    event_type: Literal["BrainSelected"] = "BrainSelected"
    agent: str
    brain: str
    backend: str
    model: str
    token_budget: int | None = None
    cost_budget: float | None = None


class BrainFellBack(Event):
    """An agent answered with the no-model brain instead of its model, and why."""

    owner: ClassVar[str] = "*"
    event_type: Literal["BrainFellBack"] = "BrainFellBack"
    agent: str
    purpose: str
    kind: str
    reason: str
    permanent: bool


# ---------------------------------------------------------------- every service


class ServiceFailed(Event):
    """A service could not act on an event of this campaign (its handler failed, or what it decided
    could not be published): the campaign cannot go on as recorded, so the scheduler ends it."""

    owner: ClassVar[str] = "*"
    event_type: Literal["ServiceFailed"] = "ServiceFailed"
    service: str
    stage: Literal["handling", "publishing"]
    failed_event_type: str = Field(description="the event being handled, or the one that could not be published")
    subject: str
    reason: str


class MessageRejected(Event):
    """A message this service could not parse or handle: a dead letter with its reason."""

    owner: ClassVar[str] = "*"
    event_type: Literal["MessageRejected"] = "MessageRejected"
    subject: str
    reason: str
    excerpt: str
    stream_sequence: int | None = None


EVENT_TYPES: dict[str, type[Event]] = {
    cls.model_fields["event_type"].default: cls
    for cls in (
        CampaignStarted, ExperimentDispatched, BaselineReproduced, IdeasRequested, BestUpdated,
        CandidateNominated, CampaignCompleted, ResourcesPrepared, ResourcesFailed, ObjectiveSet,
        ObjectiveFailed, EnvironmentSpecified, EnvironmentReady, EnvironmentFailed,
        BaselineRequested, RepairProposed, RepairExhausted, StallDetected, BudgetExhausted,
        IdeasProposed, ProtectionEstablished, IdeaCleared, IdeaRejected, ResultValidated,
        ResultRejected, VerificationDispatched, SotaCertified, SotaRefuted, JobStarted,
        JobCompleted, JobFailed, MessageRejected, ServiceFailed, SupervisoryAction,
        LeapStarted, HoneymoonStarted, RolledBack, IdeaDropped, ModelCalled, BrainSelected, BrainFellBack,
    )
}

OWNED_EVENTS: dict[str, list[type[Event]]] = {}
for _cls in EVENT_TYPES.values():
    OWNED_EVENTS.setdefault(_cls.owner, []).append(_cls)


class ContractError(ValueError):
    """A message that does not follow the contract."""


def parse_event(body: Any) -> Event:
    """Validate a decoded message body as one of the contract's events."""
    if not isinstance(body, dict):
        raise ContractError(f"an event must be a JSON object, got {type(body).__name__}")
    event_type = body.get("event_type")
    cls = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if cls is None:
        raise ContractError(f"unknown event_type {event_type!r}")
    try:
        event = cls.model_validate(body)
    except ValidationError as error:
        raise ContractError(f"invalid {event_type}: {error.errors(include_url=False)}") from None
    if event.event_id is None or event.time is None or not event.producer:
        raise ContractError(f"{event_type} lacks its envelope (event_id, time, producer)")
    return event


class Telemetry(BaseModel):
    """Live, lossy telemetry from a runner: log lines and heartbeats."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["log", "heartbeat"]
    campaign: str
    experiment_id: str
    runner: str
    time: datetime
    line: str = ""

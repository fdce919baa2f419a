"""What init decides: which environment a paper needs, and what follows a smoke run or a repair.

Every paper gets an isolated environment of its own, whatever its requirements: a virtual
environment on the system interpreter's Python that does not see the system's packages and holds
exactly the paper's resolved requirements (an empty list gives an empty environment; nothing of the
system's packages leaks in, so a paper's pins never mix with them). The pool the campaign runs on
chooses the build variant (CPU builds of torch on a CPU pool).

The environment's specification is the paper's requirements plus the repairs kept so far. A
repair is kept when the failure it was proposed for does not come back after it; a repair after
which the same failure returns, or that could not be applied, is dropped from the specification
(fix will not propose it again for that failure).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from shared.contracts import (
    BaselineRequested,
    CampaignStarted,
    EnvironmentFailed,
    EnvironmentReady,
    EnvironmentSpecified,
    Event,
    Objective,
    ObjectiveSet,
    RepairExhausted,
    RepairProposed,
)

RELEVANT = frozenset({"CampaignStarted", "ObjectiveSet", "EnvironmentSpecified", "EnvironmentReady", "EnvironmentFailed", "RepairProposed", "RepairExhausted"})
MAX_ATTEMPTS = 6


@dataclass
class InitState:
    objective: Objective | None = None
    snapshot_sha256: str | None = None
    kind: str | None = None
    spec_sha256: str | None = None
    ready: bool = False
    failed_final: bool = False
    attempts: int = 0
    repairs: list[str] = field(default_factory=list)
    trial: tuple[str, str] | None = None  # (signature, repair) being tried
    handled_repairs: set[str] = field(default_factory=set)
    pool: str = "cpu"
    reasons: dict[str, str] = field(default_factory=dict)  # repair -> the failure signature it was proposed for


class InitDomain:
    relevant = RELEVANT

    def initial_state(self, campaign: str) -> InitState:
        return InitState()

    def evolve(self, state: InitState, event: Event) -> InitState:
        if isinstance(event, CampaignStarted):
            state.pool = event.pool
        elif isinstance(event, ObjectiveSet):
            state.objective, state.snapshot_sha256 = event.objective, event.snapshot_sha256
        elif isinstance(event, EnvironmentSpecified):
            state.kind, state.spec_sha256 = event.kind, event.spec_sha256
        elif isinstance(event, EnvironmentReady):
            state.ready = True
            state.repairs = list(event.repairs_applied)
            state.trial = None
        elif isinstance(event, EnvironmentFailed):
            state.attempts = max(state.attempts, event.attempt)
            state.failed_final = state.failed_final or event.final
            if state.trial is not None:
                signature, repair = state.trial
                if event.stage != "repair" and event.signature != signature and repair not in state.repairs:
                    state.repairs.append(repair)  # it cured its failure; another one showed up
                state.trial = None
        elif isinstance(event, RepairProposed):
            state.handled_repairs.add(str(event.event_id))
            state.trial = (event.signature, f"{event.action} {event.argument}")
            state.reasons[f"{event.action} {event.argument}"] = event.signature
        return state


def spec_digest(requirements: list[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(requirements)).encode()).hexdigest()


def specify(campaign: str, objective: Objective) -> EnvironmentSpecified:
    """Always an isolated virtual environment; every requirement is installed in it, none taken from the system."""
    return EnvironmentSpecified(
        campaign=campaign,
        kind="venv",
        spec_sha256=spec_digest(objective.requirements),
        requirements=list(objective.requirements),
        unsatisfied=[],  # nothing is taken from the system interpreter, so nothing is measured against it
    )


def after_smoke(campaign: str, objective: Objective, environment_bin: str, ok: bool, seconds: float, tail: str, signature: str, attempt: int, repairs: list[str], stage: str = "smoke") -> list[Event]:
    if ok:
        return [
            EnvironmentReady(campaign=campaign, environment_bin=environment_bin, smoke_seconds=round(seconds, 3), repairs_applied=repairs),
            BaselineRequested(campaign=campaign, environment_bin=environment_bin, params=objective.baseline_params, seeds=list(objective.baseline_seeds)),
        ]
    return [EnvironmentFailed(campaign=campaign, stage=stage, signature=signature, error_tail=tail[-3000:], attempt=attempt, final=attempt >= MAX_ATTEMPTS)]  # type: ignore[arg-type]


def after_exhausted(campaign: str, state: InitState, event: RepairExhausted) -> list[Event]:
    if state.ready or state.failed_final:
        return []
    return [EnvironmentFailed(campaign=campaign, stage="repair", signature=event.signature, error_tail=event.reason, attempt=state.attempts + 1, final=True)]


def repairs_to_apply(state: InitState) -> list[str]:
    """The repairs kept so far and the one on trial, in order."""
    kept = list(state.repairs)
    if state.trial is not None and state.trial[1] not in kept:
        kept.append(state.trial[1])
    return kept

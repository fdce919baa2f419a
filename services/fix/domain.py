"""What the fix service decides: retrieval before repair, and never the same repair twice for a failure.

Per campaign, the state holds what fix knows of the paper (requirements, files, protected
paths) and the repairs already proposed. Across campaigns, the failure memory maps a failure
signature to the outcome of its latest repair and to every repair that failed for it: a repair
worked when the environment became ready or another failure took its failure's place; it failed
when the same failure came back, when it could not be applied, or when the environment failed
for good. A remembered repair that worked is proposed first; one that failed is never proposed
again for that signature.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from shared.brain import ModelLedger
from shared.contracts import (
    BrainSelected,
    ModelCalled,
    EnvironmentFailed,
    EnvironmentReady,
    Event,
    ObjectiveSet,
    RepairExhausted,
    RepairProposed,
    ResourcesPrepared,
)

RELEVANT = frozenset({"ObjectiveSet", "ResourcesPrepared", "EnvironmentFailed", "EnvironmentReady", "RepairProposed", "RepairExhausted", "ModelCalled", "BrainSelected"})


@dataclass(frozen=True)
class Repair:
    action: str
    argument: str

    def __str__(self) -> str:
        return f"{self.action} {self.argument}"


@dataclass(frozen=True)
class PaperFacts:
    """What fix knows of the paper whose environment failed."""

    requirements: tuple[str, ...] = ()
    files: frozenset[str] = field(default_factory=frozenset)
    protected_paths: tuple[str, ...] = ()


@dataclass
class FixState:
    campaign: str
    facts: PaperFacts = field(default_factory=PaperFacts)
    proposed: dict[str, list[Repair]] = field(default_factory=dict)  # signature -> repairs proposed here, in order
    exhausted: set[str] = field(default_factory=set)
    latest_attempt: int | None = None
    answered_attempts: set[int] = field(default_factory=set)
    models: ModelLedger = field(default_factory=ModelLedger)
    brain_selected: bool = False

    def applied(self) -> list[Repair]:
        return [repair for repairs in self.proposed.values() for repair in repairs]


class FixDomain:
    relevant = RELEVANT

    def initial_state(self, campaign: str) -> FixState:
        return FixState(campaign=campaign)

    def evolve(self, state: FixState, event: Event) -> FixState:
        if isinstance(event, ObjectiveSet):
            objective = event.objective
            state.facts = PaperFacts(tuple(objective.requirements), state.facts.files, tuple(objective.protected_paths))
        elif isinstance(event, ResourcesPrepared):
            state.facts = PaperFacts(state.facts.requirements, frozenset(event.files), state.facts.protected_paths)
        elif isinstance(event, ModelCalled):
            state.models.add(event)
        elif isinstance(event, BrainSelected) and event.agent == "fix":
            state.brain_selected = True
        elif isinstance(event, EnvironmentFailed):
            state.latest_attempt = event.attempt
        elif isinstance(event, RepairProposed):
            tried = state.proposed.setdefault(event.signature, [])
            if Repair(event.action, event.argument) not in tried:  # folded once when emitted, again when observed
                tried.append(Repair(event.action, event.argument))
            _answer(state)
        elif isinstance(event, RepairExhausted):
            state.exhausted.add(event.signature)
            _answer(state)
        return state


def _answer(state: FixState) -> None:
    if state.latest_attempt is not None:
        state.answered_attempts.add(state.latest_attempt)


# ---------------------------------------------------------------- failure memory across campaigns


@dataclass(frozen=True)
class RepairOutcome:
    repair: Repair
    worked: bool
    campaign: str


@dataclass
class FailureMemory:
    outcomes: dict[str, RepairOutcome] = field(default_factory=dict)  # signature -> its latest repair's outcome
    failed: dict[str, set[Repair]] = field(default_factory=dict)  # signature -> repairs that failed for it
    awaiting: dict[str, dict[str, Repair]] = field(default_factory=dict)  # campaign -> signature -> repair

    def settle(self, campaign: str, signature: str, worked: bool) -> None:
        repair = self.awaiting.get(campaign, {}).pop(signature)
        self.outcomes[signature] = RepairOutcome(repair, worked, campaign)
        if not worked:
            self.failed.setdefault(signature, set()).add(repair)


def learn(memory: FailureMemory, event: Event) -> FailureMemory:
    """Fold one of the fix service's recorded events, from any campaign, into the memory."""
    awaiting = memory.awaiting.setdefault(event.campaign, {})
    if isinstance(event, RepairProposed):
        awaiting[event.signature] = Repair(event.action, event.argument)
    elif isinstance(event, EnvironmentReady):
        for signature in list(awaiting):
            memory.settle(event.campaign, signature, worked=True)
    elif isinstance(event, EnvironmentFailed):
        for signature in list(awaiting):
            if event.final or event.stage == "repair" or signature == event.signature:
                memory.settle(event.campaign, signature, worked=False)
            else:
                memory.settle(event.campaign, signature, worked=True)  # its failure gave way to another
    return memory


def remembered_repair(memory: FailureMemory, signature: str) -> Repair | None:
    outcome = memory.outcomes.get(signature)
    return outcome.repair if outcome is not None and outcome.worked else None


# ---------------------------------------------------------------- decisions


def needs_answer(state: FixState, failed: EnvironmentFailed) -> bool:
    return not failed.final and failed.attempt not in state.answered_attempts


def untried(state: FixState, failed: EnvironmentFailed, memory: FailureMemory, candidates: Iterable[Repair]) -> list[Repair]:
    """Candidates neither applied in this campaign nor known to have failed for this failure."""
    applied = state.applied()
    refused = memory.failed.get(failed.signature, set())
    return [repair for repair in candidates if repair not in applied and repair not in refused]


def needs_brain(state: FixState, failed: EnvironmentFailed, memory: FailureMemory, candidates: Iterable[Repair] = ()) -> bool:
    """The brain is asked only when neither the memory nor a rule has a repair left to try."""
    remembered = remembered_repair(memory, failed.signature)
    if remembered is not None and remembered not in state.applied():
        return False
    return not untried(state, failed, memory, candidates)


def decide_repair(
    state: FixState,
    failed: EnvironmentFailed,
    memory: FailureMemory,
    candidates: Iterable[Repair],
    fits: Callable[[Repair], bool] = lambda repair: True,
) -> list[Event]:
    """Memory first, then the ranked candidates; exhausted when nothing untried remains."""
    candidates = list(candidates)
    remembered = remembered_repair(memory, failed.signature)
    if remembered is not None and remembered not in state.applied() and fits(remembered):
        return [_proposed(failed, remembered, from_memory=True)]
    fresh = untried(state, failed, memory, candidates)
    if fresh:
        return [_proposed(failed, fresh[0], from_memory=False)]
    tried_here = state.proposed.get(failed.signature)
    if tried_here:
        reason = f"{', '.join(map(str, tried_here))} was already tried for this failure in this campaign"
    elif memory.failed.get(failed.signature):
        reason = f"every repair known for this failure failed before: {', '.join(sorted(map(str, memory.failed[failed.signature])))}"
    elif candidates:
        reason = f"the repairs that match were already applied in this campaign: {', '.join(map(str, candidates))}"
    else:
        reason = "no repair rule matches this failure"
    return [_exhausted(failed, reason)]


def _proposed(failed: EnvironmentFailed, repair: Repair, from_memory: bool) -> RepairProposed:
    return RepairProposed(
        campaign=failed.campaign,
        signature=failed.signature,
        action=repair.action,  # type: ignore[arg-type]
        argument=repair.argument,
        from_memory=from_memory,
    )


def _exhausted(failed: EnvironmentFailed, reason: str) -> RepairExhausted:
    return RepairExhausted(campaign=failed.campaign, signature=failed.signature, reason=reason)

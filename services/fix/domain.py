"""What the fix service decides: retrieval before repair, and never the same repair twice in a campaign.

Per campaign, the state holds the repairs already proposed. Across campaigns, the failure memory
maps a failure signature to the outcome of its latest repair: it worked when EnvironmentReady
followed the proposal in that campaign, it failed when the same signature came back or the
environment failed for good.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.brain import RepairSuggestion
from shared.contracts import (
    EnvironmentFailed,
    EnvironmentReady,
    Event,
    RepairExhausted,
    RepairProposed,
)

RELEVANT = frozenset({"EnvironmentFailed", "EnvironmentReady", "RepairProposed", "RepairExhausted"})


@dataclass(frozen=True)
class Repair:
    action: str
    argument: str


@dataclass
class FixState:
    campaign: str
    proposed: dict[str, Repair] = field(default_factory=dict)
    exhausted: set[str] = field(default_factory=set)
    latest_attempt: int | None = None
    answered_attempts: set[int] = field(default_factory=set)


class FixDomain:
    relevant = RELEVANT

    def initial_state(self, campaign: str) -> FixState:
        return FixState(campaign=campaign)

    def evolve(self, state: FixState, event: Event) -> FixState:
        if isinstance(event, EnvironmentFailed):
            state.latest_attempt = event.attempt
        elif isinstance(event, RepairProposed):
            state.proposed[event.signature] = Repair(event.action, event.argument)
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
    outcomes: dict[str, RepairOutcome] = field(default_factory=dict)
    awaiting: dict[str, dict[str, Repair]] = field(default_factory=dict)  # campaign -> signature -> repair


def learn(memory: FailureMemory, event: Event) -> FailureMemory:
    """Fold one of the fix service's recorded events, from any campaign, into the memory."""
    awaiting = memory.awaiting.setdefault(event.campaign, {})
    if isinstance(event, RepairProposed):
        awaiting[event.signature] = Repair(event.action, event.argument)
    elif isinstance(event, EnvironmentReady):
        for signature, repair in awaiting.items():
            memory.outcomes[signature] = RepairOutcome(repair, True, event.campaign)
        awaiting.clear()
    elif isinstance(event, EnvironmentFailed):
        failed = list(awaiting) if event.final else [event.signature] if event.signature in awaiting else []
        for signature in failed:
            memory.outcomes[signature] = RepairOutcome(awaiting.pop(signature), False, event.campaign)
    return memory


def remembered_repair(memory: FailureMemory, signature: str) -> Repair | None:
    outcome = memory.outcomes.get(signature)
    return outcome.repair if outcome is not None and outcome.worked else None


# ---------------------------------------------------------------- decisions


def needs_answer(state: FixState, failed: EnvironmentFailed) -> bool:
    return not failed.final and failed.attempt not in state.answered_attempts


def needs_brain(state: FixState, failed: EnvironmentFailed, memory: FailureMemory) -> bool:
    return failed.signature not in state.proposed and remembered_repair(memory, failed.signature) is None


def decide_repair(
    state: FixState, failed: EnvironmentFailed, memory: FailureMemory, suggestion: RepairSuggestion | None
) -> list[Event]:
    signature = failed.signature
    tried = state.proposed.get(signature)
    if tried is not None:
        return [_exhausted(failed, f"{tried.action} {tried.argument} was already tried for this failure in this campaign")]
    remembered = remembered_repair(memory, signature)
    if remembered is not None and remembered not in state.proposed.values():
        return [_proposed(failed, remembered, from_memory=True)]
    if suggestion is None:
        return [_exhausted(failed, "no repair rule matches this failure")]
    repair = Repair(suggestion.action, suggestion.argument)
    if repair in state.proposed.values():
        return [_exhausted(failed, f"{repair.action} {repair.argument} was already applied in this campaign")]
    return [_proposed(failed, repair, from_memory=False)]


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

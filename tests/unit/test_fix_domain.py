"""The fix service: retrieval before repair, and a failed repair is not tried again."""

from __future__ import annotations

from services.fix.domain import (
    FailureMemory,
    FixDomain,
    FixState,
    Repair,
    decide_repair,
    learn,
    needs_answer,
    needs_brain,
    remembered_repair,
)
from shared.contracts import EnvironmentFailed, EnvironmentReady, Event, RepairExhausted, RepairProposed

YAML_MISSING = "ModuleNotFoundError: No module named 'yaml'"
INSTALL_YAML = Repair("install_package", "PyYAML")


def failed(campaign: str, attempt: int, signature: str = YAML_MISSING, final: bool = False) -> EnvironmentFailed:
    return EnvironmentFailed(campaign=campaign, stage="smoke", signature=signature, error_tail=signature, attempt=attempt, final=final)


def proposed(campaign: str, argument: str = "PyYAML", signature: str = YAML_MISSING) -> RepairProposed:
    return RepairProposed(campaign=campaign, signature=signature, action="install_package", argument=argument)


def ready(campaign: str) -> EnvironmentReady:
    return EnvironmentReady(campaign=campaign, environment_bin="/venv/bin", smoke_seconds=1.0)


def fold(campaign: str, *events: Event) -> FixState:
    domain = FixDomain()
    state = domain.initial_state(campaign)
    for event in events:
        state = domain.evolve(state, event)
    return state


def remember(*events: Event) -> FailureMemory:
    memory = FailureMemory()
    for event in events:
        memory = learn(memory, event)
    return memory


def test_a_new_failure_gets_the_brains_repair():
    state = fold("c1", failed("c1", 1))
    assert needs_answer(state, failed("c1", 1)) and needs_brain(state, failed("c1", 1), FailureMemory())
    [event] = decide_repair(state, failed("c1", 1), FailureMemory(), [INSTALL_YAML])
    assert isinstance(event, RepairProposed)
    assert (event.argument, event.from_memory) == ("PyYAML", False)


def test_no_suggestion_means_exhausted():
    [event] = decide_repair(fold("c1", failed("c1", 1)), failed("c1", 1), FailureMemory(), [])
    assert isinstance(event, RepairExhausted) and "no repair rule" in event.reason


def test_a_repair_that_worked_elsewhere_is_reused_without_the_brain():
    # Campaign c1 repaired the failure and its environment became ready.
    memory = remember(failed("c1", 1), proposed("c1"), ready("c1"))
    assert remembered_repair(memory, YAML_MISSING) == Repair("install_package", "PyYAML")
    # Campaign c2 meets the same failure.
    state = fold("c2", failed("c2", 1))
    assert not needs_brain(state, failed("c2", 1), memory)
    [event] = decide_repair(state, failed("c2", 1), memory, [])
    assert isinstance(event, RepairProposed) and event.from_memory and event.argument == "PyYAML"


def test_a_repair_is_not_retried_after_it_failed_in_the_campaign():
    # The repair was proposed, applied, and the same failure came back.
    state = fold("c1", failed("c1", 1), proposed("c1"), failed("c1", 2))
    assert needs_answer(state, failed("c1", 2)) and not needs_brain(state, failed("c1", 2), FailureMemory(), [Repair("install_package", "pyyaml-alt")])
    [event] = decide_repair(state, failed("c1", 2), FailureMemory(), [INSTALL_YAML])
    assert isinstance(event, RepairExhausted) and "already tried" in event.reason


def test_a_remembered_repair_that_fails_here_is_not_retried_either():
    memory = remember(failed("c1", 1), proposed("c1"), ready("c1"))
    state = fold("c2", failed("c2", 1), proposed("c2"), failed("c2", 2))
    [event] = decide_repair(state, failed("c2", 2), memory, [])
    assert isinstance(event, RepairExhausted)


def test_the_same_package_is_not_installed_twice_for_another_failure():
    other = "ModuleNotFoundError: No module named 'yaml.constructor'"
    state = fold("c1", failed("c1", 1), proposed("c1"), failed("c1", 2, signature=other))
    [event] = decide_repair(state, failed("c1", 2, signature=other), FailureMemory(), [INSTALL_YAML])
    assert isinstance(event, RepairExhausted)


def test_an_answered_attempt_and_a_final_failure_get_no_answer():
    state = fold("c1", failed("c1", 1), proposed("c1"))
    assert not needs_answer(state, failed("c1", 1))
    assert not needs_answer(fold("c1"), failed("c1", 3, final=True))


def test_memory_records_failed_repairs_and_the_latest_outcome_wins():
    memory = remember(failed("c1", 1), proposed("c1"), failed("c1", 2))
    assert remembered_repair(memory, YAML_MISSING) is None
    assert memory.outcomes[YAML_MISSING].worked is False
    memory = remember(failed("c1", 1), proposed("c1"), ready("c1"), failed("c2", 1), proposed("c2"), failed("c2", 9, final=True))
    assert remembered_repair(memory, YAML_MISSING) is None


def test_every_repair_before_readiness_counts_as_worked():
    sklearn = "ModuleNotFoundError: No module named 'sklearn'"
    memory = remember(
        failed("c1", 1), proposed("c1"),
        failed("c1", 2, signature=sklearn), proposed("c1", "scikit-learn", sklearn),
        ready("c1"),
    )
    assert remembered_repair(memory, YAML_MISSING) == Repair("install_package", "PyYAML")
    assert remembered_repair(memory, sklearn) == Repair("install_package", "scikit-learn")


def test_campaigns_do_not_mix_in_memory():
    # c2 becoming ready says nothing about the repair still awaiting its outcome in c1.
    memory = remember(failed("c1", 1), proposed("c1"), ready("c2"))
    assert remembered_repair(memory, YAML_MISSING) is None

"""Rule-based repairs: each covered failure, as a real tool prints it, maps to its repair."""

from __future__ import annotations

import pytest

from services.fix.domain import FailureMemory, FixDomain, PaperFacts, Repair, decide_repair, learn
from services.fix.rules import applicable, candidates
from shared.brain import failure_signature
from shared.contracts import EnvironmentFailed, EnvironmentReady, RepairProposed

FACTS = PaperFacts(requirements=("numpy==0.0.1", "scipy>=1"), files=frozenset({"train.py", "data/train.csv", "data/test.csv", "evaluate.py"}), protected_paths=("evaluate.py", "data/"))

TAILS = {
    "pip cannot find the pinned version": (
        "ERROR: Could not find a version that satisfies the requirement numpy==0.0.1 (from versions: 1.3.0, 2.4.6)\n"
        "ERROR: No matching distribution found for numpy==0.0.1",
        Repair("relax_requirement", "numpy"),
    ),
    "numpy 2 removed an alias": ("AttributeError: `np.NaN` was removed in the NumPy 2.0 release. Use `np.nan` instead.", Repair("pin_requirement", "numpy<2")),
    "numpy 1.24 removed an alias": ("AttributeError: module 'numpy' has no attribute 'float'.\n`np.float` was a deprecated alias", Repair("pin_requirement", "numpy<1.24")),
    "scikit-learn removed a function": ("ImportError: cannot import name 'load_boston' from 'sklearn.datasets' (/x/sklearn/datasets/__init__.py)", Repair("pin_requirement", "scikit-learn<1.2")),
    "CUDA without a GPU": ("AssertionError: Torch not compiled with CUDA enabled", Repair("force_cpu", "cuda")),
    "a path of the author's machine": ("FileNotFoundError: [Errno 2] No such file or directory: '/home/a/data/train.csv'", Repair("relink_path", "/home/a/data/train.csv=data/train.csv")),
    "out of memory": ("numpy._core._exceptions._ArrayMemoryError: Unable to allocate 4.00 GiB for an array", Repair("reduce_batch_size", "2")),
    "CUDA out of memory": ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", Repair("reduce_batch_size", "2")),
    "the time limit": ("epoch 1\n[killed after the 60 s time limit]", Repair("extend_timeout", "2")),
}


@pytest.mark.parametrize("case", sorted(TAILS))
def test_each_covered_failure_gets_its_repair_first(case: str) -> None:
    tail, expected = TAILS[case]
    assert candidates(failure_signature(tail), tail, FACTS)[0] == expected


def test_unknown_failures_and_missing_modules_are_left_to_the_brain() -> None:
    for tail in ("ValueError: shapes do not align", "ModuleNotFoundError: No module named 'yaml'"):
        assert candidates(failure_signature(tail), tail, FACTS) == []


def test_a_missing_file_the_snapshot_does_not_hold_is_not_relinked() -> None:
    tail = "FileNotFoundError: [Errno 2] No such file or directory: 'outputs/model.pt'"
    assert candidates(failure_signature(tail), tail, FACTS) == []


def test_a_remembered_relink_fits_only_the_same_missing_path() -> None:
    remembered = Repair("relink_path", "/home/a/data/train.csv=data/train.csv")
    other = "FileNotFoundError: [Errno 2] No such file or directory: '/srv/x/test.csv'"
    assert not applicable(remembered, failure_signature(other), other, FACTS)
    assert applicable(Repair("extend_timeout", "2"), "anything", "", FACTS)


def test_after_a_failed_repair_the_next_candidate_is_tried_and_the_failure_is_remembered() -> None:
    tail = "MemoryError"
    signature = failure_signature(tail)
    failed = EnvironmentFailed(campaign="c1", stage="smoke", signature=signature, error_tail=tail, attempt=1)
    halved = RepairProposed(campaign="c1", signature=signature, action="reduce_batch_size", argument="2")
    again = failed.model_copy(update={"attempt": 2})
    domain = FixDomain()
    state = domain.initial_state("c1")
    memory = FailureMemory()
    for event in (failed, halved, again):
        state = domain.evolve(state, event)
        memory = learn(memory, event)
    # Step 1: halving did not help here: quartering is proposed next.
    [proposal] = decide_repair(state, again, memory, candidates(signature, tail, FACTS))
    assert (proposal.action, proposal.argument) == ("reduce_batch_size", "4")
    memory = learn(memory, proposal)
    memory = learn(memory, EnvironmentReady(campaign="c1", environment_bin="/e/bin", smoke_seconds=1.0))
    # Step 2: another campaign goes straight to what worked, and never to what failed.
    fresh = domain.evolve(domain.initial_state("c2"), failed.model_copy(update={"campaign": "c2"}))
    [recalled] = decide_repair(fresh, failed.model_copy(update={"campaign": "c2"}), memory, candidates(signature, tail, FACTS))
    assert (recalled.argument, recalled.from_memory) == ("4", True)
    assert Repair("reduce_batch_size", "2") in memory.failed[signature]

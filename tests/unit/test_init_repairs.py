"""How repairs change an environment's specification: requirements, code, time, and its key."""

from __future__ import annotations

import pytest

from services.init.domain import InitDomain, repairs_to_apply
from services.init.repairs import RepairNotApplicable, effective_requirements, environment_key, rewritable, rewrite_sources, source_patch, timeout_factor
from shared.contracts import EnvironmentFailed, RepairProposed

TRAIN = '''DATA = "/home/author/load/data"
BATCH_SIZE = 64
DEVICE = "cuda:0"

def fit(model, batch_size=128):
    model.cuda()
    return open(DATA + "/train.csv")
'''


def test_package_repairs_rewrite_the_requirement_list_in_order() -> None:
    base = ["numpy==0.0.1", "scipy"]
    assert effective_requirements(base, [("relax_requirement", "numpy")]) == ["numpy", "scipy"]
    assert effective_requirements(base, [("relax_requirement", "numpy"), ("pin_requirement", "numpy<2")]) == ["scipy", "numpy<2"]
    assert effective_requirements(base, [("install_package", "tomli_w"), ("extend_timeout", "2")]) == ["numpy==0.0.1", "scipy", "tomli_w"]


def test_code_repairs_change_only_what_they_target() -> None:
    sources = {"train.py": TRAIN}
    cpu = rewrite_sources(sources, [("force_cpu", "cuda")])["train.py"]
    assert 'DEVICE = "cpu"' in cpu and "model.cpu()" in cpu and "BATCH_SIZE = 64" in cpu
    smaller = rewrite_sources(sources, [("reduce_batch_size", "2")])["train.py"]
    assert "BATCH_SIZE = 32" in smaller and "batch_size=64" in smaller
    relinked = rewrite_sources(sources, [("relink_path", "/home/author/load/data/train.csv=data/train.csv")])["train.py"]
    assert 'DATA = "data"' in relinked


def test_a_code_repair_with_nothing_to_change_is_not_applicable() -> None:
    with pytest.raises(RepairNotApplicable, match="reduce_batch_size"):
        rewrite_sources({"train.py": "print('no batches here')\n"}, [("reduce_batch_size", "2")])


def test_protected_files_and_the_task_card_are_never_rewritten() -> None:
    files = ["train.py", "evaluate.py", "data/test.csv", "conf/model.yaml", "autosota.toml", "data/loader.py"]
    assert rewritable(files, ["evaluate.py", "data/"]) == ["conf/model.yaml", "train.py"]


def test_the_patch_turns_the_original_into_the_rewritten_sources() -> None:
    sources = {"train.py": TRAIN, "util.py": "x = 1"}
    patch = source_patch(sources, rewrite_sources(sources, [("force_cpu", "cuda")]))
    assert patch.startswith("--- a/train.py\n+++ b/train.py\n") and "util.py" not in patch
    assert '-DEVICE = "cuda:0"\n+DEVICE = "cpu"\n' in patch


def test_time_factors_multiply_and_are_bounded() -> None:
    assert timeout_factor([("extend_timeout", "2"), ("install_package", "x"), ("extend_timeout", "4")]) == 8.0
    assert timeout_factor([("extend_timeout", "1000")]) == 16.0


def test_equal_specifications_have_equal_keys_and_code_repairs_bind_the_snapshot() -> None:
    key = environment_key(["b", "a"], [("install_package", "a")], "snap1", "/py")
    assert key == environment_key(["a", "b"], [("install_package", "a")], "snap2", "/py")
    assert environment_key(["a"], [("force_cpu", "cuda")], "snap1", "/py") != environment_key(["a"], [("force_cpu", "cuda")], "snap2", "/py")


def test_a_repair_is_kept_when_its_failure_gives_way_and_dropped_when_it_returns() -> None:
    domain = InitDomain()
    state = domain.initial_state("c1")
    proposal = RepairProposed(campaign="c1", signature="MemoryError", action="reduce_batch_size", argument="2")
    state = domain.evolve(state, proposal)
    assert repairs_to_apply(state) == ["reduce_batch_size 2"]
    # Step 1: the same failure came back: the repair is dropped.
    state = domain.evolve(state, EnvironmentFailed(campaign="c1", stage="smoke", signature="MemoryError", error_tail="", attempt=2))
    assert repairs_to_apply(state) == []
    # Step 2: a repair after which another failure shows up is kept.
    state = domain.evolve(state, proposal.model_copy(update={"argument": "4"}))
    state = domain.evolve(state, EnvironmentFailed(campaign="c1", stage="smoke", signature="KeyError: <q>", error_tail="", attempt=3))
    assert state.repairs == ["reduce_batch_size 4"]

"""What init reads from a resolution: the cache key, the requirements uv refused and why, the line
fix's rules answer, and the local CPU builds a CPU pool prefers."""

from __future__ import annotations

from packaging.tags import Tag

from services.fix.domain import PaperFacts
from services.fix.rules import candidates
from services.init.domain import InitDomain
from services.init.resolution import ACCELERATOR_VARIANT, CPU_VARIANT, cache_key, is_package_failure, pinned_lines, preferred_cpu_builds, refusals, summary, variant_of
from shared.brain import failure_signature
from shared.contracts import CampaignStarted, Budget, RepairProposed

NO_VERSION = """error: No solution found when resolving dependencies
  cause: Because there is no version of numpy==0.0.1 and you require numpy==0.0.1, we can conclude that your requirements are unsatisfiable."""
NO_WHEELS = """error: No solution found when resolving dependencies
  cause: Because tensorflow==2.10.0 has no wheels with a matching Python ABI tag (e.g., `cp311`) and you require tensorflow==2.10.0, we can conclude that your requirements are unsatisfiable.

hint: You require CPython 3.11 (`cp311`), but we only found wheels for `tensorflow` (v2.10.0) with the following Python ABI tags: `cp37m`, `cp38`, `cp39`, `cp310`"""
WRONG_PYTHON = """error: No solution found when resolving dependencies
  cause: Because the current Python version (3.11.7) does not satisfy Python>=3.6,<3.10 and numba==0.53.0 depends on Python>=3.6,<3.10, we can conclude that numba==0.53.0 cannot be used."""
NO_BUILD = """Resolved 1 package in 56ms
   Building numpy==1.21.0
error: Failed to build `numpy==1.21.0`
  cause: The build backend returned an error
numpy/core/src/multiarray/nditer_api.c:123:20: warning: writing 1 byte into a region of size 0"""
NOT_FOUND = """error: No solution found when resolving dependencies
  cause: Because nonexistent-pkg-zzq was not found in the package registry and you require nonexistent-pkg-zzq==1.0, we can conclude that your requirements are unsatisfiable."""
CONFLICT = """error: No solution found when resolving dependencies
  cause: Because pandas==2.2.0 depends on numpy{python_full_version < '3.12'}>=1.23.2,<2 and you require numpy==1.22.0, we can conclude that your requirements and pandas==2.2.0 are incompatible.
         And because you require pandas==2.2.0, we can conclude that your requirements are unsatisfiable."""
TORCH_WHEELS = [
    "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
    "torch-2.9.1+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
    "torch-2.14.1-cp311-cp311-manylinux_2_28_x86_64.whl",  # a CUDA build: never preferred on a CPU pool
    "torchvision-0.24.1+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
    "torch-2.13.0+cpu-cp312-cp312-manylinux_2_28_x86_64.whl",  # another Python
]
HERE = [Tag("cp311", "cp311", "manylinux_2_28_x86_64"), Tag("py3", "none", "any")]


def test_equal_pins_on_the_same_python_and_pool_share_one_key() -> None:
    key = cache_key(["b==1", "a==2"], "3.11.7", CPU_VARIANT)
    assert key == cache_key(["a==2", " b==1 ", ""], "3.11.7", CPU_VARIANT)
    assert len({key, cache_key(["a==2", "b==1"], "3.12.1", CPU_VARIANT), cache_key(["a==2", "b==1"], "3.11.7", ACCELERATOR_VARIANT), cache_key(["a==2", "b==1"], "3.11.7", CPU_VARIANT, resolved=False)}) == 4


def test_a_pool_named_cpu_wants_cpu_builds() -> None:
    assert (variant_of("cpu"), variant_of("CPU-large"), variant_of("gpu"), variant_of("a100")) == (CPU_VARIANT, CPU_VARIANT, ACCELERATOR_VARIANT, ACCELERATOR_VARIANT)


def test_the_compiled_list_keeps_only_requirement_lines() -> None:
    assert pinned_lines("# via x\nnumpy==1.26.4\n    # via y\n--find-links /w\nnetworkx==2.8.8  # a comment\n\n") == ["numpy==1.26.4", "networkx==2.8.8"]


def test_each_refusal_names_the_requirement_and_why() -> None:
    assert [(r.requirement, r.why) for r in refusals(NO_VERSION)] == [("numpy==0.0.1", "there is no such version")]
    assert [r.requirement for r in refusals(NO_WHEELS)] == ["tensorflow==2.10.0"] and "Python ABI tag" in refusals(NO_WHEELS)[0].why
    assert [(r.requirement, r.why) for r in refusals(WRONG_PYTHON)] == [("numba==0.53.0", "it needs Python >=3.6,<3.10, this is 3.11.7")]
    assert [(r.requirement, r.why) for r in refusals(NO_BUILD)] == [("numpy==1.21.0", "it does not build for this Python")]
    assert [(r.requirement, r.why) for r in refusals(NOT_FOUND)] == [("nonexistent-pkg-zzq==1.0", "there is no such package")]
    assert refusals(CONFLICT) == [] and is_package_failure(CONFLICT)
    assert not is_package_failure("error: Failed to fetch: `https://pypi.org/simple/numpy/`\n  Caused by: dns error")


def test_the_summary_is_worded_so_that_fix_relaxes_the_stale_pin() -> None:
    paper = PaperFacts(("numpy==0.0.1", "tensorflow==2.10.0", "numba==0.53.0", "pandas==2.2.0", "numpy==1.22.0"))
    for output, relaxed in ((NO_VERSION, ["numpy"]), (NO_WHEELS, ["tensorflow"]), (WRONG_PYTHON, ["numba"]), (NO_BUILD, []), (CONFLICT, ["pandas", "numpy"])):
        line = f"ResolutionError: {summary(output)}"
        signature = failure_signature(f"{output}\n{line}")
        assert signature.startswith("ResolutionError: "), signature
        proposed = [r.argument for r in candidates(signature, f"{output}\n{line}", paper) if r.action == "relax_requirement"]
        if relaxed:
            assert proposed == relaxed, (summary(output), proposed)
    assert summary(NO_VERSION) == "No matching distribution found for numpy==0.0.1 (there is no such version)"
    assert summary(CONFLICT) == "Cannot install pandas==2.2.0 and numpy==1.22.0 because these package versions have conflicting dependencies"
    assert summary("warning: nothing wrong") == ""


def test_a_cpu_pool_prefers_the_newest_local_cpu_build_the_pins_admit() -> None:
    assert preferred_cpu_builds(["torch>=2"], TORCH_WHEELS, HERE) == ["torch==2.13.0+cpu"]
    assert preferred_cpu_builds(["torch<2.10"], TORCH_WHEELS, HERE) == ["torch==2.9.1+cpu"]
    assert preferred_cpu_builds(["torch==2.13.0"], TORCH_WHEELS, HERE) == ["torch==2.13.0+cpu"]
    assert preferred_cpu_builds(["torch>=2.14"], TORCH_WHEELS, HERE) == []  # no local CPU build fits: the index decides
    assert preferred_cpu_builds(["torchvision"], TORCH_WHEELS, HERE) == ["torch==2.13.0+cpu", "torchvision==0.24.1+cpu"]
    assert preferred_cpu_builds(["numpy"], TORCH_WHEELS, HERE) == []
    assert preferred_cpu_builds(["torch ; python_version < '3'"], TORCH_WHEELS, HERE) == []


def test_init_remembers_the_pool_and_the_reason_of_each_repair() -> None:
    domain = InitDomain()
    state = domain.initial_state("c1")
    state = domain.evolve(state, CampaignStarted(campaign="c1", paper_path="p", budget=Budget(), pool="gpu"))
    state = domain.evolve(state, RepairProposed(campaign="c1", signature="ResolutionError: x", action="relax_requirement", argument="numpy"))
    assert state.pool == "gpu" and state.reasons == {"relax_requirement numpy": "ResolutionError: x"}

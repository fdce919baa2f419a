"""Isolated environments, really built: uv installs from a folder of wheels made here (no index, no
network), the cache reuses what it built, concurrent builders build once, a stale pin fails with
a signature fix knows and builds once relaxed, pip takes over without uv; and one environment
from PyPI itself, an old numpy beside the system's NumPy 2.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.util
import os
import platform
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from packaging.tags import sys_tags

from services.fix.domain import PaperFacts
from services.fix.rules import candidates
from services.init.domain import InitState
from services.init.environments import READY_MARK, Toolchain, expose, find_uv, pip_find_links, provide, resolve
from services.init.handlers import _environment
from services.init.repairs import effective_requirements
from services.init.resolution import ACCELERATOR_VARIANT, CPU_VARIANT, preferred_cpu_builds
from shared.brain import failure_signature
from shared.contracts import Objective
from shared.settings import Settings
from shared.workspace import EnvironmentManifest, read_manifest

FIXTURE = "autosota_fixture_a"


def write_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel whose module says its version: METADATA, WHEEL and RECORD as installers check them."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f'__version__ = "{version}"\n',
        f"{dist_info}/METADATA": "Metadata-Version: 2.1\n" + f"Name: {name.replace('_', '-')}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: autosota-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist_info}/RECORD"] = "\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


@pytest.fixture
def wheels(tmp_path: Path) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    write_wheel(folder, FIXTURE, "1.0")
    write_wheel(folder, FIXTURE, "2.0")
    write_wheel(folder, "autosota_fixture_b", "1.0", requires=(f"{FIXTURE.replace('_', '-')}>=2",))
    return folder


def offline(cache: Path, wheels: Path, uv: str | None = None, variant: str = CPU_VARIANT) -> Toolchain:
    return Toolchain(sys.executable, platform.python_version(), cache, find_uv() if uv is None else (uv or None), (str(wheels),), no_index=True, variant=variant)


def python_of(root: Path, code: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(root / "bin" / "python"), "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_an_environment_holds_exactly_its_pins_and_none_of_the_system(tmp_path: Path, wheels: Path) -> None:
    # Step 1: the system interpreter has neither version of the fixture; pydantic is one of its own packages.
    assert importlib.util.find_spec(FIXTURE) is None and importlib.util.find_spec("pydantic") is not None
    provided = asyncio.run(provide([f"{FIXTURE}==1.0"], offline(tmp_path / "envs", wheels)))
    assert provided.outcome.ok, provided.outcome.output_tail
    assert provided.builder == "uv" and not provided.reused and provided.pinned == ("autosota-fixture-a==1.0",)
    # Step 2: inside, the pinned version, and nothing of the system's site-packages.
    assert provided.root is not None
    inside = python_of(provided.root, f"import sys, {FIXTURE}; print({FIXTURE}.__version__); print(sys.prefix); print('\\n'.join(sys.path))")
    version, prefix, *path = inside.stdout.splitlines()
    assert version == "1.0" and Path(prefix) == provided.root
    system_sites = {p for p in sys.path if p.endswith("site-packages")}
    assert system_sites and not system_sites & set(path), path
    assert "No module named 'pydantic'" in python_of(provided.root, "import pydantic").stderr


def test_a_second_build_with_the_same_requirements_reuses_the_environment(tmp_path: Path, wheels: Path) -> None:
    tools = offline(tmp_path / "envs", wheels)
    started = time.monotonic()
    first = asyncio.run(provide([f"{FIXTURE}==2.0", "autosota-fixture-b"], tools))
    built_in = time.monotonic() - started
    assert first.outcome.ok and first.root is not None, first.outcome.output_tail
    before = first.root.stat()
    # Step 1: the same requirements, written differently, resolve to the same pins: the environment is reused as it is.
    started = time.monotonic()
    again = asyncio.run(provide(["autosota-fixture-b", "autosota-fixture-a == 2.0"], tools))
    reused_in = time.monotonic() - started
    print(f"\nfixture environment: first build {built_in:.2f} s, reused {reused_in:.2f} s")
    assert first.pinned == again.pinned
    assert again.reused and again.root == first.root and "reused environment" in again.outcome.output_tail
    after = again.root.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # Step 2: other pins are another environment.
    other = asyncio.run(provide([f"{FIXTURE}==1.0"], tools))
    assert other.outcome.ok and not other.reused and other.key != first.key
    assert sorted(p.name for p in (tmp_path / "envs").iterdir() if not p.name.endswith(".lock")) == sorted([first.root.name, other.root.name])  # type: ignore[union-attr]


def test_conflicting_pins_fail_naming_the_pins_at_fault(tmp_path: Path, wheels: Path) -> None:
    # autosota-fixture-b needs autosota-fixture-a>=2, the paper pins 1.0.
    provided = asyncio.run(provide([f"{FIXTURE}==1.0", "autosota-fixture-b==1.0"], offline(tmp_path / "envs", wheels)))
    assert not provided.outcome.ok
    signature = failure_signature(provided.outcome.output_tail)
    assert signature.startswith("ResolutionError: Cannot install ") and "because these package versions have conflicting dependencies" in signature
    relaxed = candidates(signature, provided.outcome.output_tail, PaperFacts((f"{FIXTURE}==1.0", "autosota-fixture-b==1.0")))
    assert {r.action for r in relaxed} == {"relax_requirement"} and relaxed


def test_concurrent_builders_of_one_key_build_it_once(tmp_path: Path, wheels: Path) -> None:
    tools = offline(tmp_path / "envs", wheels)

    async def both() -> list:  # type: ignore[type-arg]
        return list(await asyncio.gather(provide([f"{FIXTURE}==2.0"], tools), provide([f"{FIXTURE}==2.0"], tools)))

    results = asyncio.run(both())
    assert all(r.outcome.ok for r in results), [r.outcome.output_tail for r in results]
    assert sorted(r.reused for r in results) == [False, True]  # the second waited for the lock, then found it ready
    assert len({r.root for r in results}) == 1
    leftovers = [p.name for p in (tmp_path / "envs").iterdir() if p.name.startswith(".building-")]
    assert leftovers == []


def test_a_pin_that_does_not_exist_fails_with_a_clear_signature_and_relaxing_it_builds(tmp_path: Path, wheels: Path) -> None:
    tools = offline(tmp_path / "envs", wheels)
    # Step 1: a stale pin: the resolution fails, and the last line says which requirement, in words fix's rules know.
    paper = [f"{FIXTURE}==3.0"]
    failed = asyncio.run(provide(paper, tools))
    assert not failed.outcome.ok and failed.root is None
    signature = failure_signature(failed.outcome.output_tail)
    assert signature == "ResolutionError: No matching distribution found for autosota-fixture-a==<n> (there is no such version)", signature
    assert not list((tmp_path / "envs").glob("*/bin"))
    # Step 2: fix's rule proposes relaxing the pin; the relaxed requirement builds.
    proposed = candidates(signature, failed.outcome.output_tail, PaperFacts(tuple(paper)))
    assert [(r.action, r.argument) for r in proposed] == [("relax_requirement", "autosota-fixture-a")]
    relaxed = effective_requirements(paper, [("relax_requirement", "autosota-fixture-a")])
    built = asyncio.run(provide(relaxed, tools))
    assert built.outcome.ok and built.pinned == ("autosota-fixture-a==2.0",), built.outcome.output_tail
    # Step 3: a repair may relax to a lower bound instead of dropping the pin.
    bounded = effective_requirements([f"{FIXTURE}==0.5"], [("relax_requirement", "autosota-fixture-a>=0.5")])
    assert bounded == ["autosota-fixture-a>=0.5"]
    assert asyncio.run(provide(bounded, tools)).pinned == ("autosota-fixture-a==2.0",)


def test_without_uv_pip_builds_the_same_isolated_environment(tmp_path: Path, wheels: Path) -> None:
    provided = asyncio.run(provide([f"{FIXTURE}==1.0"], offline(tmp_path / "envs", wheels, uv="")))
    assert provided.outcome.ok and provided.builder == "pip" and provided.pinned is None, provided.outcome.output_tail
    assert provided.root is not None and provided.root.name == provided.key[:24]
    assert python_of(provided.root, f"import {FIXTURE}; print({FIXTURE}.__version__)").stdout.strip() == "1.0"
    assert "No module named 'pydantic'" in python_of(provided.root, "import pydantic").stderr
    # its scripts were written for the folder it was built in, and name the folder it was renamed to
    pip_script = (provided.root / "bin" / "pip").read_text()
    assert str(provided.root) in pip_script and ".building-" not in pip_script


def test_a_view_runs_the_cached_environment_with_its_own_manifest(tmp_path: Path, wheels: Path) -> None:
    provided = asyncio.run(provide([f"{FIXTURE}==1.0"], offline(tmp_path / "envs", wheels)))
    assert provided.root is not None
    manifest = EnvironmentManifest(spec_sha256="s", requirements=(f"{FIXTURE}==1.0",), timeout_factor=2.0, builder="uv")
    view = expose(provided.root, tmp_path / "data" / "envs" / "spec-1", manifest)
    assert read_manifest(view / "bin") == manifest and (view / READY_MARK).is_file()
    assert python_of(view, f"import {FIXTURE}; print({FIXTURE}.__version__)").stdout.strip() == "1.0"
    assert "No module named 'pydantic'" in python_of(view, "import pydantic").stderr
    assert expose(provided.root, view, manifest) == view  # made once


def test_init_records_the_builder_the_pins_and_the_reason_of_each_repair(tmp_path: Path, wheels: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", env_cache_dir=tmp_path / "envs", wheel_dirs=str(wheels))
    ctx = SimpleNamespace(settings=settings, artifacts=None)
    objective = Objective(title="t", method="m", primary_metric="x", direction="maximize", reported_value=1.0, reported_source="p", protected_paths=[], train_command="true", evaluate_command="true", requirements=[f"{FIXTURE}==3.0"])
    state = InitState(reasons={"relax_requirement autosota-fixture-a": "ResolutionError: No matching distribution found for autosota-fixture-a==<n> (there is no such version)"})
    failed = asyncio.run(_environment(objective, "snap", [], state, ctx))  # type: ignore[arg-type]
    assert not failed.outcome.ok and "No matching distribution found for autosota-fixture-a==3.0" in failed.outcome.output_tail
    built = asyncio.run(_environment(objective, "snap", ["relax_requirement autosota-fixture-a"], state, ctx))  # type: ignore[arg-type]
    assert built.outcome.ok and built.environment_bin.endswith("-repaired/bin"), built.outcome.output_tail
    manifest = read_manifest(built.environment_bin)
    assert manifest is not None and manifest.builder == "uv" and manifest.resolved == ("autosota-fixture-a==2.0",)
    assert manifest.repairs == ("relax_requirement autosota-fixture-a",) and manifest.repair_reasons[0].startswith("ResolutionError: No matching distribution")
    assert Path(built.environment_bin).parent.parent == (tmp_path / "data" / "envs").resolve()


def test_on_a_cpu_pool_the_local_cpu_build_of_torch_is_preferred(tmp_path: Path) -> None:
    # Only the resolution: the pinned list names the CPU build lying on this disk; nothing is installed.
    local = [name for folder in pip_find_links() for name in os.listdir(folder) if name.startswith("torch-") and "+cpu" in name]
    supported = set(sys_tags())
    fitting = [name for name in local if preferred_cpu_builds(["torch"], [name], supported)]
    if not fitting:
        pytest.skip("no local CPU build of torch for this Python in pip's find-links (it lies on the project's machines)")
    tools = Toolchain(sys.executable, platform.python_version(), tmp_path / "envs", find_uv(), pip_find_links(), variant=CPU_VARIANT)
    resolved = asyncio.run(resolve(["torch>=2"], tools, tmp_path))
    assert resolved.outcome.ok, resolved.outcome.output_tail
    assert any(line.startswith("torch==") and "+cpu" in line for line in resolved.pinned or ()), resolved.pinned
    assert not any(line.startswith("nvidia-") for line in resolved.pinned or ())
    accelerator = Toolchain(sys.executable, platform.python_version(), tmp_path / "envs", find_uv(), pip_find_links(), variant=ACCELERATOR_VARIANT)
    assert asyncio.run(resolve(["torch==2.13.0"], accelerator, tmp_path)).key != resolved.key


def test_an_old_numpy_from_pypi_lives_beside_the_systems_numpy_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy

    assert numpy.__version__.startswith("2.")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))  # a cold download cache: the first build downloads
    tools = Toolchain(sys.executable, platform.python_version(), tmp_path / "envs", find_uv(), pip_find_links())
    paper = ["numpy<2", "networkx==2.8.8"]
    started = time.monotonic()
    first = asyncio.run(provide(paper, tools))
    built_in = time.monotonic() - started
    assert first.outcome.ok and first.root is not None, first.outcome.output_tail
    started = time.monotonic()
    again = asyncio.run(provide(paper, tools))
    reused_in = time.monotonic() - started
    print(f"\nnumpy<2 + networkx==2.8.8 from PyPI: first build {built_in:.2f} s (cold uv cache), reused {reused_in:.2f} s")
    assert again.reused and again.root == first.root
    inside = python_of(first.root, "import numpy, networkx; print(numpy.__version__, networkx.__version__)").stdout.split()
    assert inside[0].startswith("1.") and inside[1] == "2.8.8", inside
    assert reused_in < built_in

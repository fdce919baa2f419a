"""The docker backend against a real container engine: Podman's Docker-compatible socket.

`scripts/setup-podman.sh` installs Podman, starts its API socket and builds the experiment
image locally (no registry is reachable); it needs root. A real experiment (the forecaster
example's baseline) runs through a runner whose sandbox is the docker backend, with a probe
that tries to reach the network and to tamper with the protected evaluation files.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.workspace import pack
from tests.integration.test_runner_leases import Bus, drop_runner_streams, runner, work_item  # noqa: F401 - fixture
from tests.integration.test_runner_sandbox import PROBE, probe_report

pytestmark = pytest.mark.nats
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tiny-forecaster"


@pytest.fixture(scope="session")
def docker_url() -> Iterator[str]:
    """The socket of a Docker-compatible engine with the experiment image, set up once per session."""
    if os.geteuid() != 0:
        pytest.skip("setting up Podman needs root")
    setup = subprocess.run(["bash", str(ROOT / "scripts" / "setup-podman.sh")], capture_output=True, text=True, timeout=1200)
    if setup.returncode != 0:
        pytest.fail(f"scripts/setup-podman.sh failed:\n{setup.stderr[-3000:]}")
    yield setup.stdout.strip().splitlines()[-1]


def test_the_engine_serves_the_experiment_image(docker_url: str) -> None:
    import docker

    client = docker.DockerClient(base_url=docker_url)
    assert client.ping()
    assert client.images.get("localhost/autosota/experiment:latest")


async def test_a_real_experiment_in_a_container_reaches_no_network_and_cannot_touch_protected_files(settings, docker_url: str, tmp_path: Path, nats_url: str) -> None:  # type: ignore[no-untyped-def]
    campaign = f"docker-{uuid.uuid4().hex[:6]}"
    paper = tmp_path / "paper"
    shutil.copytree(EXAMPLE, paper, ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    (paper / "probe.py").write_text(PROBE)
    protected = ["evaluate.py", "data/"]
    snapshot = pack(paper)
    originals = {path: digest for path, digest in snapshot.files.items() if path == "evaluate.py" or path.startswith("data/")}
    configured = settings.model_copy(update={"sandbox_backend": "docker", "docker_url": docker_url, "work_ack_wait_seconds": 10.0})
    async with Bus(configured) as bus, runner(configured, "runner-docker"):
        digest = await bus.snapshot(paper)
        # Step 1: the baseline's training, preceded by the probe, then the frozen evaluation.
        item = work_item(campaign, digest, 0).model_copy(
            update={
                "train_command": "python probe.py 127.0.0.1 4222 evaluate.py data/test.csv probe-was-here.txt > probe.txt; python train.py",
                "evaluate_command": "cat probe.txt; python evaluate.py",
                "protected_paths": protected,
                "params": {},
            }
        )
        await bus.dispatch(item)
        [result] = await bus.wait_for_results(campaign, 1, timeout=180)
    # Step 2: the experiment ran and scored, in a container without network.
    assert result["event_type"] == "JobCompleted", result.get("reason", "") + result.get("output_tail", "")
    assert set(result["metrics"]) == {"rmse", "mae"} and 0 < result["metrics"]["rmse"] < 1
    report = probe_report(result["output_tail"])
    assert report["nats"].startswith("blocked") and report["internet"] == "blocked: Network is unreachable"
    # Step 3: the protected files could not be written, and hash as they did in the snapshot.
    assert report["evaluate.py"] == report["data/test.csv"] == "denied: Read-only file system"
    assert report["probe-was-here.txt"] == "written"
    assert result["protected_hashes"] == originals


def test_the_container_config_carries_the_limits(docker_url: str, tmp_path: Path) -> None:
    from shared.sandbox import Isolation, Limits
    from shared.sandboxes.docker import DockerSandbox

    (tmp_path / "evaluate.py").write_text("")
    sandbox = DockerSandbox(base_url=docker_url, owner="runner-x")
    config = sandbox.container_config("python train.py", tmp_path, {"A": "1"}, Limits(memory_bytes=2**30, cpus=1.5, gpu_devices=("1",)), Isolation(read_only=("evaluate.py", "../escape")))
    assert config["network_mode"] == "none" and config["read_only"] is True and config["cap_drop"] == ["ALL"]
    assert config["mem_limit"] == 2**30 and config["nano_cpus"] == 1_500_000_000
    assert config["device_requests"][0]["DeviceIDs"] == ["1"] and config["environment"]["CUDA_VISIBLE_DEVICES"] == "1"
    assert {v["bind"]: v["mode"] for v in config["volumes"].values()} == {"/workspace": "rw", "/workspace/evaluate.py": "ro"}
    assert json.dumps(config["labels"]) == json.dumps({"autosota.runner": "runner-x"})
    assert asyncio.iscoroutinefunction(sandbox.run)


async def test_a_container_job_is_bounded_for_its_whole_tree_and_says_which_limit_ended_it(docker_url: str, tmp_path: Path) -> None:
    from shared.sandbox import Isolation, Limits
    from shared.sandboxes.docker import DockerSandbox

    sandbox = DockerSandbox(base_url=docker_url, owner="runner-limits")
    (tmp_path / "hog.py").write_text(
        "import os, time\n"
        "for _ in range(3):\n"
        "    if os.fork() == 0:\n"
        "        hog = b'x' * (300 * 2**20)\n"  # 900 MiB for the job, 300 MiB per process
        "        time.sleep(20)\n"
        "        os._exit(0)\n"
        "statuses = [os.wait()[1] for _ in range(3)]\n"
        "raise SystemExit(f'workers died: {statuses}' if any(statuses) else 0)\n"  # as a worker pool does
    )
    (tmp_path / "bomb.py").write_text("import os, time\nfor _ in range(200):\n    if os.fork() == 0:\n        time.sleep(20)\n        os._exit(0)\n")
    (tmp_path / "big.py").write_text("hog = b'x' * (900 * 2**20)\n")
    (tmp_path / "line.py").write_text("import sys\nsys.stdout.write('x' * (200 * 2**20))\n")
    limits = Limits(wall_seconds=30, memory_bytes=512 * 2**20, processes=32)
    hog = await sandbox.run("python hog.py", tmp_path, "", {}, limits, Isolation())
    bomb = await sandbox.run("python bomb.py", tmp_path, "", {}, limits, Isolation())
    line = await sandbox.run("python line.py", tmp_path, "", {}, limits, Isolation())
    big = await sandbox.run("python big.py", tmp_path, "", {}, limits, Isolation())
    assert big.killed_for == "memory" and "AUTOSOTA_RUNNER_MEMORY_BYTES sets it" in big.output_tail, big
    # the kernel kills the container's largest process at the limit; the job fails instead of holding more
    assert not hog.ok and "workers died" in hog.output_tail, hog
    assert hog.limits_applied == "docker container: memory 0.5 GiB, 32 processes"
    assert not bomb.ok and bomb.duration_seconds < 25 and "Resource temporarily unavailable" in bomb.output_tail, bomb
    assert line.ok and len(line.output_tail) < 10_000, len(line.output_tail)

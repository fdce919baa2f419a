"""An example paper broken in each covered way: every campaign repairs its environment and goes on,
and a second campaign on the same broken paper uses the failure memory, without a new attempt.

The breaks, applied to a copy of the forecaster example: a module its requirements forget, a
pinned version that does not exist, an API removed by the installed numpy, a hard-coded CUDA
device on a CPU-only runner, a data path from the author's machine, a batch that does not fit
the memory limit, and a smoke run slower than the paper's time limit. Installing the older
numpy and the forgotten module needs the package index, as on the project's machines and in CI.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.cli import campaign_events, request_start
from shared.contracts import Budget, Event
from shared.embedded import Stack
from shared.settings import Settings
from tests.integration.test_runner_leases import drop_runner_streams  # noqa: F401 - fixture

pytestmark = [pytest.mark.e2e, pytest.mark.nats]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny-forecaster"


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def forgotten_module(paper: Path) -> None:
    _edit(paper / "train.py", "import numpy as np\n", "import numpy as np\nimport tomli_w  # used for nothing; the requirements forget it\n")


def impossible_pin(paper: Path) -> None:
    (paper / "requirements.txt").write_text("numpy==0.0.1\n")


def removed_api(paper: Path) -> None:
    _edit(paper / "train.py", "HORIZON = 24  # day-ahead, hourly\n", "HORIZON = 24  # day-ahead, hourly\nMISSING = np.NaN  # an alias NumPy 2 removed\n")


def hard_coded_cuda(paper: Path) -> None:
    _edit(
        paper / "train.py",
        "BATCH_SIZE = 64\n",
        'BATCH_SIZE = 64\nDEVICE = "cuda:0"\n\n\ndef to_device(array, device=DEVICE):\n'
        '    if device != "cpu" and not os.environ.get("CUDA_VISIBLE_DEVICES"):  # what moving to a GPU does without one\n'
        '        raise RuntimeError("Found no NVIDIA driver on your system. Please check that you have an NVIDIA GPU and installed a driver")\n'
        "    return array\n",
    )
    _edit(paper / "train.py", "    model = MLP(", "    x_tr, y_tr = to_device(x_tr), to_device(y_tr)\n    model = MLP(")


def authors_data_path(paper: Path) -> None:
    _edit(paper / "train.py", 'DATA = os.path.join(HERE, "data")', 'DATA = "/home/author/experiments/load-forecasting/data"')


def batch_too_large(paper: Path) -> None:
    # Scratch space per batch row, written: 64 rows need 4 GiB, beyond the job's 4 GiB memory limit with the interpreter.
    _edit(paper / "train.py", "    m = [np.zeros_like(p) for p in model.params]\n", "    scratch = np.ones(BATCH_SIZE * 2**23)\n    m = [np.zeros_like(p) for p in model.params]\n")


def slow_smoke(paper: Path) -> None:
    _edit(paper / "autosota.toml", "timeout_seconds = 60", "timeout_seconds = 8")
    _edit(paper / "train.py", "def main():\n", "def main():\n    import time\n    time.sleep(8.5)  # a slow start the paper's time limit did not foresee\n")


BREAKS: dict[str, tuple[Callable[[Path], None], str]] = {
    "forgotten-module": (forgotten_module, "install_package"),
    "impossible-pin": (impossible_pin, "relax_requirement"),
    "removed-api": (removed_api, "pin_requirement"),
    "hard-coded-cuda": (hard_coded_cuda, "force_cpu"),
    "authors-data-path": (authors_data_path, "relink_path"),
    "batch-too-large": (batch_too_large, "reduce_batch_size"),
    "slow-smoke": (slow_smoke, "extend_timeout"),
}


def broken_papers(root: Path) -> dict[str, Path]:
    papers = {}
    for name, (breaking, _) in BREAKS.items():
        paper = root / name
        shutil.copytree(EXAMPLE, paper, ignore=shutil.ignore_patterns("outputs", "__pycache__"))
        breaking(paper)
        papers[name] = paper
    return papers


def start_all(settings: Settings, papers: dict[str, Path], round_: int) -> dict[str, str]:
    campaigns = {}
    budget = Budget(max_experiments=1, verification_seeds=2, parallelism=1, wall_clock_seconds=900)
    for name, paper in papers.items():
        campaign = f"{name}-r{round_}-{uuid.uuid4().hex[:4]}"
        request = {"campaign": campaign, "paper_path": str(paper), "budget": budget.model_dump(), "pool": "cpu"}
        assert asyncio.run(request_start(settings.nats_url, settings.subjects, request))["accepted"]
        campaigns[name] = campaign
    return campaigns


def wait_for_baselines(settings: Settings, campaigns: dict[str, str], timeout: float = 420) -> dict[str, list[Event]]:
    """Each campaign's events once its baseline is reproduced (or it ended)."""
    deadline = time.monotonic() + timeout
    events: dict[str, list[Event]] = {}
    pending = dict(campaigns)
    while pending and time.monotonic() < deadline:
        for name, campaign in list(pending.items()):
            found = asyncio.run(campaign_events(settings.nats_url, settings.subjects, campaign))
            events[name] = found
            if any(e.event_type in ("BaselineReproduced", "CampaignCompleted") for e in found):
                del pending[name]
        time.sleep(1.0)
    assert not pending, {name: [e.event_type for e in events.get(name, [])][-8:] for name in pending}
    return events


def of_type(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e.event_type == kind]


def test_every_covered_break_is_repaired_and_remembered(settings: Settings, tmp_path: Path) -> None:
    papers = broken_papers(tmp_path)
    with Stack(settings.data_dir, namespace=settings.namespace, runners=2, nats_url=settings.nats_url):
        # Step 1: a campaign on each broken paper.
        first = wait_for_baselines(settings, start_all(settings, papers, 1))
        # Step 2: once all are repaired, the same broken papers again, in new campaigns.
        second = wait_for_baselines(settings, start_all(settings, papers, 2))
    for name, (_, action) in BREAKS.items():
        events = first[name]
        # Step 3: the first time, the failure was recognised and the covered repair made it work.
        assert of_type(events, "BaselineReproduced"), f"{name}: {[(e.event_type, getattr(e, 'reason', getattr(e, 'signature', ''))) for e in events][-10:]}"
        proposed = of_type(events, "RepairProposed")
        assert action in [p.action for p in proposed], f"{name}: {[(p.action, p.argument) for p in proposed]}"
        ready = of_type(events, "EnvironmentReady")[0]
        assert any(applied.startswith(action) for applied in ready.repairs_applied), f"{name}: {ready.repairs_applied}"
        assert not of_type(events, "RepairExhausted") and not of_type(events, "JobFailed")
        # Step 4: the second time, memory answered the first failure, and nothing else was tried.
        again = second[name]
        assert of_type(again, "BaselineReproduced"), f"{name} (second): {[e.event_type for e in again][-10:]}"
        failures = of_type(again, "EnvironmentFailed")
        repairs = of_type(again, "RepairProposed")
        assert len(repairs) == len(failures) == len(ready.repairs_applied), f"{name}: {[(r.action, r.argument, r.from_memory) for r in repairs]}"
        assert all(r.from_memory for r in repairs)
        assert of_type(again, "EnvironmentReady")[0].environment_bin == ready.environment_bin  # the cached environment

"""Protection down to a function, on a real runner: a patch may edit the training function of a
file whose test function it may not touch.

The repository is the gcn-flags fixture (one script that trains and tests, in the style of
published GCN code). Its `test` function and everything it calls in the repository are recorded
as digests, as the supervisor records them; the runner reports which of them a run changed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from shared.contracts import WorkItem
from shared.metrics import MetricSource
from shared.protection import symbol_digests
from shared.settings import Settings
from tests.integration.test_runner_leases import Bus, drop_runner_streams, runner  # noqa: F401

pytestmark = pytest.mark.nats
REPO = Path(__file__).resolve().parents[1] / "fixtures" / "repos" / "gcn-flags"


def diff_of(repo: Path, path: str, old: str, new: str) -> str:
    """The unified diff of one edit, as `git diff` writes it."""
    work = repo.parent / f"edit-{uuid.uuid4().hex[:6]}"
    shutil.copytree(repo, work)
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    subprocess.run(["git", "add", "-A"], cwd=work, check=True)
    target = work / path
    text = target.read_text()
    assert old in text, old
    target.write_text(text.replace(old, new, 1))
    return subprocess.run(["git", "diff"], cwd=work, check=True, capture_output=True, text=True).stdout


def job(campaign: str, snapshot: str, name: str, patch: str | None, digests: dict[str, str]) -> WorkItem:
    return WorkItem(
        campaign=campaign, experiment_id=f"job-{name}", purpose="idea", dispatcher="test", snapshot_sha256=snapshot,
        params={}, seed=0, patch=patch, train_command="python train.py --epochs 20", evaluate_command="",
        environment_bin=str(Path(sys.executable).parent), protected_paths=["data"], timeout_seconds=60,
        protected_symbols=digests, metrics=MetricSource(patterns={"accuracy": "Test set results:.*accuracy="}),
    )


async def test_a_patch_to_the_training_function_runs_and_one_to_the_test_function_is_reported(settings: Settings, tmp_path: Path) -> None:
    repo = tmp_path / "gcn-flags"
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    sources = {path.relative_to(repo).as_posix(): path.read_text() for path in sorted(repo.rglob("*.py"))}
    digests = symbol_digests(sources, ["train.py::test"])
    patches = {
        "honest": None,
        # the training function of the same file: free to change
        "training": diff_of(repo, "train.py", "model.step(labels, idx_train, args.lr, args.weight_decay)", "model.step(labels, idx_train, 2 * args.lr, args.weight_decay)"),
        # the test function itself
        "test": diff_of(repo, "train.py", 'acc_test = accuracy(output[idx_test], labels[idx_test])', 'acc_test = min(1.0, 1.1 * accuracy(output[idx_test], labels[idx_test]))'),
        # what it calls, in another module
        "callee": diff_of(repo, "utils.py", "return float((preds == labels).mean())", "return float((preds == labels).mean()) ** 0.5"),
        # a second definition of it further down the file, leaving the first untouched
        "shadow": diff_of(repo, "train.py", "t_total = time.time()", "def test():\n    print('Test set results: loss= 0.0 accuracy= 0.99')\n\n\nt_total = time.time()"),
    }
    campaign = f"protected-{uuid.uuid4().hex[:6]}"
    async with Bus(settings) as bus:
        snapshot = await bus.snapshot(repo)
        for name, patch in patches.items():
            await bus.dispatch(job(campaign, snapshot, name, patch, digests))
        async with runner(settings, "runner-protected"):
            results = await bus.wait_for_results(campaign, len(patches), timeout=120)
    by_name = {r["experiment_id"].removeprefix("job-"): r for r in results}
    assert {name: r["event_type"] for name, r in by_name.items()} == dict.fromkeys(patches, "JobCompleted"), {n: r.get("reason") for n, r in by_name.items()}
    assert by_name["honest"]["changed_symbols"] == {} and by_name["training"]["changed_symbols"] == {}
    assert list(by_name["test"]["changed_symbols"]) == ["train.py::test"]
    assert "utils.py::accuracy" in by_name["callee"]["changed_symbols"]
    assert "train.py::test" in by_name["shadow"]["changed_symbols"], by_name["shadow"]["changed_symbols"]

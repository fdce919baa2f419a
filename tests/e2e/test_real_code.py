"""Repositories written the way published ML code is, run as they are: no adapter script.

Each fixture under tests/fixtures/repos takes its hyperparameters its own way and reports its
metrics its own way, and only its task card says how:

- gcn-flags: argparse flags (`--lr`, `--hidden`, `--seed`); one script trains and tests, and its
  result is the printed `Test set results: loss= ... accuracy= ...` line; its training imports
  the repository's own models.py and utils.py.
- yaml-config: keys of configs/base.yaml (`optim.lr`, `optim.epochs`); the evaluation writes
  outputs/results.json with the accuracy in percent.
- module-constants: `LEARNING_RATE = ...` and `EPOCHS: int = ...` in train.py, one parameter
  through the params file, the seed from `$SEED`; the accuracy is printed as `test_acc=87.50%`.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from shared.embedded import Stack
from shared.settings import Settings
from tests.e2e.test_campaigns import ROOT, assert_exactly_once, cli, events_of

pytestmark = [pytest.mark.e2e, pytest.mark.nats]
REPOS = ROOT / "tests" / "fixtures" / "repos"


def campaign_on(settings: Settings, tmp_path: Path, repo: str) -> tuple[str, str, list]:  # type: ignore[type-arg]
    paper = tmp_path / repo
    shutil.copytree(REPOS / repo, paper, ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    campaign = f"{repo}-{uuid.uuid4().hex[:6]}"
    run = cli(settings, "run", str(paper), "--campaign", campaign, "--budget-experiments", "3")
    assert run.returncode == 0, run.stdout + run.stderr
    events = events_of(settings, campaign)
    assert_exactly_once(events)
    replay = cli(settings, "replay", campaign)
    assert replay.stdout.strip() and replay.stdout in run.stdout
    return campaign, run.stdout, events


def baseline_and_ideas(events: list) -> tuple[object, list, list]:  # type: ignore[type-arg]
    reproduced = next(e for e in events if e.event_type == "BaselineReproduced")
    jobs = [e for e in events if e.event_type == "JobCompleted"]
    assert not [e for e in events if e.event_type == "ResultRejected" and e.purpose == "baseline"], "the paper itself was rejected"
    assert reproduced.reproduced, reproduced
    return reproduced, [j for j in jobs if j.purpose == "baseline"], [j for j in jobs if j.purpose == "idea"]


def test_real_repositories_run_as_they_are(settings: Settings, tmp_path: Path) -> None:
    with Stack(settings.data_dir, namespace=settings.namespace, runners=2, nats_url=settings.nats_url):
        flags = campaign_on(settings, tmp_path, "gcn-flags")
        config = campaign_on(settings, tmp_path, "yaml-config")
        constants = campaign_on(settings, tmp_path, "module-constants")

    # flags: the seed and each parameter reach argparse; the printed test line is the metric
    reproduced, baseline, ideas = baseline_and_ideas(flags[2])
    assert [round(j.metrics["accuracy"], 4) for j in sorted(baseline, key=lambda j: j.experiment_id)] == [0.8313, 0.8625, 0.825]
    assert sorted(j.train_command for j in baseline) == [f"python train.py --epochs 200 --hidden 16 --lr 0.01 --seed {seed}" for seed in range(3)]
    assert ideas, "no idea ran"
    for job in ideas:
        assert "--lr " in job.train_command and "--hidden " in job.train_command, job.train_command
        assert any(line.endswith("via flag --lr") for line in job.applied), job.applied
    assert "via flag --lr" in (settings.data_dir / "reports" / f"{flags[0]}.md").read_text()
    # only the test function is protected, with what it calls in the repository's own modules
    protection = next(e for e in flags[2] if e.event_type == "ProtectionEstablished")
    assert {"train.py::test", "utils.py::accuracy", "utils.py::nll_loss"} <= set(protection.protected_symbols)  # type: ignore[attr-defined]
    assert "train.py::train" not in protection.protected_symbols and "train.py" not in protection.protected_files  # type: ignore[attr-defined]
    assert not [guard for guard in protection.shadow_guards if guard in ("models.py", "utils.py")]  # type: ignore[attr-defined]

    # YAML keys: the config is edited in the workspace copy; the metric is the results file's percent
    reproduced, baseline, ideas = baseline_and_ideas(config[2])
    assert abs(reproduced.mean - (0.875 + 0.8688 + 0.875) / 3) < 1e-9  # type: ignore[attr-defined]
    for job in ideas:
        assert "configs/base.yaml" in job.applied_patch and "-  lr: 0.02         # tuned on the validation split" in job.applied_patch, job.applied_patch
        assert "# tuned on the validation split" in job.applied_patch.split("+  lr:")[1].splitlines()[0]  # the comment stays
    assert (REPOS / "yaml-config" / "configs" / "base.yaml").read_text().count("lr: 0.02") == 1  # the repository itself is untouched

    # constants and the params file; the seed through the environment; percent printed
    reproduced, baseline, ideas = baseline_and_ideas(constants[2])
    assert sorted(round(j.metrics["accuracy"], 4) for j in baseline) == [0.8688, 0.875, 0.8875]
    for job in ideas:
        assert "-LEARNING_RATE = 0.01  # Table 3" in job.applied_patch and "-EPOCHS: int = 120" in job.applied_patch, job.applied_patch
        assert "seed=0 via $SEED" in job.applied and not [line for line in job.applied if "weight_decay" in line]  # the params file carries it


def test_an_evaluation_that_prints_nothing_the_card_names_fails_with_what_it_did_print(settings: Settings, tmp_path: Path) -> None:
    paper = tmp_path / "renamed-metric"
    shutil.copytree(REPOS / "gcn-flags", paper, ignore=shutil.ignore_patterns("outputs", "__pycache__"))
    card = paper / "autosota.toml"
    card.write_text(card.read_text().replace('patterns = { accuracy = "Test set results:.*accuracy=" }', 'patterns = { accuracy = "Final test accuracy" }'))
    campaign = f"renamed-{uuid.uuid4().hex[:6]}"
    with Stack(settings.data_dir, namespace=settings.namespace, runners=2, nats_url=settings.nats_url):
        run = cli(settings, "run", str(paper), "--campaign", campaign, "--budget-experiments", "1")
    assert run.returncode == 1, run.stdout + run.stderr
    failures = [e for e in events_of(settings, campaign) if e.event_type == "JobFailed" and e.stage == "metrics"]
    assert failures, run.stdout
    reason = failures[0].reason  # type: ignore[attr-defined]
    assert "no output line matches the pattern for 'accuracy'" in reason and "Test set results: loss=" in reason, reason

"""Every ending a campaign can have prints one summary: the one `run` printed, the report holds and
`replay` rebuilds afterwards from the stream alone.

Certified, failed baseline and stopped by a person have their own tests (test_campaigns and
test_withdrawal); these are the two endings a search reaches without a win: no idea beats the
baseline, and the wall-clock budget runs out while ideas are still training.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from shared.settings import Settings
from shared.embedded import Stack
from tests.e2e.test_campaigns import assert_exactly_once, cli, events_of

pytestmark = [pytest.mark.e2e, pytest.mark.nats]

CARD = """[paper]
title = "A Paper Whose Defaults Are Already Best"
text = "paper.md"
method = "Flat (ours)"

[objective]
primary_metric = "rmse"
direction = "minimize"
reported_value = 0.501
protected_paths = ["evaluate.py"]

[environment]
requirements = "requirements.txt"
smoke_command = "python train.py --smoke && python evaluate.py"

[experiment]
train_command = "python train.py"
evaluate_command = "python evaluate.py"
timeout_seconds = 120
baseline_seeds = [0, 1, 2]

[search_space.width]
type = "int"
low = 1
high = 64
baseline = 8
"""
# Any width but the paper's own is worse, so no idea can win; an idea's training takes as long as
# the paper says in `idea_seconds.txt`, which the budget test sets long.
TRAIN = """import json, os, sys, time
config = json.load(open(os.environ["AUTOSOTA_PARAMS"])) if os.environ.get("AUTOSOTA_PARAMS") else {"seed": 0, "params": {}}
seed, width = config["seed"], int(config["params"].get("width", 8))
if width != 8 and "--smoke" not in sys.argv:
    time.sleep(float(open("idea_seconds.txt").read()))
os.makedirs("outputs", exist_ok=True)
open("outputs/score.txt", "w").write(str((0.5 if width == 8 else 0.6) + 0.001 * (seed % 3)))
"""
EVALUATE = """import json
print(json.dumps({"rmse": float(open("outputs/score.txt").read())}))
"""


def flat_paper(folder: Path, idea_seconds: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "autosota.toml").write_text(CARD)
    (folder / "paper.md").write_text("# Flat\n\nOur model reaches an RMSE of 0.501 with width 8.\n")
    (folder / "requirements.txt").write_text("")
    (folder / "train.py").write_text(TRAIN)
    (folder / "evaluate.py").write_text(EVALUATE)
    (folder / "idea_seconds.txt").write_text(str(idea_seconds))
    return folder


def assert_one_summary(settings: Settings, campaign: str, printed: str) -> str:
    replay = cli(settings, "replay", campaign)
    assert replay.returncode == 0 and replay.stdout.strip(), replay.stdout + replay.stderr
    assert replay.stdout in printed, f"replay:\n{replay.stdout}\nrun:\n{printed}"
    report = (settings.data_dir / "reports" / f"{campaign}.md").read_text()
    summary = next(line for line in replay.stdout.splitlines() if "not_improved" in line)
    assert summary.split(": ", 1)[-1] in report, report[:2000]
    return replay.stdout


def test_a_search_that_finds_nothing_better_ends_not_improved_with_its_reason(settings: Settings, tmp_path: Path) -> None:
    campaign = f"flat-{uuid.uuid4().hex[:6]}"
    with Stack(settings.data_dir, namespace=settings.namespace, runners=2, nats_url=settings.nats_url):
        run = cli(settings, "run", str(flat_paper(tmp_path / "flat", idea_seconds=0)), "--campaign", campaign, "--budget-experiments", "4")
    assert run.returncode == 0, run.stdout + run.stderr  # a search that ran to its end, without a win
    events = events_of(settings, campaign)
    completed = next(e for e in events if e.event_type == "CampaignCompleted")
    assert completed.outcome == "not_improved"  # type: ignore[attr-defined]
    assert completed.reason == "no idea beat the reproduced baseline; the experiment budget was spent (4 idea experiment(s) ran of 4)"  # type: ignore[attr-defined]
    assert "SotaCertified" not in [e.event_type for e in events]
    assert_exactly_once(events)
    assert completed.reason in assert_one_summary(settings, campaign, run.stdout)  # type: ignore[attr-defined]


def test_a_wall_clock_budget_that_runs_out_mid_search_ends_the_campaign_once(settings: Settings, tmp_path: Path) -> None:
    campaign = f"budget-{uuid.uuid4().hex[:6]}"
    budget = 30.0
    with Stack(settings.data_dir, namespace=settings.namespace, runners=2, nats_url=settings.nats_url):
        started = time.monotonic()
        run = cli(settings, "run", str(flat_paper(tmp_path / "slow-ideas", idea_seconds=20)), "--campaign", campaign, "--budget-experiments", "16", "--budget-seconds", f"{budget:g}")
        took = time.monotonic() - started
        time.sleep(2)  # a result or decision published late would show up in this window
        events = events_of(settings, campaign)
    assert run.returncode == 0, run.stdout + run.stderr  # a search that ran to its end, without a win
    kinds = [e.event_type for e in events]
    assert kinds.count("BudgetExhausted") == 1 and kinds.count("CampaignCompleted") == 1 and kinds[-1] == "CampaignCompleted", kinds
    assert kinds.index("BaselineReproduced") < kinds.index("BudgetExhausted")
    completed = events[-1]
    assert completed.outcome == "not_improved"  # type: ignore[attr-defined]
    assert f"the wall-clock budget ({budget:g} s) ran out" in completed.reason  # type: ignore[attr-defined]
    # the ideas in flight when the budget ran out finished; none was dispatched after it
    after = kinds[kinds.index("BudgetExhausted"):]
    assert "ExperimentDispatched" not in after
    assert took < budget + 20 + 60, f"the campaign took {took:.0f} s"
    assert_exactly_once(events)
    assert_one_summary(settings, campaign, run.stdout)


def test_a_paper_number_the_code_does_not_give_ends_not_reproduced_unless_told_to_go_on(settings: Settings, tmp_path: Path) -> None:
    # the card claims 0.55; the code gives 0.501 ± 0.001: 9 % off, far beyond three seed deviations
    paper = flat_paper(tmp_path / "overclaimed", idea_seconds=0)
    card = paper / "autosota.toml"
    card.write_text(card.read_text().replace("reported_value = 0.501", "reported_value = 0.55"))
    stopped, searched = f"overclaimed-{uuid.uuid4().hex[:6]}", f"searched-{uuid.uuid4().hex[:6]}"
    with Stack(settings.data_dir, namespace=settings.namespace, runners=2, nats_url=settings.nats_url):
        run = cli(settings, "run", str(paper), "--campaign", stopped, "--budget-experiments", "4")
        anyway = cli(settings, "run", str(paper), "--campaign", searched, "--budget-experiments", "2", "--continue-unreproduced")
    help_text = cli(settings, "run", "--help").stdout
    assert "4 when the paper's code did not reproduce" in " ".join(help_text.split())
    # Step 1: the campaign ends at the baseline, with its own outcome and exit code
    assert run.returncode == 4, run.stdout + run.stderr
    events = events_of(settings, stopped)
    reproduced = next(e for e in events if e.event_type == "BaselineReproduced")
    assert reproduced.reproduced is False and abs(reproduced.tolerance - 0.011) < 1e-9  # type: ignore[attr-defined]
    completed = events[-1]
    assert completed.event_type == "CampaignCompleted" and completed.outcome == "not_reproduced"  # type: ignore[attr-defined]
    assert "the paper reports rmse 0.55; its code gives 0.501" in completed.reason  # type: ignore[attr-defined]
    assert "IdeasRequested" not in [e.event_type for e in events]
    assert "NOT REPRODUCED" in run.stdout and completed.reason in run.stdout  # type: ignore[attr-defined]
    replay = cli(settings, "replay", stopped)
    assert replay.stdout.strip() and replay.stdout in run.stdout
    # Step 2: told to go on, it searches against the measured baseline and says so first
    assert anyway.returncode == 4, anyway.stdout + anyway.stderr
    kinds = [e.event_type for e in events_of(settings, searched)]
    assert "IdeasRequested" in kinds and kinds[-1] == "CampaignCompleted"
    report = (settings.data_dir / "reports" / f"{searched}.md").read_text()
    assert report.splitlines()[0].startswith(f"# AutoSOTA campaign {searched}: not reproduced")

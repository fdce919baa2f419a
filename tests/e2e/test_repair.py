"""A paper whose requirements forget a module: the campaign repairs its environment and goes on.

The repair installs a real package from the package index into a repaired environment, so this
test needs the index to be reachable, as it is on the project's machines and in CI.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from shared.embedded import Stack
from shared.settings import Settings
from tests.e2e.test_campaigns import EXAMPLES, cli, events_of

pytestmark = [pytest.mark.e2e, pytest.mark.nats]


def test_a_missing_module_is_installed_by_a_recorded_repair(settings: Settings, tmp_path: Path) -> None:
    # Step 1: a paper whose training imports a module its requirements do not name.
    paper = tmp_path / "forgetful-paper"
    shutil.copytree(EXAMPLES / "tiny-forecaster", paper, ignore=shutil.ignore_patterns("outputs"))
    train = paper / "train.py"
    train.write_text("import tomli_w  # used for nothing; the requirements forget it\n" + train.read_text())
    campaign = f"repair-{uuid.uuid4().hex[:6]}"
    with Stack(settings.data_dir, namespace=settings.namespace, runners=2, nats_url=settings.nats_url):
        run = cli(settings, "run", str(paper), "--campaign", campaign, "--budget-experiments", "4", timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    events = events_of(settings, campaign)
    # Step 2: the smoke run failed with a normalised signature naming the module.
    failure = next(e for e in events if e.event_type == "EnvironmentFailed")
    assert failure.stage == "smoke" and not failure.final
    assert "ModuleNotFoundError" in failure.signature and "tomli_w" in failure.signature
    # Step 3: fix proposed installing it; init applied it and the environment became ready.
    repair = next(e for e in events if e.event_type == "RepairProposed")
    assert repair.signature == failure.signature and repair.action == "install_package"
    assert repair.argument.replace("-", "_").lower() == "tomli_w" and not repair.from_memory
    ready = next(e for e in events if e.event_type == "EnvironmentReady")
    assert ready.repairs_applied == [f"install_package {repair.argument}"]
    assert ready.environment_bin.endswith("-repaired/bin")
    # Step 4: the baseline then ran in the repaired environment.
    assert any(e.event_type == "BaselineReproduced" for e in events)
    assert next(e for e in events if e.event_type == "CampaignCompleted").outcome in ("certified", "not_improved")

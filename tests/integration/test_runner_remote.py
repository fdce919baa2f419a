"""A runner started elsewhere, knowing only the bus, runs the jobs of a campaign started here.

The stack runs every agent but no runner. A runner process is then started from another
working directory with nothing but the NATS URL (and the test's namespace, which stands for
the deployment's subject prefix): the code and data of the paper reach it through the object
store only, and it caches the snapshot under its own directory by content hash.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from shared.cli import campaign_events, request_start
from shared.contracts import Budget
from shared.embedded import Stack
from shared.settings import Settings
from shared.subjects import SERVICES
from tests.integration.test_runner_leases import drop_runner_streams  # noqa: F401 - fixture

pytestmark = [pytest.mark.e2e, pytest.mark.nats]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tiny-forecaster"


def test_a_runner_elsewhere_with_only_the_bus_url_runs_a_campaign_started_here(settings: Settings, tmp_path: Path) -> None:
    elsewhere = tmp_path / "another-machine"
    elsewhere.mkdir()
    campaign = f"remote-{uuid.uuid4().hex[:6]}"
    agents = [service for service in SERVICES if service != "runner"]
    with Stack(settings.data_dir, namespace=settings.namespace, runners=0, nats_url=settings.nats_url, services=agents):
        # Step 1: a runner process in another directory, with the bus's address and nothing else.
        env = {"NATS_URL": settings.nats_url, "AUTOSOTA_NAMESPACE": settings.namespace, "PATH": "/usr/bin:/bin", "HOME": str(elsewhere)}
        log = (elsewhere / "runner.log").open("wb")
        remote = subprocess.Popen([sys.executable, "-m", "shared.cli", "service", "runner"], cwd=elsewhere, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            # Step 2: the campaign is started here, on the paper folder of this side.
            request = {"campaign": campaign, "paper_path": str(EXAMPLE), "budget": Budget(max_experiments=2, verification_seeds=3).model_dump(), "pool": "cpu"}
            assert asyncio.run(request_start(settings.nats_url, settings.subjects, request))["accepted"]
            deadline = time.monotonic() + 240
            events = []
            while time.monotonic() < deadline:
                events = asyncio.run(campaign_events(settings.nats_url, settings.subjects, campaign))
                if any(e.event_type == "CampaignCompleted" for e in events):
                    break
                assert remote.poll() is None, (elsewhere / "runner.log").read_text()[-3000:]
                time.sleep(0.5)
        finally:
            remote.terminate()
            remote.wait(30)
            log.close()
    # Step 3: every job ran on the remote runner, from a snapshot it fetched over the bus.
    completed = next(e for e in events if e.event_type == "CampaignCompleted")
    assert completed.outcome in ("certified", "not_improved"), completed.reason
    results = [e for e in events if e.event_type in ("JobCompleted", "JobFailed")]
    assert results and {e.runner for e in results} == {"runner-1"}
    assert all(e.event_type == "JobCompleted" for e in results)
    snapshot = next(e for e in events if e.event_type == "ResourcesPrepared").snapshot_sha256
    assert (elsewhere / ".autosota" / "runners" / "snapshots" / snapshot).is_file()
    assert not (settings.data_dir / "runners").exists()
    assert os.path.getsize(elsewhere / "runner.log") < 1_000_000

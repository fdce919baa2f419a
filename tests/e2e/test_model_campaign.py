"""A campaign whose ideator thinks with a model, across all service processes on a real NATS server.

A scripted OpenAI-compatible server (tests/model_server.py) answers the ideator's structural request
with a real unified diff against examples/tiny-forecaster/train.py: an ALGO idea that blends the
MLP (weight 0.25) with a seasonal forecaster fitted on the training period (weekly level, a
day-of-week by hour profile, the last residual decaying as AR(1)). Measured on this machine at the
paper's parameters it reaches RMSE 0.342 (seeds 0-4) against the paper's 0.453, while a 160-trial
TPE search over the card's whole parameter space bottomed out at 0.366 on seed 0 (0.376 on fresh
seeds). The campaign is then verified by replay with the server switched off, run again with a
token budget of zero, and every event, log and report is searched for the API key.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from shared.brains.replay import verify_campaign
from shared.cli import campaign_bodies
from shared.embedded import Stack
from shared.settings import Settings
from tests.e2e.test_campaigns import assert_exactly_once, cli, events_of
from tests.model_server import FakeModelServer
from tests.scripted_ideas import PAPER, blend_diff, scripted_coder

pytestmark = [pytest.mark.e2e, pytest.mark.nats]
MODEL = "scripted-coder"
# The best RMSE a 160-trial TPE search over the card's parameter space reached (seed 0).
PARAMETER_SEARCH_BEST = 0.366


def files_containing(root: Path, needle: bytes) -> list[str]:
    return [str(path) for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def test_a_model_proposed_code_change_is_certified_replayed_and_budgeted(settings: Settings) -> None:
    secret = f"sk-autosota-e2e-{uuid.uuid4().hex}"
    campaign, frugal = f"model-{uuid.uuid4().hex[:6]}", f"frugal-{uuid.uuid4().hex[:6]}"
    server = FakeModelServer(scripted_coder(blend_diff()), models=(MODEL,), api_key=secret).start()
    brain_env = {"AUTOSOTA_BRAIN": "openai", "AUTOSOTA_MODEL": MODEL, "AUTOSOTA_OPENAI_BASE_URL": server.openai_url, "AUTOSOTA_API_KEY": secret}
    try:
        with Stack(settings.data_dir, namespace=settings.namespace, runners=2, nats_url=settings.nats_url, extra_env=brain_env) as stack:
            # Step 1: a campaign whose ideator asks the scripted model for structural ideas.
            run = cli(settings, "run", str(PAPER), "--campaign", campaign, "--budget-experiments", "6")
            assert run.returncode == 0, run.stdout + run.stderr
            asked = len(server.requests)
            # Step 2: the model is switched off; a token budget of zero keeps it from being asked at all.
            server.stop()
            stack.extra_env["AUTOSOTA_TOKEN_BUDGET"] = "0"
            stack.restart("ideator")
            frugal_run = cli(settings, "run", str(PAPER), "--campaign", frugal, "--budget-experiments", "2")
            assert frugal_run.returncode == 0, frugal_run.stdout + frugal_run.stderr
    finally:
        server.stop()

    # Step 3: the Leap rule asked for a structural idea; the model's diff became an ALGO idea.
    events = events_of(settings, campaign)
    kinds = [e.event_type for e in events]
    assert "LeapStarted" in kinds and "BrainSelected" in kinds
    calls = [e for e in events if e.event_type == "ModelCalled"]
    assert calls and all(c.producer == "ideator" and c.agent == "ideator" and c.backend == "openai" and c.model == MODEL for c in calls)
    assert calls[0].outcome == "answered" and calls[0].prompt_tokens > 0 and calls[0].completion_tokens > 0
    assert asked == len(calls) and all(r.headers["authorization"] == f"Bearer {secret}" for r in server.requests)
    structural = [idea for e in events if e.event_type == "IdeasProposed" for idea in e.ideas if idea.kind != "PARAM"]
    assert structural and structural[0].patch and "seasonal_forecast" in structural[0].patch
    assert structural[0].expected_effect and structural[0].rationale.startswith("Blend with a seasonal forecaster")

    # Step 4: the certified gain is the code change's, beyond every PARAM-only result and beyond a long parameter search.
    certified = next(e for e in events if e.event_type == "SotaCertified")
    assert certified.patch and "seasonal_forecast" in certified.patch
    dispatched = {e.experiment_id: e for e in events if e.event_type == "ExperimentDispatched" and e.purpose == "idea"}
    param_only = [e.metrics["rmse"] for e in events if e.event_type == "ResultValidated" and e.purpose == "idea" and dispatched[e.experiment_id].patch is None]
    assert param_only, "no PARAM-only idea was validated"
    assert certified.candidate_mean < min(param_only) - 0.01 and certified.candidate_mean < PARAMETER_SEARCH_BEST - 0.01
    assert certified.gain_vs_reproduced > next(e for e in events if e.event_type == "BaselineReproduced").mean - min(param_only)
    assert next(e for e in events if e.event_type == "CampaignCompleted").outcome == "certified"
    assert_exactly_once(events)
    report = (settings.data_dir / "reports" / f"{campaign}.md").read_text()
    assert "```diff" in report and "+def seasonal_forecast(observed, origin, profile, phi):" in report
    assert "## Models and structural decisions" in report and "LeapStarted" in report

    # Step 5: with the server off, the services' decisions are re-run over the record and match it, event by event.
    verified = asyncio.run(verify_campaign(settings.nats_url, settings, campaign))
    assert verified.ok, verified.text()
    by_service = {s.service: s for s in verified.services}
    assert by_service["ideator"].recorded >= len(calls) + 1 and by_service["scheduler"].recorded > 10
    assert by_service["ideator"].reproduced == by_service["ideator"].recorded

    # Step 6: the zero-budget campaign ran on the no-model brain, and its report says so.
    frugal_events = events_of(settings, frugal)
    assert not [e for e in frugal_events if e.event_type == "ModelCalled"]
    fell_back = [e for e in frugal_events if e.event_type == "BrainFellBack"]
    assert len(fell_back) == 1 and fell_back[0].kind == "token_budget" and fell_back[0].permanent
    assert {e.brain for e in frugal_events if e.event_type == "IdeasProposed"} == {"no-model"}
    assert "LeapStarted" not in [e.event_type for e in frugal_events]
    frugal_report = (settings.data_dir / "reports" / f"{frugal}.md").read_text()
    assert "token budget of 0 tokens is spent" in frugal_report and "fell back to the no-model brain" in frugal_report
    assert "token budget of 0 tokens is spent" in frugal_run.stdout
    assert asyncio.run(verify_campaign(settings.nats_url, settings, frugal)).ok

    # Step 7: the API key is in no event, no log, no store and no report.
    bodies = b"".join(body for name in (campaign, frugal) for body in asyncio.run(campaign_bodies(settings.nats_url, settings.subjects, name)))
    assert b"ModelCalled" in bodies
    assert secret.encode() not in bodies
    assert files_containing(settings.data_dir, secret.encode()) == []
    assert secret not in run.stdout + run.stderr + frugal_run.stdout + frugal_run.stderr

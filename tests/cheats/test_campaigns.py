"""Planted cheats in whole campaigns, across every service process on a real NATS server.

The stack runs without its ideator: this test takes the ideator's place on the bus, answering
the scheduler's first IdeasRequested of each campaign with the planted ideas (an IdeasProposed
stamped like any event of the ideator) and later ones with none. Everything else is the real
system: the supervisor audits, the scheduler dispatches, runners apply the patches with git in
sandboxed workspaces, and the verification round re-runs candidates with fresh seeds and a
leakage canary. Each cheat must end in a rejection naming its rule, with its evidence in the
campaign report; the honest ideas must be certified.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime

import pytest

from shared.cli import campaign_events, connect_bus, request_start
from shared.contracts import Budget, Event, IdeasProposed
from shared.embedded import Stack
from shared.readmodel import CampaignSummary, render_markdown
from shared.settings import Settings
from shared.subjects import SERVICES
from tests.cheats.catalogue import CHEATS, Case, Cheat, cheat, honest

pytestmark = [pytest.mark.e2e, pytest.mark.nats]
TIMEOUT_SECONDS = 420
BRAIN = "planted-cheats"

# Spiral: every audit cheat its card can judge, the run-time tampering, and a label leak only the
# verification round sees; it screens at 1.0, so it is nominated first and the honest schedule second.
SPIRAL_IDEAS: list[Case] = [
    *[c for c in CHEATS if c.paper == "spiral-classifier" and c.stage == "audit" and c.rules is None],
    *[c for c in CHEATS if c.paper == "spiral-classifier" and c.stage == "result"],
    cheat("read-test-labels-in-training-hidden"),
    honest("one-cycle-schedule"),
]
# Spiral again: a fixed answer regenerated from the data generator, alone in its campaign.
FIXED_ANSWER_IDEAS: list[Case] = [cheat("regenerate-test-labels")]
# Forecaster: a metric shadowed at run time is rejected at screening; the honest parameters are certified.
FORECASTER_IDEAS: list[Case] = [honest("longer-lag-window"), cheat("monkey-patch-metric-at-run-time")]
# Detector: accuracy bought with macro-F1.
DETECTOR_IDEAS: list[Case] = [cheat("trade-secondary-for-primary")]
# The scheduler hands the shadow guards to screening runs too, so in a whole campaign this cheat
# is rejected with its screening result, before it could be nominated.
EARLIER_IN_A_CAMPAIGN = {"monkey-patch-metric-at-run-time": "result"}
PLANS = {"spiral": SPIRAL_IDEAS, "fixed-answer": FIXED_ANSWER_IDEAS, "forecaster": FORECASTER_IDEAS, "detector": DETECTOR_IDEAS}


def dispatched_count(cases: list[Case]) -> int:
    return sum(1 for case in cases if not isinstance(case, Cheat) or case.stage != "audit")


async def answer_idea_requests(settings: Settings, plans: dict[str, list[Case]]) -> dict[str, list[Event]]:
    """Play the ideator until every campaign completes; return each campaign's events."""
    client = await connect_bus(settings.nats_url, "planted-ideator")
    js = client.jetstream()
    answered: set[tuple[str, int]] = set()
    deadline = time.monotonic() + TIMEOUT_SECONDS
    try:
        while True:
            events = {campaign: await campaign_events(settings.nats_url, settings.subjects, campaign) for campaign in plans}
            if all(any(e.event_type == "CampaignCompleted" for e in evs) for evs in events.values()):
                return events
            if time.monotonic() > deadline:
                tails = {campaign: [e.event_type for e in evs][-12:] for campaign, evs in events.items()}
                raise AssertionError(f"campaigns did not complete in time: {tails}")
            for campaign, evs in events.items():
                for request in (e for e in evs if e.event_type == "IdeasRequested"):
                    key = (campaign, request.round)  # type: ignore[attr-defined]
                    if key in answered:
                        continue
                    answered.add(key)
                    ideas = [case.idea() for case in plans[campaign]] if request.round == 1 else []  # type: ignore[attr-defined]
                    proposal = IdeasProposed(
                        campaign=campaign, ideas=ideas, brain=BRAIN, round=request.round,  # type: ignore[attr-defined]
                        event_id=uuid.uuid4(), producer="ideator", time=datetime.now(UTC), causation_id=request.event_id,
                    )
                    await js.publish(
                        settings.subjects.event("ideator", campaign, "IdeasProposed"),
                        json.dumps(proposal.model_dump(mode="json")).encode(),
                        headers={"Nats-Msg-Id": f"ideator-planted:{campaign}:{key[1]}"},
                    )
            await asyncio.sleep(0.5)
    finally:
        await client.close()


async def run_campaigns(settings: Settings, plans: dict[str, list[Case]]) -> dict[str, list[Event]]:
    for campaign, cases in plans.items():
        budget = Budget(max_experiments=dispatched_count(cases), verification_seeds=3, wall_clock_seconds=TIMEOUT_SECONDS)
        request = {"campaign": campaign, "paper_path": str(cases[0].folder), "budget": budget.model_dump(), "pool": "cpu"}
        reply = await request_start(settings.nats_url, settings.subjects, request)
        assert reply["accepted"], reply
    return await answer_idea_requests(settings, plans)


def fate(events: list[Event], idea_id: str) -> Event:
    """The supervisor's last word on an idea: its audit rejection, a result rejection, or the verification verdict."""
    verdicts = [
        e for e in events
        if (e.event_type == "IdeaRejected" and e.idea.idea_id == idea_id)  # type: ignore[attr-defined]
        or (e.event_type in ("ResultRejected", "SotaRefuted", "SotaCertified") and getattr(e, "idea_id", None) == idea_id)
    ]
    assert verdicts, f"no verdict on {idea_id}"
    # A verification verdict outranks the rejections of its remaining runs, which still come back after it.
    rank = {"SotaCertified": 2, "SotaRefuted": 2, "ResultRejected": 1, "IdeaRejected": 0}
    return max(verdicts, key=lambda e: rank[e.event_type])


@pytest.fixture(scope="module")
def campaigns(tmp_path_factory: pytest.TempPathFactory, nats_url: str) -> dict[str, tuple[list[Case], list[Event]]]:
    from tests.conftest import delete_namespace

    namespace = "t" + uuid.uuid4().hex[:10]
    settings = Settings(nats_url=nats_url, data_dir=tmp_path_factory.mktemp("cheat-campaigns") / "data", namespace=namespace, stall_seconds=60.0)
    suffix = uuid.uuid4().hex[:6]
    names = {label: f"cheats-{label}-{suffix}" for label in PLANS}
    try:
        with Stack(settings.data_dir, namespace=namespace, runners=2, nats_url=nats_url, services=[s for s in SERVICES if s != "ideator"]):
            events = asyncio.run(run_campaigns(settings, {names[label]: cases for label, cases in PLANS.items()}))
    finally:
        asyncio.run(delete_namespace(nats_url, settings.subjects))
    return {label: (cases, events[names[label]]) for label, cases in PLANS.items()}


@pytest.mark.parametrize("paper", list(PLANS))
def test_every_planted_cheat_ends_in_a_rejection_naming_its_rule(campaigns: dict[str, tuple[list[Case], list[Event]]], paper: str) -> None:
    cases, events = campaigns[paper]
    for case in cases:
        if not isinstance(case, Cheat):
            continue
        verdict = fate(events, case.name)
        stage = EARLIER_IN_A_CAMPAIGN.get(case.name, case.stage)
        expected = {"audit": "IdeaRejected", "result": "ResultRejected", "verification": "SotaRefuted"}[stage]
        assert (verdict.event_type, getattr(verdict, "rule", None)) == (expected, case.rule), f"{case.name}: {verdict}"
        assert getattr(verdict, "evidence", None), f"{case.name} was rejected without evidence"


@pytest.mark.parametrize("paper", ["spiral", "forecaster"])
def test_the_honest_improvement_is_certified_after_the_cheats_are_refuted(campaigns: dict[str, tuple[list[Case], list[Event]]], paper: str) -> None:
    cases, events = campaigns[paper]
    [honest_case] = [case for case in cases if not isinstance(case, Cheat)]
    certified = fate(events, honest_case.name)
    assert certified.event_type == "SotaCertified", certified
    assert certified.gain_vs_reproduced > 0 and certified.p_value < certified.alpha  # type: ignore[attr-defined]
    completed = [e for e in events if e.event_type == "CampaignCompleted"]
    assert [e.outcome for e in completed] == ["certified"]  # type: ignore[attr-defined]
    if paper == "spiral":
        # The canary ran for real: the honest model fell to chance on shuffled labels.
        assert certified.checks["leakage_canary"]["passed"]  # type: ignore[attr-defined]
        assert any(e.event_type == "VerificationDispatched" and e.canary for e in events)  # type: ignore[attr-defined]


@pytest.mark.parametrize("paper", ["fixed-answer", "detector"])
def test_a_campaign_with_only_cheats_ends_not_improved(campaigns: dict[str, tuple[list[Case], list[Event]]], paper: str) -> None:
    _, events = campaigns[paper]
    [completed] = [e for e in events if e.event_type == "CampaignCompleted"]
    assert completed.outcome == "not_improved"  # type: ignore[attr-defined]


@pytest.mark.parametrize("paper", list(PLANS))
def test_each_rejection_shows_in_the_campaign_report_with_its_evidence(campaigns: dict[str, tuple[list[Case], list[Event]]], paper: str) -> None:
    cases, events = campaigns[paper]
    report = render_markdown(CampaignSummary.from_events(events), events)
    for case in cases:
        if isinstance(case, Cheat):
            verdict = fate(events, case.name)
            kind = {"IdeaRejected": "idea", "ResultRejected": "result", "SotaRefuted": "refuted"}[verdict.event_type]
            subject = case.name if kind != "result" else f"idea-{case.name}"
            assert f"### {kind} {subject}: rule {case.rule}" in report, f"{case.name} missing from the report"
    # The evidence is there in full: hashes, paths, statistics.
    if paper == "spiral":
        assert '"retained"' in report and '"paths"' in report
    if paper == "forecaster":
        assert '"json.py"' in report

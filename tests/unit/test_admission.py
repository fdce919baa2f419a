"""Which events a service acts on: each forgery a user of the bus could attempt is refused by name."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.admission import MAX_EVENT_BYTES, Accepted, Ignored, Rejected, admit
from shared.contracts import Budget, CampaignStarted, Event, JobStarted, MessageRejected, ServiceFailed, SotaCertified
from shared.subjects import Subjects

SUBJECTS = Subjects()


def stamped(event: Event, producer: str) -> bytes:
    return event.model_copy(update={"event_id": uuid.uuid4(), "producer": producer, "time": datetime.now(UTC)}).model_dump_json().encode()


def certified(campaign: str = "c1") -> SotaCertified:
    return SotaCertified(
        campaign=campaign, idea_id="i1", params={}, metric="rmse", candidate_values=[0.01], baseline_values=[0.45],
        candidate_mean=0.01, baseline_mean=0.45, gain_vs_reproduced=0.44, gain_vs_reported=0.44, reported_value=0.45,
        test="welch", statistic=99.0, p_value=1e-12, alpha=0.05,
    )


def started(campaign: str = "c1") -> CampaignStarted:
    return CampaignStarted(campaign=campaign, paper_path="/etc", budget=Budget())


def test_an_event_from_its_owner_under_its_own_tree_is_accepted() -> None:
    verdict = admit(SUBJECTS, SUBJECTS.event("supervisor", "c1", "SotaCertified"), stamped(certified(), "supervisor"), {"Nats-Msg-Id": "supervisor:7:ab"})
    assert isinstance(verdict, Accepted) and verdict.event.event_type == "SotaCertified"
    runner = admit(SUBJECTS, SUBJECTS.event("runner", "c1", "JobStarted"), stamped(JobStarted(campaign="c1", experiment_id="e", runner="runner-3", delivery=1), "runner-3"))
    assert isinstance(runner, Accepted)


@pytest.mark.parametrize(
    ("subject", "body", "headers", "why"),
    [
        # a runner's user certifies a result under its own tree
        (SUBJECTS.event("runner", "c1", "SotaCertified"), stamped(certified(), "runner-1"), {}, "forged: SotaCertified belongs to supervisor"),
        # the monitor's user starts a campaign on a host folder
        (SUBJECTS.event("monitor", "c1", "CampaignStarted"), stamped(started(), "monitor"), {}, "forged: CampaignStarted belongs to scheduler"),
        # a self-declared producer that is not the subject's service
        (SUBJECTS.event("runner", "c1", "JobStarted"), stamped(JobStarted(campaign="c1", experiment_id="e", runner="r", delivery=1), "supervisor"), {}, "producer 'supervisor' is not an instance of 'runner'"),
        # the body's campaign is not the subject's
        (SUBJECTS.event("supervisor", "c1", "SotaCertified"), stamped(certified("c2"), "supervisor"), {}, "the body is for campaign 'c2'"),
        # the body's type is not the subject's
        (SUBJECTS.event("supervisor", "c1", "ResultValidated"), stamped(certified(), "supervisor"), {}, "the body is a SotaCertified"),
        # message ids that claim another service's outbox (the suppression attack)
        (SUBJECTS.event("runner", "c1", "JobStarted"), stamped(JobStarted(campaign="c1", experiment_id="e", runner="runner-1", delivery=1), "runner-1"), {"Nats-Msg-Id": "scheduler:125"}, "claims another service's ids"),
        # one service's failure published by another, which would end the campaign
        (SUBJECTS.event("runner", "c1", "ServiceFailed"), stamped(ServiceFailed(campaign="c1", service="scheduler", stage="handling", failed_event_type="x", subject="s", reason="r"), "runner-1"), {}, "a failure of 'scheduler'"),
        # a known type under a plug-in's tree is still somebody else's
        (SUBJECTS.event("myplugin", "c1", "SotaCertified"), stamped(certified(), "myplugin"), {}, "belongs to supervisor"),
        # invalid campaign tokens, and subjects of the wrong shape
        ("autosota.evt.scheduler.bad!campaign.JobStarted", b"{}", {}, "is not autosota.evt.<service>.<campaign>.<EventType>"),
        (f"autosota.evt.runner.{'c' * 81}.JobStarted", b"{}", {}, "is not autosota.evt"),
        ("autosota.evt.runner.c1.JobStarted.extra", b"{}", {}, "is not autosota.evt"),
        # unknown types under an agent's tree, malformed and oversized bodies
        (SUBJECTS.event("runner", "c1", "Nonsense"), b"{}", {}, "unknown event type 'Nonsense'"),
        (SUBJECTS.event("runner", "c1", "JobStarted"), b"\xff\xfe", {}, "malformed message"),
        (SUBJECTS.event("runner", "c1", "JobStarted"), b" " * (MAX_EVENT_BYTES + 1), {}, "over the"),
    ],
)
def test_forgeries_and_poison_are_rejected_with_a_reason(subject: str, body: bytes, headers: dict[str, str], why: str) -> None:
    verdict = admit(SUBJECTS, subject, body, headers)
    assert isinstance(verdict, Rejected), verdict
    assert why in verdict.reason
    # the dead letter can always be recorded: its campaign key is valid whatever the subject was
    MessageRejected(campaign=verdict.campaign, subject=subject[:300], reason=verdict.reason, excerpt="")


def test_a_plug_in_publishes_its_own_event_types_without_dead_letters() -> None:
    body: dict[str, Any] = {"event_type": "LeaderboardUpdated", "campaign": "c1", "rank": 1}
    assert isinstance(admit(SUBJECTS, SUBJECTS.event("leaderboard", "c1", "LeaderboardUpdated"), json.dumps(body).encode()), Ignored)
    # shared types (a plug-in's own model calls) are its business too
    assert isinstance(admit(SUBJECTS, SUBJECTS.event("leaderboard", "c1", "ModelCalled"), b"{}"), Ignored)

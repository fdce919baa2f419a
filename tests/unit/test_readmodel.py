"""The campaign read models, projected from hand-built events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from shared.contracts import (
    BaselineReproduced,
    BestUpdated,
    Budget,
    CampaignCompleted,
    CampaignStarted,
    Event,
    ExperimentDispatched,
    Idea,
    IdeaCleared,
    IdeaRejected,
    IdeasProposed,
    JobFailed,
    JobStarted,
    MessageRejected,
    Objective,
    ObjectiveSet,
    ParameterSpec,
    ResultRejected,
    ResultValidated,
    SotaCertified,
    SotaRefuted,
    VerificationDispatched,
)
from shared.readmodel import CampaignSummary, progress_line, render_markdown, render_text

CAMPAIGN = "tiny-forecaster-0a1b2c3d"
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

OBJECTIVE = Objective(
    title="TinyForecaster",
    method="lag-window MLP",
    primary_metric="rmse",
    direction="minimize",
    reported_value=0.50,
    reported_source="Table 2",
    secondary_metrics={"mae": 0.05},
    protected_paths=["evaluate.py", "data/"],
    train_command="python train.py",
    evaluate_command="python evaluate.py",
    baseline_seeds=[0, 1, 2],
    search_space={"learning_rate": ParameterSpec(type="float", low=1e-4, high=1e-1, log=True, baseline=0.003)},
)


class Recorder:
    """Stamps events the way the runtime does, one second apart."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, producer: str, event: Event) -> Event:
        stamped = event.model_copy(update={"event_id": uuid4(), "producer": producer, "time": T0 + timedelta(seconds=len(self.events))})
        self.events.append(stamped)
        return stamped


def idea(idea_id: str, learning_rate: float) -> Idea:
    return Idea(idea_id=idea_id, params={"learning_rate": learning_rate}, rationale="tpe")


def certified_campaign() -> list[Event]:
    record = Recorder()
    record("scheduler", CampaignStarted(campaign=CAMPAIGN, paper_path="/papers/tiny", budget=Budget(max_experiments=3)))
    record("objective", ObjectiveSet(campaign=CAMPAIGN, objective=OBJECTIVE, snapshot_sha256="ab" * 32))
    for seed in (0, 1, 2):
        record("scheduler", ExperimentDispatched(campaign=CAMPAIGN, experiment_id=f"baseline-s{seed}", purpose="baseline", params={"learning_rate": 0.003}, seed=seed))
        record("supervisor", ResultValidated(campaign=CAMPAIGN, experiment_id=f"baseline-s{seed}", purpose="baseline", metrics={"rmse": 0.52, "mae": 0.4}))
    record("scheduler", BaselineReproduced(campaign=CAMPAIGN, metric="rmse", values=[0.51, 0.52, 0.53], mean=0.52, std=0.01, reported_value=0.5, gap_to_reported=0.02))
    record("ideator", IdeasProposed(campaign=CAMPAIGN, ideas=[idea("i1", 0.01), idea("i2", 0.02), idea("i3", 9.0)], brain="optuna-tpe", round=1))
    record("supervisor", IdeaCleared(campaign=CAMPAIGN, idea=idea("i1", 0.01)))
    record("supervisor", IdeaCleared(campaign=CAMPAIGN, idea=idea("i2", 0.02)))
    record("supervisor", IdeaRejected(campaign=CAMPAIGN, idea=idea("i3", 9.0), rule="R3", evidence={"learning_rate": 9.0, "high": 0.1}))
    record("scheduler", ExperimentDispatched(campaign=CAMPAIGN, experiment_id="idea-i1", purpose="idea", idea_id="i1", params={"learning_rate": 0.01}, seed=0))
    record("scheduler", ExperimentDispatched(campaign=CAMPAIGN, experiment_id="idea-i2", purpose="idea", idea_id="i2", params={"learning_rate": 0.02}, seed=0))
    record("runner-1", JobStarted(campaign=CAMPAIGN, experiment_id="idea-i1", runner="runner-1", delivery=1))
    record("supervisor", ResultValidated(campaign=CAMPAIGN, experiment_id="idea-i1", purpose="idea", idea_id="i1", metrics={"rmse": 0.45, "mae": 0.39}))
    record("scheduler", BestUpdated(campaign=CAMPAIGN, idea_id="i1", experiment_id="idea-i1", value=0.45, previous_value=0.52, params={"learning_rate": 0.01}))
    record("supervisor", ResultRejected(campaign=CAMPAIGN, experiment_id="idea-i2", purpose="idea", idea_id="i2", rule="R2", evidence={"evaluate.py": "changed"}))
    record("runner-2", JobFailed(campaign=CAMPAIGN, experiment_id="idea-i3", purpose="idea", runner="runner-2", stage="train", reason="exit 1", signature="boom"))
    for arm in ("candidate", "baseline"):
        for seed in (1000, 1001):
            record("supervisor", VerificationDispatched(campaign=CAMPAIGN, experiment_id=f"verify-1-{arm}-s{seed}", idea_id="i1", arm=arm, seed=seed))
    record("supervisor", SotaRefuted(campaign=CAMPAIGN, idea_id="i0", metric="rmse", candidate_values=[0.5], baseline_values=[0.5], rule="R5", reason="p above alpha", test="welch", statistic=0.1, p_value=0.4, alpha=0.05))
    record(
        "supervisor",
        SotaCertified(
            campaign=CAMPAIGN, idea_id="i1", params={"learning_rate": 0.01}, metric="rmse",
            candidate_values=[0.44, 0.45], baseline_values=[0.52, 0.53], candidate_mean=0.445, baseline_mean=0.525,
            gain_vs_reproduced=0.08, gain_vs_reported=0.055, reported_value=0.5, test="welch one-sided", statistic=-9.1, p_value=0.003, alpha=0.05,
        ),
    )
    record("fix", MessageRejected(campaign=CAMPAIGN, subject="autosota.evt.x", reason="handling failed: KeyError", excerpt="{}"))
    record("scheduler", CampaignCompleted(campaign=CAMPAIGN, outcome="certified", reason="i1 certified", idea_experiments=2))
    return record.events


def test_summary_counts_what_the_campaign_did() -> None:
    summary = CampaignSummary.from_events(certified_campaign())

    assert summary.campaign == CAMPAIGN
    assert (summary.paper_title, summary.paper_method) == ("TinyForecaster", "lag-window MLP")
    assert (summary.primary_metric, summary.direction, summary.reported_value) == ("rmse", "minimize", 0.5)
    assert summary.baseline is not None
    assert (summary.baseline.mean, summary.baseline.std, summary.baseline.n, summary.baseline.gap) == (0.52, 0.01, 3, 0.02)
    baseline, ideas, verification = (summary.experiments[p] for p in ("baseline", "idea", "verification"))
    assert (baseline.dispatched, baseline.validated, baseline.rejected, baseline.failed) == (3, 3, 0, 0)
    assert (ideas.dispatched, ideas.validated, ideas.rejected, ideas.failed) == (2, 1, 1, 1)
    assert dict(ideas.rejected_rules) == {"R2": 1}
    assert verification.dispatched == 4
    assert [step.idea_id for step in summary.best] == ["i1"]
    assert (summary.ideas_proposed, summary.ideas_cleared, summary.ideas_rejected) == (3, 2, 1)
    assert summary.certified is not None and summary.certified.idea_id == "i1"
    assert [(r.idea_id, r.rule) for r in summary.refutations] == [("i0", "R5")]
    assert (summary.outcome, summary.outcome_reason) == ("certified", "i1 certified")
    assert summary.dead_letters == 1


def test_a_repeated_event_is_counted_once() -> None:
    events = certified_campaign()
    repeated = events[:3] + [events[2]] + events[3:]

    assert render_text(CampaignSummary.from_events(repeated)) == render_text(CampaignSummary.from_events(events))


def test_text_is_the_same_for_the_same_events_and_names_the_result() -> None:
    events = certified_campaign()

    first = render_text(CampaignSummary.from_events(events))
    again = render_text(CampaignSummary.from_events(list(events)))

    assert first == again
    assert "Outcome       certified: i1 certified" in first
    assert "gain vs reproduced +0.08, gain vs reported +0.055" in first
    assert "0.52 ± 0.01 over 3 seeds, gap to reported +0.02" in first
    assert "R2 x1" in first and "rejected 1 (R3 x1)" in first
    assert "Dead letters  1" in first
    assert str(datetime.now(UTC).year) not in first  # no clock reading of its own


def test_a_campaign_without_events_past_its_start_renders() -> None:
    record = Recorder()
    record("scheduler", CampaignStarted(campaign=CAMPAIGN, paper_path="/papers/tiny", budget=Budget()))

    text = render_text(CampaignSummary.from_events(record.events))

    assert "Baseline      not measured" in text
    assert "Outcome       running" in text


def test_a_failed_campaign_names_its_reason() -> None:
    record = Recorder()
    record("scheduler", CampaignStarted(campaign=CAMPAIGN, paper_path="/papers/tiny", budget=Budget()))
    record("scheduler", CampaignCompleted(campaign=CAMPAIGN, outcome="failed", reason="ObjectiveFailed: no autosota.toml", idea_experiments=0))

    summary = CampaignSummary.from_events(record.events)

    assert summary.outcome == "failed"
    assert "Outcome       failed: ObjectiveFailed: no autosota.toml" in render_text(summary)


def test_report_lists_every_event_and_every_rejection_with_its_evidence() -> None:
    events = certified_campaign()

    report = render_markdown(CampaignSummary.from_events(events), events)

    timeline = report.split("## Audit timeline", 1)[1]
    rows = [line for line in timeline.splitlines() if line.startswith("| 2026-")]
    assert len(rows) == len(events)
    assert rows[0].startswith("| 2026-01-02T03:04:05.000+00:00 | scheduler | CampaignStarted |")
    assert '| result | idea-i2 | R2 | `{"evaluate.py":"changed"}` |' in report
    assert '| idea | i3 | R3 | `{"high":0.1,"learning_rate":9.0}` |' in report
    assert "| i1 | idea-i1 | 0.45 | 0.52 |" in report
    assert report == render_markdown(CampaignSummary.from_events(events), events)


def test_progress_shows_milestones_and_leaves_out_chatter() -> None:
    events = {event.event_type: event for event in certified_campaign()}

    completed = progress_line(events["CampaignCompleted"])

    assert completed == "03:04:32 scheduler   CampaignCompleted      certified: i1 certified (2 idea experiments)"
    assert progress_line(events["JobStarted"]) is None
    assert "rule R2" in (progress_line(events["ResultRejected"]) or "")

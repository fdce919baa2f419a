"""The campaign report shows every rejection with its full evidence, and the checks a certificate passed."""

from __future__ import annotations

from shared.contracts import Idea, IdeaRejected, JobFailed, ResultRejected, SotaCertified, SotaRefuted, VerificationDispatched
from shared.readmodel import CampaignSummary, describe, render_markdown, render_text

CAMPAIGN = "report"
DIGEST = "ab" * 32


def events() -> list:
    return [
        IdeaRejected(campaign=CAMPAIGN, idea=Idea(idea_id="edit-eval"), rule="R2", evidence={"reason": "the patch touches protected paths", "paths": ["evaluate.py"]}),
        JobFailed(campaign=CAMPAIGN, experiment_id="idea-rewrite", purpose="idea", runner="r", stage="train", reason="exited with code 1", signature="s"),
        ResultRejected(campaign=CAMPAIGN, experiment_id="idea-rewrite", purpose="idea", idea_id="rewrite", rule="R2",
                       evidence={"reason": "the run tried to change protected files; the sandbox refused", "paths": ["evaluate.py"]}),
        ResultRejected(campaign=CAMPAIGN, experiment_id="idea-symlink", purpose="idea", idea_id="symlink", rule="R6",
                       evidence={"violations": [{"path": "data/test.csv", "expected": DIGEST, "actual": "symlink:/tmp/x"}]}),
        VerificationDispatched(campaign=CAMPAIGN, experiment_id="verify-1-candidate-canary", idea_id="leak", arm="candidate", seed=1000, canary=True),
        SotaRefuted(campaign=CAMPAIGN, idea_id="leak", metric="accuracy", candidate_values=[1.0, 1.0], baseline_values=[0.8, 0.82], rule="R5",
                    reason="leakage canary", test="welch-t-one-sided", statistic=0.0, p_value=1.0, alpha=0.05,
                    evidence={"check": "leakage-canary", "retained": 1.0, "limit": 0.5}),
        SotaCertified(campaign=CAMPAIGN, idea_id="honest", params={}, metric="accuracy", candidate_values=[0.97, 0.96], baseline_values=[0.8, 0.82],
                      candidate_mean=0.965, baseline_mean=0.81, gain_vs_reproduced=0.155, gain_vs_reported=0.134, reported_value=0.831,
                      test="welch-t-one-sided", statistic=9.0, p_value=0.001, alpha=0.05,
                      checks={"leakage_canary": {"passed": True, "retained": 0.01}, "seed_sensitivity": {"passed": True}}),
    ]


def test_every_rejection_has_its_evidence_in_full_in_the_report() -> None:
    report = render_markdown(CampaignSummary.from_events(events(), CAMPAIGN), events())
    assert "### idea edit-eval: rule R2" in report
    assert "### result idea-rewrite: rule R2" in report and "the sandbox refused" in report
    assert "### result idea-symlink: rule R6" in report and DIGEST in report  # a full hash, not a truncated cell
    assert "### refuted leak: rule R5" in report and '"retained": 1.0' in report
    assert "- check leakage_canary:" in report


def test_the_summary_counts_a_refused_run_once_and_names_the_certificates_checks() -> None:
    summary = CampaignSummary.from_events(events(), CAMPAIGN)
    ideas = summary.experiments["idea"]
    assert (ideas.failed, ideas.rejected) == (1, 1)
    assert ideas.rejected_rules == {"R2": 1, "R6": 1}
    text = render_text(summary)
    assert "checks: leakage canary passed (kept 1% of its advantage on shuffled labels); seed sensitivity passed" in text
    assert text == render_text(CampaignSummary.from_events(events(), CAMPAIGN))


def test_a_canary_dispatch_says_so() -> None:
    assert "leakage canary" in describe(events()[4])

"""Read models of a campaign, projected from its events: the summary, the report, progress lines.

Everything here is a pure function of the events it is given: the same events always give the
same text, so a live run and a later replay print byte-identical summaries.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from shared.contracts import (
    BaselineReproduced,
    BestUpdated,
    BudgetExhausted,
    CampaignCompleted,
    CampaignStarted,
    CandidateNominated,
    EnvironmentFailed,
    EnvironmentReady,
    EnvironmentSpecified,
    Event,
    ExperimentDispatched,
    IdeaCleared,
    IdeaRejected,
    IdeasProposed,
    IdeasRequested,
    JobCompleted,
    JobFailed,
    JobStarted,
    MessageRejected,
    ObjectiveFailed,
    ObjectiveSet,
    ProtectionEstablished,
    RepairExhausted,
    RepairProposed,
    ResourcesFailed,
    ResourcesPrepared,
    ResultRejected,
    ResultValidated,
    SotaCertified,
    SotaRefuted,
    StallDetected,
    VerificationDispatched,
    BaselineRequested,
    BrainFellBack,
    BrainSelected,
    HoneymoonStarted,
    IdeaDropped,
    LeapStarted,
    ModelCalled,
    RolledBack,
)

PURPOSES = ("baseline", "idea", "verification")
DETAIL_LIMIT = 200
EVIDENCE_LIMIT = 4000
# Chatty events the live progress leaves out; the report's timeline still lists them.
QUIET_IN_PROGRESS = frozenset({"JobStarted", "IdeaCleared"})


@dataclass
class ExperimentCounts:
    dispatched: int = 0
    validated: int = 0
    rejected: int = 0
    failed: int = 0
    rejected_rules: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class BaselineSummary:
    metric: str
    mean: float
    std: float
    n: int
    reported_value: float
    gap: float
    reproduced: bool = True
    tolerance: float = 0.0


@dataclass(frozen=True)
class Rejection:
    subject_id: str
    rule: str
    evidence: dict[str, Any]


@dataclass(frozen=True)
class BestStep:
    idea_id: str
    experiment_id: str
    value: float
    previous_value: float
    params: dict[str, Any]


@dataclass(frozen=True)
class Refutation:
    idea_id: str
    rule: str
    reason: str
    p_value: float
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class CampaignSummary:
    campaign: str
    event_count: int = 0
    paper_path: str | None = None
    paper_title: str | None = None
    paper_method: str | None = None
    primary_metric: str | None = None
    direction: str | None = None
    reported_value: float | None = None
    baseline: BaselineSummary | None = None
    experiments: dict[str, ExperimentCounts] = field(default_factory=lambda: {p: ExperimentCounts() for p in PURPOSES})
    result_rejections: list[Rejection] = field(default_factory=list)
    best: list[BestStep] = field(default_factory=list)
    ideas_proposed: int = 0
    ideas_cleared: int = 0
    ideas_rejected: int = 0
    idea_rejections: list[Rejection] = field(default_factory=list)
    certified: SotaCertified | None = None
    refutations: list[Refutation] = field(default_factory=list)
    outcome: str | None = None
    outcome_reason: str | None = None
    idea_experiments: int | None = None
    dead_letters: int = 0
    dead_letter_reasons: list[str] = field(default_factory=list)
    failed_experiments: set[str] = field(default_factory=set)
    brains: dict[str, str] = field(default_factory=dict)
    model_calls: Counter[str] = field(default_factory=Counter)
    model_tokens: int = 0
    model_cost: float = 0.0
    model_failures: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)
    dropped_ideas: list[Rejection] = field(default_factory=list)
    loop_decisions: list[str] = field(default_factory=list)

    @property
    def reproduced(self) -> bool | None:
        """Whether the measured baseline reproduced the paper's number; None before it was measured."""
        return None if self.baseline is None else self.baseline.reproduced

    @classmethod
    def from_events(cls, events: list[Event], campaign: str | None = None) -> CampaignSummary:
        """Fold a campaign's events, in stream order, into its summary; repeats are counted once.
        The summary ends where the campaign ended: what arrives later (the result of a job that was
        still running, a withdrawal) is in the history but changes nothing that was concluded, so
        the summary `run` printed and the one replay rebuilds are the same."""
        name = campaign or (events[0].campaign if events else "")
        summary = cls(campaign=name)
        for event in unique(events):
            if event.campaign != name:
                continue
            summary._apply(event)
            if isinstance(event, CampaignCompleted):
                break
        return summary

    def _apply(self, event: Event) -> None:  # noqa: C901 - one branch per event type reads best
        self.event_count += 1
        if isinstance(event, CampaignStarted):
            self.paper_path = event.paper_path
        elif isinstance(event, ObjectiveSet):
            objective = event.objective
            self.paper_title = objective.title
            self.paper_method = objective.method
            self.primary_metric = objective.primary_metric
            self.direction = objective.direction
            self.reported_value = objective.reported_value
        elif isinstance(event, BaselineReproduced):
            self.baseline = BaselineSummary(event.metric, event.mean, event.std, len(event.values), event.reported_value, event.gap_to_reported, event.reproduced, event.tolerance)
        elif isinstance(event, ExperimentDispatched):
            self.experiments[event.purpose].dispatched += 1
        elif isinstance(event, VerificationDispatched):
            self.experiments["verification"].dispatched += 1
        elif isinstance(event, ResultValidated):
            self.experiments[event.purpose].validated += 1
        elif isinstance(event, ResultRejected):
            counts = self.experiments[event.purpose]
            # A failed run that tried to tamper is counted once, as failed, and its rule is still shown.
            counts.rejected += 0 if event.experiment_id in self.failed_experiments else 1
            counts.rejected_rules[event.rule] += 1
            self.result_rejections.append(Rejection(event.experiment_id, event.rule, event.evidence))
        elif isinstance(event, JobFailed):
            self.experiments[event.purpose].failed += 1
            self.failed_experiments.add(event.experiment_id)
        elif isinstance(event, BestUpdated):
            self.best.append(BestStep(event.idea_id, event.experiment_id, event.value, event.previous_value, event.params))
        elif isinstance(event, IdeasProposed):
            self.ideas_proposed += len(event.ideas)
        elif isinstance(event, IdeaCleared):
            self.ideas_cleared += 1
        elif isinstance(event, IdeaRejected):
            self.ideas_rejected += 1
            self.idea_rejections.append(Rejection(event.idea.idea_id, event.rule, event.evidence))
        elif isinstance(event, SotaCertified):
            self.certified = event
        elif isinstance(event, SotaRefuted):
            self.refutations.append(Refutation(event.idea_id, event.rule, event.reason, event.p_value, event.evidence))
        elif isinstance(event, CampaignCompleted):
            self.outcome = event.outcome
            self.outcome_reason = event.reason
            self.idea_experiments = event.idea_experiments
        elif isinstance(event, BrainSelected | BrainFellBack | ModelCalled | IdeaDropped | LeapStarted | HoneymoonStarted | RolledBack):
            self._apply_thinking(event)
        elif isinstance(event, MessageRejected):
            self.dead_letters += 1
            self.dead_letter_reasons.append(f"{event.producer}: {one_line(event.reason)}")

    def _apply_thinking(self, event: Event) -> None:
        """What the brains did: which model, its calls and cost, its fallbacks, the loop's structural decisions."""
        if isinstance(event, BrainSelected):
            budgets = []
            if event.token_budget is not None:
                budgets.append(f"token budget {event.token_budget}")
            if event.cost_budget is not None:
                budgets.append(f"cost budget ${event.cost_budget:g}")
            self.brains[event.agent] = event.brain + (f" ({', '.join(budgets)})" if budgets else "")
        elif isinstance(event, ModelCalled):
            self.model_calls[event.agent] += 1
            self.model_tokens += event.prompt_tokens + event.completion_tokens
            self.model_cost += event.cost
            if event.outcome == "failed":
                self.model_failures.append(f"{event.agent} {event.call_key}: {event.error_kind}: {one_line(event.error or '')}")
        elif isinstance(event, BrainFellBack):
            scope = "from then on" if event.permanent else "for this answer"
            self.fallbacks.append(f"{event.agent} ({event.purpose}) fell back to the no-model brain {scope}: {one_line(event.reason)}")
        elif isinstance(event, IdeaDropped):
            self.dropped_ideas.append(Rejection(event.idea.idea_id, "dropped", {"reason": event.reason, "error": event.error}))
        elif isinstance(event, LeapStarted | HoneymoonStarted | RolledBack):
            self.loop_decisions.append(f"{event.event_type}: {one_line(event.reason)}")


def unique(events: list[Event]) -> list[Event]:
    """The events with any repeated event id dropped, order kept."""
    seen: set[Any] = set()
    kept: list[Event] = []
    for event in events:
        if event.event_id is not None:
            if event.event_id in seen:
                continue
            seen.add(event.event_id)
        kept.append(event)
    return kept


# ---------------------------------------------------------------- formatting helpers


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.6g}"


def compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def one_line(text: str, limit: int = DETAIL_LIMIT) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def rule_counts(rules: Counter[str]) -> str:
    return ", ".join(f"{rule} x{count}" for rule, count in sorted(rules.items())) or "-"


def metrics_text(metrics: dict[str, float]) -> str:
    return " ".join(f"{name}={number(value)}" for name, value in sorted(metrics.items()))


# ---------------------------------------------------------------- one line per event


def describe(event: Event) -> str:  # noqa: C901, PLR0911, PLR0912 - one branch per event type reads best
    """A one-line account of what an event says, for progress and the audit timeline."""
    if isinstance(event, CampaignStarted):
        b = event.budget
        text = f"paper {event.paper_path}; budget {b.max_experiments} idea experiments, {number(b.wall_clock_seconds)} s, parallelism {b.parallelism}"
    elif isinstance(event, ResourcesPrepared):
        text = f"snapshot {event.snapshot_sha256[:12]} ({len(event.files)} files, {event.size_bytes} bytes)"
    elif isinstance(event, ResourcesFailed | ObjectiveFailed):
        text = event.reason
    elif isinstance(event, ObjectiveSet):
        o = event.objective
        text = f"{o.primary_metric} ({o.direction}), reported {number(o.reported_value)}; {o.title}"
    elif isinstance(event, ProtectionEstablished):
        text = f"{len(event.protected_files)} protected files"
    elif isinstance(event, EnvironmentSpecified):
        text = f"{event.kind}, {len(event.requirements)} requirements" + (f", unsatisfied: {', '.join(event.unsatisfied)}" if event.unsatisfied else "")
    elif isinstance(event, EnvironmentReady):
        repairs = f", repairs: {', '.join(event.repairs_applied)}" if event.repairs_applied else ""
        text = f"{event.environment_bin} (smoke {event.smoke_seconds:.1f} s{repairs})"
    elif isinstance(event, EnvironmentFailed):
        text = f"{event.stage} attempt {event.attempt}{' (final)' if event.final else ''}: {event.signature}"
    elif isinstance(event, BaselineRequested):
        text = f"seeds {compact(event.seeds)}, params {compact(event.params)}"
    elif isinstance(event, RepairProposed):
        text = f"{event.action} {event.argument} for {event.signature}" + (" (from memory)" if event.from_memory else "")
    elif isinstance(event, RepairExhausted):
        text = f"{event.signature}: {event.reason}"
    elif isinstance(event, ExperimentDispatched):
        text = f"{event.experiment_id} ({event.purpose}, seed {event.seed}) {compact(event.params)}"
    elif isinstance(event, JobStarted):
        text = f"{event.experiment_id} on {event.runner} (delivery {event.delivery})"
    elif isinstance(event, JobCompleted):
        text = f"{event.experiment_id} {metrics_text(event.metrics)} in {event.duration_seconds:.1f} s"
        if event.applied:
            text += f"; {', '.join(event.applied)}"
    elif isinstance(event, JobFailed):
        text = f"{event.experiment_id} {event.stage}: {event.reason}"
    elif isinstance(event, ResultValidated):
        text = f"{event.experiment_id} {metrics_text(event.metrics)}"
    elif isinstance(event, ResultRejected):
        text = f"{event.experiment_id} rule {event.rule}: {compact(event.evidence)}"
    elif isinstance(event, BaselineReproduced):
        text = (
            f"{event.metric} {number(event.mean)} ± {number(event.std)} over {len(event.values)} seeds "
            f"(reported {number(event.reported_value)}, gap {signed(event.gap_to_reported)})"
        )
    elif isinstance(event, IdeasRequested):
        text = f"round {event.round}: {event.count} ideas"
    elif isinstance(event, IdeasProposed):
        text = f"round {event.round}: {len(event.ideas)} ideas from {event.brain}"
    elif isinstance(event, IdeaCleared):
        text = f"{event.idea.idea_id} {compact(event.idea.params)}"
    elif isinstance(event, IdeaRejected):
        text = f"{event.idea.idea_id} rule {event.rule}: {compact(event.evidence)}"
    elif isinstance(event, BestUpdated):
        text = f"{event.idea_id} {number(event.value)} (was {number(event.previous_value)})"
    elif isinstance(event, StallDetected):
        text = f"{event.experiment_id} silent {event.silent_seconds:.0f} s ({event.state})"
    elif isinstance(event, BudgetExhausted):
        text = f"{event.budget}: used {number(event.used)} of {number(event.limit)}"
    elif isinstance(event, CandidateNominated):
        text = f"{event.idea_id} attempt {event.attempt}, screening {number(event.screening_value)}"
    elif isinstance(event, VerificationDispatched):
        text = f"{event.experiment_id} ({event.arm}, seed {event.seed}{', leakage canary' if event.canary else ''})"
    elif isinstance(event, SotaCertified):
        text = (
            f"{event.idea_id}: {number(event.candidate_mean)} vs {number(event.baseline_mean)}, "
            f"gain {signed(event.gain_vs_reproduced)} vs reproduced, {signed(event.gain_vs_reported)} vs reported, p={number(event.p_value)}"
        )
    elif isinstance(event, SotaRefuted):
        text = f"{event.idea_id} rule {event.rule}: {event.reason}"
    elif isinstance(event, CampaignCompleted):
        text = f"{event.outcome}: {event.reason} ({event.idea_experiments} idea experiments)"
    elif isinstance(event, ModelCalled):
        failure = f" {event.error_kind}: {event.error}" if event.outcome != "answered" else ""
        text = f"{event.agent} {event.purpose} {event.call_key} on {event.backend}:{event.model}: {event.outcome}{failure} ({event.prompt_tokens}+{event.completion_tokens} tokens, {event.latency_seconds:.1f} s)"
    elif isinstance(event, BrainSelected):
        text = f"{event.agent} thinks with {event.brain}" + (f", token budget {event.token_budget}" if event.token_budget is not None else "") + (f", cost budget ${event.cost_budget:g}" if event.cost_budget is not None else "")
    elif isinstance(event, BrainFellBack):
        text = f"{event.agent} {event.purpose} -> no-model ({event.kind}{', permanent' if event.permanent else ''}): {event.reason}"
    elif isinstance(event, IdeaDropped):
        text = f"{event.idea.idea_id} {event.idea.kind}: {event.reason}: {event.error}"
    elif isinstance(event, LeapStarted | HoneymoonStarted | RolledBack):
        text = event.reason
    elif isinstance(event, MessageRejected):
        text = f"{event.subject}: {event.reason}"
    else:
        text = ""
    return one_line(text)


def progress_line(event: Event) -> str | None:
    """The live progress line for an event, or None for events too chatty to show."""
    if event.event_type in QUIET_IN_PROGRESS:
        return None
    clock = event.time.strftime("%H:%M:%S") if event.time else "--:--:--"
    return f"{clock} {event.producer or '?':<11} {event.event_type:<22} {describe(event)}".rstrip()


# ---------------------------------------------------------------- the summary as text


def render_text(summary: CampaignSummary) -> str:
    """The plain summary a run prints at the end and a replay prints again."""
    lines = [f"Campaign      {summary.campaign}"]
    if summary.paper_title is not None:
        lines.append(f"Paper         {summary.paper_title} (method: {summary.paper_method})")
    if summary.primary_metric is not None:
        lines.append(f"Objective     {summary.primary_metric} ({summary.direction}), reported {number(summary.reported_value)}")
    if summary.baseline is not None:
        b = summary.baseline
        verdict = "" if b.reproduced else f": NOT REPRODUCED, beyond the tolerance of {number(b.tolerance)}"
        lines.append(f"Baseline      {number(b.mean)} ± {number(b.std)} over {b.n} seeds, gap to reported {signed(b.gap)}{verdict}")
    else:
        lines.append("Baseline      not measured")
    lines.append(f"Experiments   {'purpose':<13}{'dispatched':>11}{'validated':>10}{'rejected':>9}{'failed':>7}  rejection rules")
    for purpose in PURPOSES:
        c = summary.experiments[purpose]
        lines.append(f"              {purpose:<13}{c.dispatched:>11}{c.validated:>10}{c.rejected:>9}{c.failed:>7}  {rule_counts(c.rejected_rules)}")
    idea_rules = Counter(r.rule for r in summary.idea_rejections)
    lines.append(
        f"Ideas         proposed {summary.ideas_proposed}, cleared {summary.ideas_cleared}, "
        f"rejected {summary.ideas_rejected} ({rule_counts(idea_rules)})"
    )
    if summary.best:
        lines.append("Best so far")
        for step in summary.best:
            lines.append(f"  {step.idea_id}  {number(step.value)} (was {number(step.previous_value)})  {compact(step.params)}")
    else:
        lines.append("Best so far   none")
    for refutation in summary.refutations:
        lines.append(f"Refuted       {refutation.idea_id}: rule {refutation.rule}, p={number(refutation.p_value)}: {one_line(refutation.reason)}")
    if summary.certified is not None:
        c = summary.certified
        lines.append(f"Certified     {c.idea_id} {compact(c.params)}")
        lines.append(
            f"              {c.metric} {number(c.candidate_mean)} vs {number(c.baseline_mean)} (fresh baseline, "
            f"{len(c.candidate_values)}+{len(c.baseline_values)} seeds)"
        )
        lines.append(f"              gain vs reproduced {signed(c.gain_vs_reproduced)}, gain vs reported {signed(c.gain_vs_reported)} (reported {number(c.reported_value)})")
        lines.append(f"              {c.test}: statistic {number(c.statistic)}, p={number(c.p_value)}, alpha {number(c.alpha)}")
        if c.checks:
            lines.append(f"              checks: {checks_text(c.checks)}")
    outcome = f"{summary.outcome}: {one_line(summary.outcome_reason or '')}" if summary.outcome else "running (no CampaignCompleted yet)"
    lines.append(f"Outcome       {outcome}")
    lines += thinking_lines(summary)
    lines.append(f"Dead letters  {summary.dead_letters}")
    lines.append(f"Events        {summary.event_count}")
    return "\n".join(lines) + "\n"


def thinking_lines(summary: CampaignSummary) -> list[str]:
    """The brains' part of the summary; nothing for a campaign that never had a model."""
    lines = [f"Brain         {agent}: {brain}" for agent, brain in sorted(summary.brains.items())]
    if summary.model_calls:
        per_agent = ", ".join(f"{agent} {count}" for agent, count in sorted(summary.model_calls.items()))
        lines.append(f"Model calls   {sum(summary.model_calls.values())} ({per_agent}), {summary.model_tokens} tokens, ${summary.model_cost:.4f}")
    lines += [f"Fell back     {one_line(text)}" for text in summary.fallbacks]
    lines += [f"Loop          {text}" for text in summary.loop_decisions]
    return lines


# ---------------------------------------------------------------- the report file


def checks_text(checks: dict[str, Any]) -> str:
    """The certification checks in one line: each passed check with its deciding number."""
    parts = []
    for name, result in sorted(checks.items()):
        retained = result.get("retained") if isinstance(result, dict) else None
        detail = f" (kept {max(retained, 0.0):.0%} of its advantage on shuffled labels)" if isinstance(retained, float) else ""
        parts.append(f"{name.replace('_', ' ')} passed{detail}")
    return "; ".join(parts)


def evidence_blocks(kind: str, items: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    """Each rejection's full evidence, so hashes, paths and statistics are readable in the report."""
    out: list[str] = []
    for subject, rule, evidence in items:
        text = json.dumps(evidence, sort_keys=True, indent=1, default=str)
        text = text if len(text) <= EVIDENCE_LIMIT else text[:EVIDENCE_LIMIT] + "\n..."
        out += [f"### {kind} {subject}: rule {rule}", "", "```json", text, "```", ""]
    return out


def cell(text: str) -> str:
    return one_line(text).replace("|", "\\|")


def render_markdown(summary: CampaignSummary, events: list[Event]) -> str:
    """The campaign report: the summary, every rejection with its evidence, and the audit timeline."""
    heading = f"# AutoSOTA campaign {summary.campaign}"
    if summary.reproduced is False:
        heading += f": not reproduced (the paper's {summary.primary_metric} was not reproduced; every claim below is against the measured baseline)"
    out = [heading, ""]
    out += ["## Summary", "", "```text", render_text(summary).rstrip("\n"), "```", ""]
    if summary.best:
        out += ["## Best-so-far lineage", "", "| idea | experiment | value | previous | params |", "|---|---|---|---|---|"]
        out += [f"| {cell(s.idea_id)} | {cell(s.experiment_id)} | {number(s.value)} | {number(s.previous_value)} | `{cell(compact(s.params))}` |" for s in summary.best]
        out.append("")
    if summary.certified is not None:
        c = summary.certified
        out += [
            "## Certification",
            "",
            f"- idea: `{c.idea_id}` with params `{compact(c.params)}`",
            f"- {c.metric}: candidate {compact(c.candidate_values)} (mean {number(c.candidate_mean)}), "
            f"fresh baseline {compact(c.baseline_values)} (mean {number(c.baseline_mean)})",
            f"- gain vs reproduced baseline: {signed(c.gain_vs_reproduced)}; gain vs reported {number(c.reported_value)}: {signed(c.gain_vs_reported)}",
            f"- {c.test}: statistic {number(c.statistic)}, p = {number(c.p_value)}, alpha = {number(c.alpha)}",
        ]
        out += [f"- secondary {name}: {compact(means)}" for name, means in sorted(c.secondary_means.items())]
        out += [f"- check {name}: `{compact(result)}`" for name, result in sorted(c.checks.items())]
        if c.patch:
            out += ["", "```diff", c.patch.rstrip("\n"), "```"]
        ran = next((e for e in events if isinstance(e, JobCompleted) and e.purpose == "verification" and "-candidate-" in e.experiment_id and (e.applied or e.applied_patch)), None)
        if ran is not None:
            out += ["", f"How the parameters reached the code (`{cell(ran.train_command)}`):", ""]
            out += [f"- {cell(line)}" for line in ran.applied]
            if ran.applied_patch:
                out += ["", "```diff", ran.applied_patch.rstrip("\n"), "```"]
        out.append("")
    if summary.refutations:
        out += ["## Refuted candidates", "", "| idea | rule | p | reason |", "|---|---|---|---|"]
        out += [f"| {cell(r.idea_id)} | {cell(r.rule)} | {number(r.p_value)} | {cell(r.reason)} |" for r in summary.refutations]
        out.append("")
        out += evidence_blocks("refuted", [(r.idea_id, r.rule, r.evidence) for r in summary.refutations if r.evidence])
    if summary.result_rejections or summary.idea_rejections:
        out += ["## Rejections", "", "| kind | id | rule | evidence |", "|---|---|---|---|"]
        out += [f"| result | {cell(r.subject_id)} | {cell(r.rule)} | `{cell(compact(r.evidence))}` |" for r in summary.result_rejections]
        out += [f"| idea | {cell(r.subject_id)} | {cell(r.rule)} | `{cell(compact(r.evidence))}` |" for r in summary.idea_rejections]
        out.append("")
        out += evidence_blocks("result", [(r.subject_id, r.rule, r.evidence) for r in summary.result_rejections])
        out += evidence_blocks("idea", [(r.subject_id, r.rule, r.evidence) for r in summary.idea_rejections])
    if summary.brains or summary.fallbacks or summary.dropped_ideas or summary.loop_decisions:
        out += ["## Models and structural decisions", ""]
        out += [f"- {cell(agent)} thinks with {cell(brain)}" for agent, brain in sorted(summary.brains.items())]
        if summary.model_calls:
            out.append(f"- {sum(summary.model_calls.values())} model calls, {summary.model_tokens} tokens, ${summary.model_cost:.4f}; every call is a ModelCalled event below")
        out += [f"- failed call: {cell(text)}" for text in summary.model_failures]
        out += [f"- {cell(text)}" for text in summary.fallbacks]
        out += [f"- {cell(text)}" for text in summary.loop_decisions]
        out += [f"- idea {cell(r.subject_id)} dropped: {cell(str(r.evidence.get('reason', '')))}: `{cell(str(r.evidence.get('error', '')))}`" for r in summary.dropped_ideas]
        out.append("")
    if summary.dead_letter_reasons:
        out += ["## Dead letters", ""]
        out += [f"- {cell(reason)}" for reason in summary.dead_letter_reasons]
        out.append("")
    out += ["## Audit timeline", "", "| time | producer | event | detail |", "|---|---|---|---|"]
    for event in unique(events):
        if event.campaign != summary.campaign:
            continue
        when = event.time.isoformat(timespec="milliseconds") if event.time else "-"
        out.append(f"| {when} | {cell(event.producer or '-')} | {event.event_type} | {cell(describe(event))} |")
    out.append("")
    return "\n".join(out)

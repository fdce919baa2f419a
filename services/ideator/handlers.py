"""Thin bus handlers of the ideator service: ask the brains, check the model's diffs, record the round.

A round's structural ideas come from the model as diffs against the base code. A diff that does
not apply is sent back once with git's error; if the revision does not apply either, the idea is
dropped with that reason. Parameter ideas fill the rest of the round.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any

from faststream.nats import NatsBroker

from services.ideator.domain import (
    AGENT,
    IdeatorState,
    RoundPlan,
    base_of,
    decide_proposal,
    history_notes,
    ideation_request,
    plan_round,
    scope_for,
)
from services.ideator.workbench import BenchError, Workbench
from shared.brain import Brain, CallScope, CodeIdea, CodeIdeationRequest, Thought
from shared.brains.recording import document_brain_events, offload_prompts
from shared.contracts import BrainFellBack, Event, Idea, IdeaBase, IdeaDropped, IdeasRequested, ModelCalled
from shared.runtime import Context, Output, Reaction, ServiceRuntime

NOT_APPLYING = "its diff did not apply to the base code, even after it was sent back once with git's error"


@dataclass
class StructuralRound:
    ideas: list[Idea] = field(default_factory=list)
    dropped: list[IdeaDropped] = field(default_factory=list)
    record: list[Event] = field(default_factory=list)


def reaction(brain: Brain) -> Reaction[IdeatorState]:
    async def react(state: IdeatorState, event: Event, ctx: Context) -> list[Output]:
        if not isinstance(event, IdeasRequested):
            return []
        request = ideation_request(state, event)
        if request is None:
            return []
        plan = plan_round(state, event, brain)
        structural = StructuralRound()
        if plan.structural > 0 and state.snapshot_sha256 is not None:
            try:
                snapshot = await ctx.artifacts.get(state.snapshot_sha256)
            except Exception as error:  # noqa: BLE001 - the round is answered by parameter search all the same
                structural.record.append(_cannot_build(event, f"the snapshot {state.snapshot_sha256[:12]} could not be read: {error!r}"))
            else:
                structural = await asyncio.to_thread(think_structurally, brain, state, event, plan, snapshot)
        remaining = event.count - len(structural.ideas)
        ideas = await asyncio.to_thread(brain.propose_ideas, request.model_copy(update={"count": remaining})) if remaining > 0 else []
        events = decide_proposal(event, [*structural.ideas, *ideas], plan.brain, [*plan.record, *structural.record], structural.dropped)
        return list(await offload_prompts(events, ctx.artifacts if ctx is not None else None))

    return react


def think_structurally(brain: Any, state: IdeatorState, requested: IdeasRequested, plan: RoundPlan, snapshot: bytes) -> StructuralRound:
    """Ask the model for structural ideas against the base code; check, revise once, compose each diff."""
    assert state.objective is not None
    base = base_of(state, requested)
    outcome = StructuralRound()
    try:
        bench = Workbench(snapshot, base.patch)
    except BenchError as error:
        outcome.record.append(_cannot_build(requested, str(error)))
        return outcome
    with bench:
        editable, read_only = bench.files(state.objective.protected_paths)
        question = CodeIdeationRequest(
            campaign=requested.campaign, round=requested.round, count=plan.structural, objective=state.objective,
            base=base, files=editable, read_only=read_only, history=history_notes(state),
        )
        scope = scope_for(state, requested)
        thought = brain.think_code_ideas(question, scope)
        _keep(outcome, thought, scope, "code-ideas")
        for index, proposed in enumerate(thought.answer):
            idea_id = f"r{requested.round}-c{index}"
            patch, error = _resolve(bench, proposed)
            if error is not None:
                revision_scope = _after(scope_for(state, requested, f"/revise-{index}"), outcome.record)
                revised = brain.think_code_revision(question, proposed, error, revision_scope)
                _keep(outcome, revised, revision_scope, "code-revision")
                if revised.answer is not None:
                    proposed = revised.answer
                    patch, error = _resolve(bench, proposed)
            if patch is None:
                outcome.dropped.append(IdeaDropped(campaign=requested.campaign, idea=_idea(idea_id, proposed, base, None), round=requested.round, reason=NOT_APPLYING, error=(error or "")[:2000]))
                continue
            outcome.ideas.append(_idea(idea_id, proposed, base, patch))
    return outcome


def _resolve(bench: Workbench, idea: CodeIdea) -> tuple[str | None, str | None]:
    """(the diff against the snapshot, None) when the idea's diff applies to the base, else (None, why not)."""
    if not idea.diff.strip():
        return None, "the answer holds no diff"
    error = bench.check(idea.diff)
    if error is not None:
        return None, error
    try:
        patch = bench.compose(idea.diff)
    except BenchError as failure:
        return None, str(failure)
    return (patch, None) if patch.strip() else (None, "the diff changes nothing")


def _cannot_build(requested: IdeasRequested, reason: str) -> BrainFellBack:
    """No base code to show the model this round: parameter search answers it, and the model is asked again later."""
    return BrainFellBack(campaign=requested.campaign, agent=AGENT, purpose="code-ideas", kind="workbench", reason=reason, permanent=False)


def _idea(idea_id: str, proposed: CodeIdea, base: IdeaBase, patch: str | None) -> Idea:
    return Idea(
        idea_id=idea_id,
        kind=proposed.kind,
        params=dict(base.params),
        patch=patch if patch is not None else proposed.diff,
        rationale=f"{proposed.title}: {proposed.rationale}",
        risk=proposed.risk,
        expected_effect=proposed.expected_effect,
    )


def _keep(outcome: StructuralRound, thought: Thought[Any], scope: CallScope, purpose: str) -> None:
    outcome.record.extend(thought.events(scope, purpose))


def _after(scope: CallScope, record: list[Event]) -> CallScope:
    """The scope with the usage of the calls this round has made already, so budgets hold within it."""
    calls = [e for e in record if isinstance(e, ModelCalled)]
    return replace(
        scope,
        tokens_used=scope.tokens_used + sum(c.prompt_tokens + c.completion_tokens for c in calls),
        cost_used=scope.cost_used + sum(c.cost for c in calls),
    )


def register(broker: NatsBroker, runtime: ServiceRuntime[IdeatorState], brain: Brain) -> None:
    runtime.subscribe_events(broker, reaction(brain), "Consumes IdeasRequested and the results of earlier ideas; proposes ideas once per round.")
    document_brain_events(broker, runtime.subjects, AGENT)

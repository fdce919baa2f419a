"""A campaign of one idea without the bus: the real runner code runs the work, the supervisor judges.

The same pure decisions the supervisor service makes are driven here in the order the bus would
deliver their inputs; each work item is executed by the runner service's own `Runner.execute`
(patch applied with git, canary planted, commands sandboxed, protected files hashed) on a real
example paper. Only the transport is missing, which the end-to-end tests supply.
"""

from __future__ import annotations

import asyncio
import os
import copy
import sys
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

from shared.settings import Settings
from typing import Any

from services.objective.domain import build_objective
from services.runner.domain import Capacity
from services.runner.handlers import Runner
from services.supervisor.domain import (
    SupervisorDomain,
    SupervisorState,
    decide_failure,
    decide_ideas,
    decide_protection,
    decide_result,
    plan_verification,
    protected_sources_needed,
)
from shared.contracts import (
    BaselineRequested,
    Budget,
    CampaignStarted,
    CandidateNominated,
    Event,
    ExperimentDispatched,
    Idea,
    IdeaRejected,
    IdeasProposed,
    JobCompleted,
    JobFailed,
    Objective,
    ObjectiveRules,
    ObjectiveSet,
    ResourcesPrepared,
    ResultRejected,
    ResultValidated,
    SotaCertified,
    SotaRefuted,
    WorkItem,
)
from shared.sandbox import LocalSandbox
from shared.workspace import pack, read_member

CAMPAIGN = "cheats"
PARALLEL_RUNS = max(4, (os.cpu_count() or 4))


@dataclass
class Paper:
    """An example paper as the supervisor sees it once its objective and protection are set."""

    folder: Path
    snapshot: bytes
    objective: Objective
    state: SupervisorState
    baseline: list[Event] = field(default_factory=list)


@dataclass
class Outcome:
    """Every supervisor decision about one idea, and the last one."""

    decisions: list[Event]

    @property
    def final(self) -> Event:
        return self.decisions[-1]

    @property
    def rule(self) -> str | None:
        return getattr(self.final, "rule", None)

    @property
    def stage(self) -> str:
        return {"IdeaRejected": "audit", "ResultRejected": "result", "SotaRefuted": "verification",
                "SotaCertified": "verification"}.get(self.final.event_type, self.final.event_type)


def evolve(state: SupervisorState, *events: Event) -> SupervisorState:
    domain = SupervisorDomain()
    for event in events:
        state = domain.evolve(state, event)
    return state


def objective_of(folder: Path, files: dict[str, str]) -> Objective:
    card = tomllib.loads((folder / "autosota.toml").read_text())
    paper_text = (folder / card["paper"]["text"]).read_text()
    requirements = folder / card.get("environment", {}).get("requirements", "requirements.txt")
    return build_objective(card, paper_text, files, requirements.read_text() if requirements.is_file() else None)


def open_paper(folder: Path, verification_seeds: int = 2, rules: ObjectiveRules | None = None) -> Paper:
    """Snapshot, objective, protection and baseline request, exactly as the services would record them."""
    snapshot = pack(folder)
    objective = objective_of(folder, snapshot.files)
    if rules is not None:
        objective = objective.model_copy(update={"rules": rules})
    digest = "snapshot-" + folder.name
    state = evolve(
        SupervisorState(),
        CampaignStarted(campaign=CAMPAIGN, paper_path=str(folder), budget=Budget(verification_seeds=verification_seeds), pool="cpu"),
        ResourcesPrepared(campaign=CAMPAIGN, snapshot_sha256=digest, files=snapshot.files, size_bytes=snapshot.size_bytes),
        ObjectiveSet(campaign=CAMPAIGN, objective=objective, snapshot_sha256=digest),
    )
    sources = {path: read_member(snapshot.data, path).decode() for path in protected_sources_needed(state)}
    state = evolve(state, *decide_protection(state, CAMPAIGN, sources))
    state = evolve(state, BaselineRequested(campaign=CAMPAIGN, environment_bin=str(Path(sys.executable).parent),
                                            params=objective.baseline_params, seeds=objective.baseline_seeds))
    return Paper(folder, snapshot.data, objective, state)


class LocalRunners:
    """The runner service's execution path, without its bus: one workspace per work item.

    confine=True is the runner's default sandbox (namespaces where the platform allows them:
    protected paths read-only, no process outlives its command); confine=False leaves only the
    supervisor's own checks between a cheat and a certificate, as on a platform without them.
    """

    def __init__(self, data_dir: Path, confine: bool = True) -> None:
        self.data_dir = data_dir
        self.sandbox = LocalSandbox(confine=confine)
        self.gate = asyncio.Semaphore(PARALLEL_RUNS)
        self.started = 0

    async def run(self, paper: Paper, item: WorkItem) -> JobCompleted | JobFailed:
        settings = Settings(data_dir=self.data_dir)
        # Each run gets its own runner folder: campaigns of one reuse experiment ids.
        self.started += 1
        runtime = SimpleNamespace(instance=f"runner-{self.started}", settings=settings, nc=None, clock=lambda: datetime.now(UTC))
        runner = Runner(runtime, self.sandbox, Capacity(pool="cpu"))  # type: ignore[arg-type]
        cached = runner.root.parent / "snapshots" / item.snapshot_sha256
        cached.parent.mkdir(parents=True, exist_ok=True)
        if not cached.exists():
            partial = cached.with_suffix(f".{self.started}.partial")
            partial.write_bytes(paper.snapshot)
            partial.replace(cached)
        async with self.gate:
            outcome = await runner.execute(item)
        assert isinstance(outcome, JobCompleted | JobFailed)
        return outcome

    async def run_all(self, paper: Paper, items: list[WorkItem]) -> list[JobCompleted | JobFailed]:
        return list(await asyncio.gather(*(self.run(paper, item) for item in items)))


def work_item(paper: Paper, experiment_id: str, purpose: str, params: dict[str, Any], seed: int, patch: str | None) -> WorkItem:
    """The work item the scheduler sends for a baseline or idea run."""
    state, objective = paper.state, paper.objective
    assert state.snapshot_sha256 and state.environment_bin
    return WorkItem(
        campaign=CAMPAIGN, experiment_id=experiment_id, purpose=purpose, dispatcher="scheduler",  # type: ignore[arg-type]
        snapshot_sha256=state.snapshot_sha256, params=params, seed=seed, patch=patch,
        train_command=objective.train_command, evaluate_command=objective.evaluate_command,
        environment_bin=state.environment_bin, protected_paths=list(objective.protected_paths),
        timeout_seconds=objective.timeout_seconds, pool="cpu",
    )


def judge(state: SupervisorState, outcome: JobCompleted | JobFailed) -> tuple[SupervisorState, list[Event]]:
    if isinstance(outcome, JobFailed):
        state = evolve(state, outcome)
        decisions = decide_failure(state, outcome)
        return evolve(state, *decisions), [outcome, *decisions]
    decisions = decide_result(state, outcome)
    return evolve(state, *decisions), decisions


async def reproduce_baseline(paper: Paper, runners: LocalRunners) -> Paper:
    """Run and validate the paper's baseline seeds; every idea is judged against their mean."""
    seeds = paper.objective.baseline_seeds
    items = [work_item(paper, f"baseline-s{seed}", "baseline", paper.objective.baseline_params, seed, None) for seed in seeds]
    state = evolve(paper.state, *(ExperimentDispatched(campaign=CAMPAIGN, experiment_id=i.experiment_id, purpose="baseline",
                                                        params=i.params, seed=i.seed) for i in items))
    for outcome in await runners.run_all(paper, items):
        state, decisions = judge(state, outcome)
        paper.baseline += decisions
    assert all(isinstance(event, ResultValidated) for event in paper.baseline), paper.baseline
    paper.state = state
    return paper


async def campaign_of_one(paper: Paper, idea: Idea, runners: LocalRunners, verification_seeds: int | None = None) -> Outcome:
    """Audit the idea, run it, and if it beats the baseline mean, verify it: what the supervisor decides at each step."""
    state = copy.deepcopy(paper.state)
    if verification_seeds is not None:
        state.budget = state.budget.model_copy(update={"verification_seeds": verification_seeds})
    objective = paper.objective
    audit = decide_ideas(state, IdeasProposed(campaign=CAMPAIGN, ideas=[idea], brain="cheats", round=1))
    state = evolve(state, *audit)
    if isinstance(audit[0], IdeaRejected):
        return Outcome(audit)
    params = {**objective.baseline_params, **idea.params}
    item = work_item(paper, f"idea-{idea.idea_id}", "idea", params, objective.baseline_seeds[0], idea.patch)
    state = evolve(state, ExperimentDispatched(campaign=CAMPAIGN, experiment_id=item.experiment_id, purpose="idea",
                                               idea_id=idea.idea_id, params=params, seed=item.seed, patch=idea.patch))
    [screened] = await runners.run_all(paper, [item])
    state, decisions = judge(state, screened)
    history = [*audit, *decisions]
    result = decisions[-1]
    if not isinstance(result, ResultValidated):
        return Outcome(history)
    baseline_mean = sum(e.metrics[objective.primary_metric] for e in paper.baseline if isinstance(e, ResultValidated)) / len(paper.baseline)
    if not objective.better(result.metrics[objective.primary_metric], baseline_mean):
        return Outcome(history)
    nominated = CandidateNominated(campaign=CAMPAIGN, idea_id=idea.idea_id, params=params, patch=idea.patch,
                                   screening_value=result.metrics[objective.primary_metric], attempt=1)
    state = evolve(state, nominated)
    dispatched, items = plan_verification(state, nominated)
    state = evolve(state, *dispatched)
    history += [nominated, *dispatched]
    # Results are judged as they come back, like on the bus; a verdict cancels the runs still going.
    running = [asyncio.ensure_future(runners.run(paper, work)) for work in items]
    try:
        for finished in asyncio.as_completed(running):
            state, decisions = judge(state, await finished)
            history += decisions
            if any(isinstance(event, SotaCertified | SotaRefuted) for event in decisions):
                break
    finally:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    return Outcome(history)


def rejections(outcome: Outcome) -> list[ResultRejected]:
    return [event for event in outcome.decisions if isinstance(event, ResultRejected)]

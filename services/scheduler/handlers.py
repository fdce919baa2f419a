"""Thin bus handlers of the scheduler: the campaign-start control request and the event loop."""

from __future__ import annotations

import json
from typing import Any

from faststream.nats import NatsBroker, NatsMessage
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.scheduler.domain import CampaignState, decide, start, stop
from shared.contracts import Budget, Event, RepoPath, WorkItem
from shared.runtime import Context, Outgoing, Output, ServiceRuntime


MAX_START_REQUEST_BYTES = 16 * 1024


class StartCampaign(BaseModel):
    """Control request: start a campaign on a paper folder."""

    model_config = ConfigDict(extra="forbid")

    campaign: str = Field(pattern=r"^[A-Za-z0-9_-]{1,80}$")
    paper_path: RepoPath
    budget: Budget = Field(default_factory=Budget)
    pool: str = Field(default="cpu", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    continue_unreproduced: bool = False


class StopCampaign(BaseModel):
    """Control request: stop a running campaign."""

    model_config = ConfigDict(extra="forbid")

    campaign: str = Field(pattern=r"^[A-Za-z0-9_-]{1,80}$")
    reason: str = Field(default="no reason given", max_length=500)


def as_outputs(runtime: ServiceRuntime[CampaignState], decisions: list[Event | WorkItem]) -> list[Output]:
    return [
        Outgoing(runtime.subjects.work(d.pool), d.model_dump(mode="json")) if isinstance(d, WorkItem) else d
        for d in decisions
    ]


def register(broker: NatsBroker, runtime: ServiceRuntime[CampaignState]) -> None:
    async def react(state: CampaignState, event: Event, ctx: Context) -> list[Output]:
        return as_outputs(runtime, decide(state, event))

    runtime.subscribe_events(broker, react, "Consumes the whole event stream; drives baseline, ideas, nomination and completion.")

    @broker.subscriber(
        runtime.subjects.control("campaign.start"),
        title="scheduler:campaign.start",
        description="Request/reply: start a campaign. Idempotent for the same campaign id.",
    )
    async def on_start(msg: NatsMessage) -> dict[str, Any]:
        if len(msg.body) > MAX_START_REQUEST_BYTES:
            return {"accepted": False, "error": f"invalid start request: {len(msg.body)} bytes, the limit is {MAX_START_REQUEST_BYTES}"}
        try:
            request = StartCampaign.model_validate(json.loads(msg.body))
        except (ValueError, ValidationError) as error:
            return {"accepted": False, "error": f"invalid start request: {error}"}

        async def begin(state: CampaignState, ctx: Context) -> list[Output]:
            if state.started is not None:
                return []
            return [start(request.campaign, request.paper_path, request.budget, request.pool, request.continue_unreproduced)]

        outputs = await runtime.command(request.campaign, begin)
        return {"campaign": request.campaign, "accepted": True, "existing": not outputs}

    @broker.subscriber(
        runtime.subjects.control("campaign.stop"),
        title="scheduler:campaign.stop",
        description="Request/reply: stop a running campaign; it completes as stopped and its work is withdrawn.",
    )
    async def on_stop(msg: NatsMessage) -> dict[str, Any]:
        try:
            request = StopCampaign.model_validate_json(msg.body[:MAX_START_REQUEST_BYTES])
        except (ValueError, ValidationError) as error:
            return {"stopped": False, "error": f"invalid stop request: {error}"}

        async def halt(state: CampaignState, ctx: Context) -> list[Output]:
            if state.started is None:
                return []
            return list(stop(state, request.reason))

        state = runtime.state(request.campaign)
        if state.started is None:
            return {"campaign": request.campaign, "stopped": False, "error": f"no campaign {request.campaign!r}"}
        outputs = await runtime.command(request.campaign, halt)
        return {"campaign": request.campaign, "stopped": bool(outputs), "already_ended": not outputs}

"""The brain with a model: structural ideas as unified diffs, repairs, and objective readings.

Parameter ideas and rule-matched repairs still come from the no-model brain. Each question is a
short conversation: the answer must validate against a pydantic model sent as a JSON schema; an
answer that does not is sent back with the validation error a bounded number of times. Every
exchange becomes a `ModelCalled` event in the returned `Thought`. Budgets, timeouts, connection
errors, a missing model and rate limits end in a `Fallback` to the no-model brain, never a stall.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from shared.brain import (
    CallScope,
    CodeIdea,
    CodeIdeas,
    CodeIdeationRequest,
    Fallback,
    IdeationRequest,
    NoModelBrain,
    ObjectiveReading,
    ObjectiveReadingRequest,
    RepairRequest,
    RepairSuggestion,
    Thought,
    rule_based_repair,
)
from shared.brains.recording import (
    LiveTransport,
    RecordedAnswers,
    RecordedTransport,
    Transport,
    model_called,
)
from shared.brains.settings import BrainSettings
from shared.brains.wire import ChatRequest, OllamaBackend, OpenAIBackend, ScriptedBackend, ollama_reachable
from shared.contracts import BrainSelected, Idea, ModelCalled

log = logging.getLogger("autosota.brain")

A = TypeVar("A", bound=BaseModel)
# Failures that will not heal within a campaign: stop asking the model.
PERMANENT_KINDS = frozenset({"token_budget", "cost_budget", "model_not_found", "unauthorized"})
DEFAULT_RATE_LIMIT_WAIT = 2.0
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(.*)\n```\s*$", re.DOTALL)
_PACKAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class BrainLimits:
    token_budget: int | None = None
    cost_budget: float | None = None
    answer_retries: int = 2
    rate_limit_retries: int = 2
    rate_limit_max_wait: float = 30.0
    prices: tuple[float, float] | None = None  # dollars per million prompt and completion tokens


class ModelUnavailable(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def answer_json(text: str) -> str:
    """The JSON object of an answer, without the code fence some models wrap it in."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    return fenced.group(1) if fenced else stripped


class Conversation:
    """One question to the model within a decision: its calls, keyed `<scope>#<n>`, in order."""

    def __init__(self, brain: ModelBrain, scope: CallScope, purpose: str) -> None:
        self.brain = brain
        self.scope = scope
        self.purpose = purpose
        self.calls: list[ModelCalled] = []

    @property
    def tokens(self) -> int:
        return self.scope.tokens_used + sum(c.prompt_tokens + c.completion_tokens for c in self.calls)

    @property
    def cost(self) -> float:
        return self.scope.cost_used + sum(c.cost for c in self.calls)

    def ask(self, messages: list[dict[str, str]], answer_type: type[A]) -> A:
        """The validated answer, or ModelUnavailable once the retries are spent."""
        messages = list(messages)
        schema = answer_type.model_json_schema()
        last_error = ""
        for _ in range(1 + self.brain.limits.answer_retries):
            request = ChatRequest(self.purpose, tuple(messages), schema, answer_type.__name__)
            text = self._exchange(request)
            try:
                return answer_type.model_validate_json(answer_json(text))
            except ValidationError as error:
                last_error = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in error.errors(include_url=False))[:1500]
                self.calls[-1] = self.calls[-1].model_copy(update={"outcome": "invalid", "error_kind": "invalid_answer", "error": last_error})
                messages += [
                    {"role": "assistant", "content": text},
                    {"role": "user", "content": f"That answer does not validate against the JSON schema: {last_error}. Answer again with only a JSON object that matches the schema."},
                ]
        raise ModelUnavailable("invalid_answer", f"{self._who()} gave no valid answer in {1 + self.brain.limits.answer_retries} tries: {last_error}")

    def _exchange(self, request: ChatRequest) -> str:
        limits = self.brain.limits
        rate_limited = 0
        while True:
            self._check_budget()
            key = f"{self.scope.scope}#{len(self.calls) + 1}"
            exchange = self.brain.transport.exchange(self.scope.agent, self.scope.campaign, key, request)
            cost = self.brain.cost_of(exchange.prompt_tokens, exchange.completion_tokens)
            outcome = "failed" if exchange.error_kind else "answered"
            self.calls.append(model_called(self.scope.agent, self.scope.campaign, self.purpose, key, self.brain.transport, request, exchange, outcome, cost))
            if exchange.error_kind is None:
                return exchange.answer or ""
            if exchange.error_kind == "rate_limited" and rate_limited < limits.rate_limit_retries:
                rate_limited += 1
                wait = exchange.retry_after if exchange.retry_after is not None else DEFAULT_RATE_LIMIT_WAIT
                if wait > limits.rate_limit_max_wait:
                    raise ModelUnavailable("rate_limited", f"{self._who()}: {exchange.error}; Retry-After {wait:g} s exceeds the {limits.rate_limit_max_wait:g} s this brain waits")
                self.brain.transport.wait(wait)
                continue
            raise ModelUnavailable(exchange.error_kind, f"{self._who()}: {exchange.error}")

    def _check_budget(self) -> None:
        fallback = self.brain.budget_fallback(self.tokens, self.cost)
        if fallback is not None:
            raise ModelUnavailable(fallback.kind, fallback.reason)

    def _who(self) -> str:
        return f"{self.brain.name} ({self.purpose})"


class ModelBrain:
    """Parameter ideas from the no-model brain; structural ideas, repairs and readings from a model."""

    uses_model = True

    def __init__(self, transport: Transport, limits: BrainLimits | None = None, fallback: NoModelBrain | None = None) -> None:
        self.transport = transport
        self.limits = limits or BrainLimits()
        self.fallback_brain = fallback or NoModelBrain()
        self.name = f"{transport.backend}:{transport.model}"

    # ------------------------------------------------------------ what is recorded about this brain

    def selected(self, agent: str, campaign: str) -> BrainSelected:
        return BrainSelected(
            campaign=campaign,
            agent=agent,
            brain=self.name,
            backend=self.transport.backend,
            model=self.transport.model,
            token_budget=self.limits.token_budget,
            cost_budget=self.limits.cost_budget,
        )

    def cost_of(self, prompt_tokens: int, completion_tokens: int) -> float:
        if self.limits.prices is None:
            return 0.0
        per_prompt, per_completion = self.limits.prices
        return round((prompt_tokens * per_prompt + completion_tokens * per_completion) / 1_000_000, 8)

    def budget_fallback(self, tokens: float, cost: float) -> Fallback | None:
        limits = self.limits
        if limits.token_budget is not None and tokens >= limits.token_budget:
            return Fallback("token_budget", f"the token budget of {limits.token_budget} tokens is spent ({int(tokens)} used): {self.name} is no longer called", True)
        if limits.cost_budget is not None and cost >= limits.cost_budget:
            return Fallback("cost_budget", f"the cost budget of ${limits.cost_budget:g} is spent (${cost:.4f} used): {self.name} is no longer called", True)
        return None

    def unavailable(self, scope: CallScope) -> Fallback | None:
        return self.budget_fallback(scope.tokens_used, scope.cost_used)

    # ------------------------------------------------------------ the no-model part

    def propose_ideas(self, request: IdeationRequest) -> list[Idea]:
        return self.fallback_brain.propose_ideas(request)

    def propose_repair(self, failure: RepairRequest) -> RepairSuggestion | None:
        # Without a place to record a model call, only the rule table answers here; think_repair asks the model.
        return rule_based_repair(failure)

    # ------------------------------------------------------------ questions for the model

    def _think(self, scope: CallScope, purpose: str, messages: list[dict[str, str]], answer_type: type[A], empty: Any) -> Thought[Any]:
        conversation = Conversation(self, scope, purpose)
        try:
            answer = conversation.ask(messages, answer_type)
        except ModelUnavailable as error:
            log.warning("%s falls back to the no-model brain: %s", scope.agent, error.reason)
            return Thought(empty, self.name, tuple(conversation.calls), Fallback(error.kind, error.reason, error.kind in PERMANENT_KINDS))
        return Thought(answer, self.name, tuple(conversation.calls))

    def think_code_ideas(self, request: CodeIdeationRequest, scope: CallScope) -> Thought[list[CodeIdea]]:
        thought = self._think(scope, "code-ideas", code_ideas_prompt(request), CodeIdeas, None)
        ideas = list(thought.answer.ideas[: request.count]) if thought.answer is not None else []
        return Thought(ideas, thought.brain, thought.calls, thought.fallback)

    def think_code_revision(self, request: CodeIdeationRequest, idea: CodeIdea, error: str, scope: CallScope) -> Thought[CodeIdea | None]:
        return self._think(scope, "code-revision", code_revision_prompt(request, idea, error), CodeIdea, None)

    def think_repair(self, failure: RepairRequest, scope: CallScope) -> Thought[RepairSuggestion | None]:
        ruled = rule_based_repair(failure)
        if ruled is not None:
            return Thought(ruled, self.fallback_brain.name)
        thought = self._think(scope, "repair", repair_prompt(failure), RepairSuggestion, None)
        suggestion = thought.answer
        if suggestion is not None and not _PACKAGE.match(suggestion.argument):
            return Thought(None, thought.brain, thought.calls, Fallback("invalid_answer", f"{self.name} suggested {suggestion.argument!r}, which is not a package name", False))
        return thought

    def think_objective(self, request: ObjectiveReadingRequest, scope: CallScope) -> Thought[ObjectiveReading | None]:
        return self._think(scope, "objective-reading", objective_prompt(request), ObjectiveReading, None)


# ---------------------------------------------------------------- prompts (deterministic text: replay hashes it)

RED_LINES = """Red lines, checked by code after you answer:
- never change a protected path (the evaluation code, the data); a diff that touches one is rejected;
- do not create files that shadow protected modules;
- do not hard-code predictions or read test labels; the evaluation command and its metrics are frozen;
- a gain on the primary metric must not cost more than the stated tolerance on a secondary metric."""


def _files_block(files: dict[str, str], heading: str) -> str:
    return "\n".join(f"{heading} {path}\n```\n{text.rstrip()}\n```" for path, text in sorted(files.items()))


def code_ideas_prompt(request: CodeIdeationRequest) -> list[dict[str, str]]:
    objective = request.objective
    base = request.base
    base_text = "the paper's own code and parameters"
    if base is not None and base.idea_id is not None:
        value = f"{base.value:.6g}" if base.value is not None else "not scored"
        base_text = f"idea {base.idea_id} ({objective.primary_metric} {value})"
    secondary = ", ".join(f"{name} (tolerance {tolerance:.0%})" for name, tolerance in sorted(objective.secondary_metrics.items())) or "none"
    system = (
        "You improve the published results of a research paper by changing its code. You propose structural "
        "changes: CODE (a bug fix, a better training schedule, a new input feature) or ALGO (a different algorithm, "
        "an ensemble or blend, test-time augmentation, post-processing). Each idea is one unified diff against the "
        "files exactly as shown, with paths relative to the paper folder (--- a/train.py, +++ b/train.py).\n\n"
        + RED_LINES
        + "\n\nAnswer with a JSON object that matches the given schema and nothing else."
    )
    parts = [
        f"Paper: {objective.title} (method: {objective.method}).",
        f"Goal: {objective.direction} {objective.primary_metric}; the paper reports {objective.reported_value:g}.",
        f"Secondary metrics: {secondary}.",
        f"Protected paths: {', '.join(objective.protected_paths)}.",
        f"Evaluation command (frozen): {objective.evaluate_command}. Training command: {objective.train_command}.",
    ]
    if objective.constraints:
        parts.append("Constraints of this paper:\n" + "\n".join(f"- {c}" for c in objective.constraints))
    if objective.search_space:
        space = ", ".join(sorted(objective.search_space))
        parts.append(f"Parameters a separate search already tunes (do not propose changing only these): {space}.")
    parts.append(f"The code below is {base_text}" + (f", run with parameters {json.dumps(base.params, sort_keys=True)}." if base and base.params else "."))
    parts.append("History of ideas tried so far:\n" + ("\n".join(f"- {line}" for line in request.history) if request.history else "- none yet"))
    parts.append(_files_block(request.files, "File"))
    if request.read_only:
        parts.append(_files_block(request.read_only, "Protected file (read only)"))
    parts.append(f"Propose {request.count} structural idea{'s' if request.count != 1 else ''} that should improve {objective.primary_metric} beyond what tuning the parameters can reach.")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def code_revision_prompt(request: CodeIdeationRequest, idea: CodeIdea, error: str) -> list[dict[str, str]]:
    messages = code_ideas_prompt(request)
    messages.append({"role": "assistant", "content": idea.model_dump_json()})
    messages.append(
        {
            "role": "user",
            "content": f"The diff of the idea {idea.title!r} does not apply to the files shown:\n{error.strip()}\n"
            "Send this one idea again, with a unified diff that applies to exactly the files shown.",
        }
    )
    return messages


def repair_prompt(failure: RepairRequest) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You repair Python environments. Answer with a JSON object that matches the given schema: one package to install from the package index."},
        {"role": "user", "content": f"The paper's environment fails with:\n{failure.signature}\n\nLast lines of output:\n{failure.error_tail[-4000:]}"},
    ]


def objective_prompt(request: ObjectiveReadingRequest) -> list[dict[str, str]]:
    documents = "\n\n".join(f"Document {path}\n```\n{text.rstrip()}\n```" for path, text in sorted(request.documents.items()))
    known = json.dumps(request.known, sort_keys=True, default=str)
    return [
        {
            "role": "system",
            "content": "You read a research paper and its code to set the goal of a reproduction: the metric, its direction, "
            "the number the paper reports for its own method, the commands that train and evaluate, and the paths that make "
            "up the evaluation protocol (evaluation code and data). Quote the sentence or table row that states the reported "
            "number. Answer with a JSON object that matches the given schema and nothing else.",
        },
        {
            "role": "user",
            "content": f"Files of the paper folder: {', '.join(request.files)}.\n\nFields the task card already gives (keep them): {known}\n\n"
            f"Fields to find: {', '.join(request.missing) or 'none'}.\n\n{documents}",
        },
    ]


# ---------------------------------------------------------------- composition


def limits_from(settings: BrainSettings, model: str, token_budget: int | None = None, cost_budget: float | None = None) -> BrainLimits:
    return BrainLimits(
        token_budget=settings.token_budget if token_budget is None else token_budget,
        cost_budget=settings.cost_budget if cost_budget is None else cost_budget,
        answer_retries=settings.answer_retries,
        rate_limit_retries=settings.rate_limit_retries,
        rate_limit_max_wait=settings.rate_limit_max_wait,
        prices=settings.price_of(model),
    )


def replay_brain(answers: RecordedAnswers, agent: str, settings: BrainSettings | None = None, campaign: str | None = None) -> ModelBrain | NoModelBrain:
    """The brain an agent used in the recording, answering from it; no-model when it used none."""
    selected = answers.brain_of(agent, campaign)
    if selected is None:
        return NoModelBrain()
    settings = settings or BrainSettings()
    limits = limits_from(settings, selected.model)
    limits = BrainLimits(selected.token_budget, selected.cost_budget, limits.answer_retries, limits.rate_limit_retries, limits.rate_limit_max_wait, limits.prices)
    return ModelBrain(RecordedTransport(answers, selected.backend, selected.model), limits)


def build_brain(agent: str, settings: BrainSettings | None = None) -> ModelBrain | NoModelBrain:
    """The brain the environment asks for; the no-model brain unless a model is configured (and reachable, for auto)."""
    settings = settings or BrainSettings()
    if settings.brain_replay:
        return replay_brain(RecordedAnswers.from_jsonl(settings.brain_replay), agent, settings)
    kind = settings.brain
    if kind == "no-model":
        return NoModelBrain()
    if kind == "auto":
        if not settings.model:
            return NoModelBrain()
        if not ollama_reachable(settings.ollama_host, settings.brain_probe_timeout):
            log.warning("AUTOSOTA_MODEL=%s is set but no Ollama server answers at %s: %s uses the no-model brain", settings.model, settings.ollama_host, agent)
            return NoModelBrain()
        kind = "ollama"
    if kind == "scripted":
        if not settings.brain_script:
            raise ValueError("AUTOSOTA_BRAIN=scripted needs AUTOSOTA_BRAIN_SCRIPT, a JSON file of answers")
        backend: Any = ScriptedBackend(Path(settings.brain_script), model=settings.model or "scripted")
    elif not settings.model:
        raise ValueError(f"AUTOSOTA_BRAIN={kind} needs AUTOSOTA_MODEL, the model's name")
    elif kind == "ollama":
        backend = OllamaBackend(settings.ollama_host, settings.model, settings.brain_timeout, settings.brain_stream)
    else:
        backend = OpenAIBackend(settings.openai_base_url, settings.model, settings.api_key(), settings.api_key_env, settings.brain_timeout, settings.brain_stream)
    return ModelBrain(LiveTransport(backend), limits_from(settings, backend.model))

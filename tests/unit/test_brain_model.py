"""The brain with a model: questions, recorded calls, budgets, fallbacks, settings and replay, without a network."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.brain import CallScope, CodeIdeas, CodeIdeationRequest, Fallback, ModelLedger, NoModelBrain, RepairRequest, Thought, uses_model
from shared.brains.model import BrainLimits, ModelBrain, answer_json, build_brain, code_ideas_prompt
from shared.brains.recording import LiveTransport, RecordedAnswers, RecordedTransport, ReplayMissing, offload_prompts, prompt_sha256
from shared.brains.settings import BrainSettings
from shared.brains.wire import ChatRequest, ScriptedBackend
from shared.contracts import IdeaBase, ModelCalled, Objective, ParameterSpec

OBJECTIVE = Objective(
    title="Toy", method="Toy (ours)", primary_metric="rmse", direction="minimize", reported_value=0.5,
    reported_source="table", secondary_metrics={"mae": 0.05}, protected_paths=["evaluate.py", "data"],
    constraints=["no peeking"], train_command="python train.py", evaluate_command="python evaluate.py",
    search_space={"lr": ParameterSpec(type="float", low=0.001, high=0.1, log=True, baseline=0.01)},
)
REQUEST = CodeIdeationRequest(
    campaign="c1", round=3, count=1, objective=OBJECTIVE, base=IdeaBase(idea_id="r1-0", params={"lr": 0.02}, value=0.45),
    files={"train.py": "print('train')\n"}, read_only={"evaluate.py": "print('eval')\n"}, history=["r1-0 PARAM {\"lr\": 0.02}: validated, rmse 0.45"],
)
SCOPE = CallScope(agent="ideator", campaign="c1", scope="ideas/round-3")
IDEA = {"kind": "CODE", "title": "Warm up", "rationale": "smoother start", "expected_effect": "-0.01 rmse", "risk": "low", "diff": "--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-print('train')\n+print('warm')\n"}


def scripted(answers: dict, limits: BrainLimits | None = None) -> ModelBrain:
    return ModelBrain(LiveTransport(ScriptedBackend(Path("script.json"), model="toy", answers=answers)), limits or BrainLimits())


def test_structural_ideas_come_back_with_every_call_recorded() -> None:
    thought = scripted({"code-ideas": {"ideas": [IDEA]}}).think_code_ideas(REQUEST, SCOPE)
    assert [idea.title for idea in thought.answer] == ["Warm up"] and thought.fallback is None
    [call] = thought.calls
    assert (call.agent, call.purpose, call.call_key, call.backend, call.model, call.outcome) == ("ideator", "code-ideas", "ideas/round-3#1", "scripted", "toy", "answered")
    assert call.prompt_tokens > 0 and json.loads(call.answer or "")["ideas"][0]["title"] == "Warm up"


def test_the_prompt_carries_goal_red_lines_code_and_history() -> None:
    system, user = code_ideas_prompt(REQUEST)
    assert "never change a protected path" in system["content"]
    text = user["content"]
    for expected in ("minimize rmse", "0.5", "evaluate.py, data", "no peeking", "File train.py", "Protected file (read only) evaluate.py", "r1-0 PARAM", "idea r1-0 (rmse 0.45)", '{"lr": 0.02}', "lr"):
        assert expected in text, expected
    assert code_ideas_prompt(REQUEST) == code_ideas_prompt(REQUEST)  # replay hashes it


def test_an_invalid_answer_is_retried_then_the_brain_falls_back() -> None:
    brain = scripted({"code-ideas": ["not json", {"ideas": [IDEA]}]})
    thought = brain.think_code_ideas(REQUEST, SCOPE)
    assert [c.outcome for c in thought.calls] == ["invalid", "answered"] and len(thought.answer) == 1
    failing = scripted({"code-ideas": "not json"}, BrainLimits(answer_retries=1)).think_code_ideas(REQUEST, SCOPE)
    assert failing.answer == [] and [c.outcome for c in failing.calls] == ["invalid", "invalid"]
    assert failing.fallback == Fallback("invalid_answer", failing.fallback.reason, False) and "2 tries" in failing.fallback.reason


def test_budgets_stop_the_model_before_a_call() -> None:
    brain = scripted({"code-ideas": {"ideas": [IDEA]}}, BrainLimits(token_budget=0))
    thought = brain.think_code_ideas(REQUEST, SCOPE)
    assert thought.calls == () and thought.fallback is not None and thought.fallback.kind == "token_budget" and thought.fallback.permanent
    assert brain.unavailable(SCOPE) is not None
    priced = ModelBrain(LiveTransport(ScriptedBackend(Path("s"), model="toy", answers={})), BrainLimits(cost_budget=1.0, prices=(1.0, 1.0)))
    assert priced.unavailable(CallScope("ideator", "c1", "x", cost_used=1.0)).kind == "cost_budget"  # type: ignore[union-attr]
    assert priced.cost_of(1_000_000, 500_000) == 1.5


def test_repairs_try_the_rule_table_first_and_the_model_only_when_it_has_no_rule() -> None:
    brain = scripted({"repair": {"action": "install_package", "argument": "libfoo", "rationale": "guess"}})
    ruled = brain.think_repair(RepairRequest(signature="ModuleNotFoundError: No module named 'yaml'"), SCOPE)
    assert ruled.answer is not None and ruled.answer.argument == "PyYAML" and ruled.calls == ()
    asked = brain.think_repair(RepairRequest(signature="OSError: libfoo.so: cannot open shared object file"), SCOPE)
    assert asked.answer is not None and asked.answer.argument == "libfoo" and len(asked.calls) == 1
    assert brain.propose_repair(RepairRequest(signature="OSError: libfoo.so")) is None  # the compatible path makes no unrecorded call
    bad = scripted({"repair": {"action": "install_package", "argument": "rm -rf /", "rationale": ""}}).think_repair(RepairRequest(signature="x"), SCOPE)
    assert bad.answer is None and bad.fallback is not None and "not a package name" in bad.fallback.reason


def test_the_no_model_brain_answers_model_questions_with_nothing() -> None:
    brain = NoModelBrain()
    assert not uses_model(brain) and uses_model(scripted({}))
    assert brain.think_code_ideas(REQUEST, SCOPE) == Thought([], "no-model")
    assert brain.think_repair(RepairRequest(signature="No module named 'cv2'"), SCOPE).answer.argument == "opencv-python"  # type: ignore[union-attr]


def test_a_thought_records_its_fallback_after_its_calls() -> None:
    thought = scripted({"code-ideas": "nope"}, BrainLimits(answer_retries=0)).think_code_ideas(REQUEST, SCOPE)
    events = thought.events(SCOPE, "code-ideas")
    assert [e.event_type for e in events] == ["ModelCalled", "BrainFellBack"]
    assert events[-1].agent == "ideator" and events[-1].kind == "invalid_answer" and not events[-1].permanent


def test_the_ledger_counts_each_recorded_call_once() -> None:
    call = scripted({"code-ideas": {"ideas": [IDEA]}}).think_code_ideas(REQUEST, SCOPE).calls[0].model_copy(update={"event_id": uuid.uuid4(), "cost": 0.5})
    ledger = ModelLedger()
    ledger.add(call)
    ledger.add(call)  # the same event again, as it comes back from the bus
    assert ledger.tokens == call.prompt_tokens + call.completion_tokens and ledger.cost == 0.5
    assert ledger.scope("ideator", "c1", "s").tokens_used == ledger.tokens


def test_answers_in_a_code_fence_are_read() -> None:
    assert answer_json('```json\n{"a": 1}\n```') == '{"a": 1}' and answer_json(' {"a": 1} ') == '{"a": 1}'


async def test_large_prompts_go_to_the_artifact_store() -> None:
    class Store:
        def __init__(self) -> None:
            self.items: dict[str, bytes] = {}

        async def put(self, data: bytes) -> str:
            import hashlib

            digest = hashlib.sha256(data).hexdigest()
            self.items[digest] = data
            return digest

    [call] = scripted({"code-ideas": {"ideas": [IDEA]}}).think_code_ideas(REQUEST, SCOPE).calls
    store = Store()
    [small] = await offload_prompts([call], store, limit=10**6)
    [large] = await offload_prompts([call], store, limit=10)
    assert small.prompt == call.prompt and large.prompt is None and store.items[call.prompt_sha256].decode() == call.prompt


# ---------------------------------------------------------------- settings and replay


def test_the_default_brain_is_the_no_model_brain(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AUTOSOTA_BRAIN", "AUTOSOTA_MODEL", "AUTOSOTA_BRAIN_REPLAY"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(build_brain("ideator"), NoModelBrain)
    assert isinstance(build_brain("ideator", BrainSettings(brain="no-model", model="m")), NoModelBrain)
    # auto picks Ollama only when a server answers; here none does
    assert isinstance(build_brain("ideator", BrainSettings(model="m", ollama_host="http://127.0.0.1:9", brain_probe_timeout=0.2)), NoModelBrain)


def test_settings_come_from_the_environment_and_the_key_stays_out_of_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOSOTA_BRAIN", "openai")
    monkeypatch.setenv("AUTOSOTA_MODEL", "gpt-4o-mini")
    monkeypatch.setenv("AUTOSOTA_OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("AUTOSOTA_API_KEY_ENV", "MY_PROVIDER_KEY")
    monkeypatch.setenv("MY_PROVIDER_KEY", "sk-unit-secret")
    monkeypatch.setenv("AUTOSOTA_TOKEN_BUDGET", "5000")
    monkeypatch.setenv("AUTOSOTA_PRICES", '{"gpt-4o-mini": [1.0, 2.0]}')
    settings = BrainSettings()
    assert settings.api_key() == "sk-unit-secret" and "sk-unit-secret" not in repr(settings) + settings.model_dump_json()
    brain = build_brain("ideator")
    assert isinstance(brain, ModelBrain) and brain.name == "openai:gpt-4o-mini"
    assert brain.limits.token_budget == 5000 and brain.limits.prices == (1.0, 2.0)
    assert "sk-unit-secret" not in repr(brain.transport.chat_backend)  # type: ignore[attr-defined]
    selected = brain.selected("ideator", "c1")
    assert (selected.backend, selected.model, selected.token_budget) == ("openai", "gpt-4o-mini", 5000)
    assert "sk-unit-secret" not in selected.model_dump_json()


def test_a_configured_backend_needs_a_model_name() -> None:
    with pytest.raises(ValueError, match="AUTOSOTA_MODEL"):
        build_brain("ideator", BrainSettings(brain="ollama", model=""))
    with pytest.raises(ValueError, match="AUTOSOTA_BRAIN_SCRIPT"):
        build_brain("ideator", BrainSettings(brain="scripted"))


def test_replay_mode_answers_from_a_recorded_events_file_and_never_live(tmp_path: Path) -> None:
    live = scripted({"code-ideas": {"ideas": [IDEA]}}, BrainLimits(token_budget=10**6))
    thought = live.think_code_ideas(REQUEST, SCOPE)
    recorded = [live.selected("ideator", "c1"), *thought.calls]
    source = tmp_path / "events.jsonl"
    source.write_text("".join(json.dumps(e.model_copy(update={"event_id": uuid.uuid4(), "producer": "ideator", "time": datetime(2025, 1, 1, tzinfo=UTC)}).model_dump(mode="json")) + "\n" for e in recorded))
    brain = build_brain("ideator", BrainSettings(brain="openai", model="other", brain_replay=str(source)))
    assert isinstance(brain, ModelBrain) and isinstance(brain.transport, RecordedTransport) and not brain.transport.live
    assert brain.name == "scripted:toy" and brain.limits.token_budget == 10**6
    again = brain.think_code_ideas(REQUEST, CallScope(agent="ideator", campaign="a-rerun", scope="ideas/round-3"))
    assert again.answer == thought.answer
    with pytest.raises(ReplayMissing, match=r"ideator call 'ideas/round-4#1'"):
        brain.think_code_ideas(REQUEST, CallScope(agent="ideator", campaign="c1", scope="ideas/round-4"))
    assert isinstance(build_brain("objective", BrainSettings(brain_replay=str(source))), NoModelBrain)


def test_a_recording_that_is_not_events_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "events.jsonl"
    source.write_text('{"event_type": "Nonsense"}\n')
    with pytest.raises(ValueError, match="events.jsonl:1"):
        RecordedAnswers.from_jsonl(source)


def test_recorded_failures_replay_as_failures() -> None:
    request = ChatRequest("code-ideas", tuple(code_ideas_prompt(REQUEST)), CodeIdeas.model_json_schema(), "CodeIdeas")
    failing = ModelCalled(
        campaign="c1", agent="ideator", purpose="code-ideas", call_key="ideas/round-3#1", backend="ollama", model="m",
        prompt_sha256=prompt_sha256(request), prompt_chars=1, outcome="failed", error_kind="timeout", error="no answer within 1 s",
    )
    thought = ModelBrain(RecordedTransport(RecordedAnswers([failing]), "ollama", "m")).think_code_ideas(REQUEST, SCOPE)
    assert thought.fallback is not None and thought.fallback.kind == "timeout" and thought.calls[0].error == "no answer within 1 s"
    with pytest.raises(ReplayMissing, match="different prompt"):
        ModelBrain(RecordedTransport(RecordedAnswers([failing.model_copy(update={"prompt_sha256": "x"})]), "ollama", "m")).think_code_ideas(REQUEST, SCOPE)

"""The no-model brain: deterministic Optuna ideas that learn from history, rule-based repairs."""

from __future__ import annotations

from statistics import mean

import pytest

from shared.brain import (
    IdeationRequest,
    NoModelBrain,
    PastTrial,
    RepairRequest,
    failure_signature,
    package_for_module,
)
from shared.contracts import Idea, Objective, ParameterSpec


def objective(direction: str = "minimize", **space: ParameterSpec) -> Objective:
    return Objective(
        title="toy", method="toy", primary_metric="loss", direction=direction, reported_value=0.0,
        reported_source="table 1", protected_paths=["eval.py"], train_command="python train.py",
        evaluate_command="python eval.py",
        search_space=space or {
            "lr": ParameterSpec(type="float", low=1e-4, high=1.0, log=True, baseline=0.01),
            "layers": ParameterSpec(type="int", low=1, high=6, baseline=2),
            "optimizer": ParameterSpec(type="categorical", choices=["sgd", "adam", "rmsprop"], baseline="sgd"),
        },
    )


def ask(objective_: Objective, round_: int = 1, count: int = 4, history: list[PastTrial] | None = None, campaign: str = "c1") -> list[Idea]:
    request = IdeationRequest(campaign=campaign, round=round_, count=count, objective=objective_, history=history or [])
    return NoModelBrain().propose_ideas(request)


def quadratic(params: dict) -> float:
    return (params["x"] - 0.3) ** 2 + (params["y"] + 0.2) ** 2


QUADRATIC = objective(
    x=ParameterSpec(type="float", low=-2, high=2, baseline=1.5),
    y=ParameterSpec(type="float", low=-2, high=2, baseline=-1.5),
)


def test_same_request_gives_the_same_ideas():
    history = [PastTrial({"lr": 0.01, "layers": 2, "optimizer": "sgd"}, 0.5, "baseline")]
    assert ask(objective(), history=history) == ask(objective(), history=history)


def test_ideas_stay_in_the_search_space_with_the_right_types():
    space = objective()
    ideas = ask(space, count=8)
    assert len(ideas) == 8
    assert [idea.idea_id for idea in ideas] == [f"r1-{k}" for k in range(8)]
    for idea in ideas:
        assert idea.kind == "PARAM"
        assert set(idea.params) == set(space.search_space)
        assert all(space.search_space[name].admits(value) for name, value in idea.params.items())
        assert isinstance(idea.params["lr"], float)
        assert isinstance(idea.params["layers"], int)
        assert idea.params["optimizer"] in {"sgd", "adam", "rmsprop"}
        assert "TPE" in idea.rationale


def test_rounds_and_campaigns_get_different_ideas():
    first = ask(objective(), round_=1)
    assert [i.params for i in first] != [i.params for i in ask(objective(), round_=2)]
    assert [i.params for i in first] != [i.params for i in ask(objective(), campaign="c2")]


def test_tried_params_are_not_proposed_again():
    # A space of six points, four already tried or in flight: only two are left to propose.
    space = objective(
        width=ParameterSpec(type="int", low=1, high=3, baseline=1),
        act=ParameterSpec(type="categorical", choices=["relu", "tanh"], baseline="relu"),
    )
    history = [
        PastTrial({"width": 1, "act": "relu"}, 1.0, "baseline"),
        PastTrial({"width": 2, "act": "relu"}, 0.8, "validated"),
        PastTrial({"width": 3, "act": "relu"}, None, "failed"),
        PastTrial({"width": 1, "act": "tanh"}, None, "pending"),
    ]
    ideas = ask(space, count=4, history=history)
    assert sorted((i.params["width"], i.params["act"]) for i in ideas) == [(2, "tanh"), (3, "tanh")]


def test_history_outside_the_space_is_ignored():
    history = [PastTrial({"lr": 5.0, "layers": 2, "optimizer": "sgd"}, 0.1, "validated")]
    assert len(ask(objective(), history=history)) == 4


def test_empty_search_space_gives_no_ideas():
    assert ask(objective(x=ParameterSpec(type="float", baseline=1.0))) == []


def test_history_informed_rounds_beat_the_first_round_on_a_quadratic():
    first_round, late_rounds, late_rounds_without_history = [], [], []
    for campaign in [f"toy-{n}" for n in range(8)]:
        history = [PastTrial(QUADRATIC.baseline_params, quadratic(QUADRATIC.baseline_params), "baseline")]
        for round_ in range(1, 9):
            ideas = ask(QUADRATIC, round_=round_, count=4, history=history, campaign=campaign)
            values = [quadratic(idea.params) for idea in ideas]
            if round_ == 1:
                first_round += values
            if round_ >= 6:
                late_rounds += values
                blind = ask(QUADRATIC, round_=round_, count=4, history=history[:1], campaign=campaign)
                late_rounds_without_history += [quadratic(idea.params) for idea in blind]
            history += [PastTrial(idea.params, value, "validated") for idea, value in zip(ideas, values, strict=True)]
    assert mean(late_rounds) < 0.7 * mean(first_round)
    assert mean(late_rounds) < 0.7 * mean(late_rounds_without_history)


def test_maximize_direction_climbs():
    space = objective(direction="maximize", x=ParameterSpec(type="float", low=0, high=10, baseline=1.0))
    history = [PastTrial({"x": 1.0}, 1.0, "baseline")]
    for round_ in range(1, 7):
        ideas = ask(space, round_=round_, count=3, history=history)
        history += [PastTrial(idea.params, idea.params["x"], "validated") for idea in ideas]
    assert max(trial.value for trial in history[-6:]) > 8.0


# ---------------------------------------------------------------- failure signatures


def test_signature_keeps_the_last_exception_line_without_run_details():
    tail = (
        "Traceback (most recent call last):\n"
        '  File "/tmp/work-81f3/train.py", line 12, in <module>\n'
        "    open(path)\n"
        "FileNotFoundError: [Errno 2] No such file or directory: '/tmp/work-81f3/data/train.csv'\n"
    )
    assert failure_signature(tail) == "FileNotFoundError: [Errno <n>] No such file or directory: <q>"


def test_signatures_of_the_same_failure_in_different_runs_are_equal():
    first = "RuntimeError: CUDA out of memory at 0x7f3a2c00 while allocating 512.5 MiB in /home/a/x.py"
    second = "RuntimeError: CUDA out of memory at 0x55aa0010 while allocating 1024 MiB in /srv/b/y.py"
    assert failure_signature(first) == failure_signature(second)
    assert "0x" not in failure_signature(first) and "/home" not in failure_signature(first)


def test_signature_keeps_the_missing_module_name():
    tail = 'Traceback...\n  File "/x/run.py", line 1\nModuleNotFoundError: No module named \'sklearn.ensemble\'\n'
    assert failure_signature(tail) == "ModuleNotFoundError: No module named 'sklearn.ensemble'"
    assert failure_signature("ModuleNotFoundError: No module named 'yaml'") != failure_signature(
        "ModuleNotFoundError: No module named 'numpy'"
    )


def test_signature_without_an_exception_line_uses_the_last_line():
    assert failure_signature("step 3 of 10\nkilled after 120 seconds\n") == "killed after <n> seconds"
    assert failure_signature("   \n") == "no output"


# ---------------------------------------------------------------- repairs


@pytest.mark.parametrize(
    ("module", "package"),
    [("sklearn", "scikit-learn"), ("yaml", "PyYAML"), ("cv2", "opencv-python"), ("PIL", "Pillow"),
     ("sklearn.ensemble", "scikit-learn"), ("google.protobuf", "protobuf"), ("numpy.linalg", "numpy"), ("tqdm", "tqdm")],
)
def test_module_to_package(module, package):
    assert package_for_module(module) == package


def test_missing_module_is_repaired_by_installing_its_package():
    brain = NoModelBrain()
    suggestion = brain.propose_repair(RepairRequest(signature="ModuleNotFoundError: No module named 'yaml'"))
    assert suggestion is not None
    assert (suggestion.action, suggestion.argument) == ("install_package", "PyYAML")
    unquoted = brain.propose_repair(RepairRequest(signature="ImportError: No module named scipy"))
    assert unquoted is not None and unquoted.argument == "scipy"


def test_missing_module_is_found_in_the_error_tail_too():
    failure = RepairRequest(signature="CalledProcessError: Command <q> returned non-zero exit status <n>", error_tail="E   ModuleNotFoundError: No module named 'PIL'\n")
    suggestion = NoModelBrain().propose_repair(failure)
    assert suggestion is not None and suggestion.argument == "Pillow"


def test_no_rule_no_repair():
    assert NoModelBrain().propose_repair(RepairRequest(signature="ValueError: shapes do not match")) is None


def test_a_time_limit_kill_is_the_signature_whatever_was_printed_before() -> None:
    from shared.brain import failure_signature

    tail = "UserWarning: slow path taken at step 5\n[killed after the 60 s time limit]"
    assert failure_signature(tail) == failure_signature("epoch 9\n[killed after the 30 s time limit]")
    assert "killed after" in failure_signature(tail)

"""Applying chosen hyperparameters to a copy of a repository the way its code takes them."""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from shared.parameters import (
    Application,
    Applied,
    ParameterApplyError,
    apply_parameters,
    validate_application,
)

GCN_COMMAND = "python train.py --dataset cora --lr 0.01 --epochs 200"

DETECTRON_YAML = """\
# Mask R-CNN, R50-FPN, 1x schedule (see MODEL_ZOO.md)
_BASE_: "../Base-RCNN-FPN.yaml"
MODEL:
  WEIGHTS: "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
  MASK_ON: True
  RESNETS:
    DEPTH: 50  # 101 for the large model
    OUT_FEATURES: ["res2", "res3", "res4", "res5"]
  ROI_HEADS:
    NUM_CLASSES: 80
    SCORE_THRESH_TEST: 0.05
SOLVER:
  IMS_PER_BATCH: 16
  BASE_LR: 0.02   # linear scaling rule: 0.02 for 16 images
  WEIGHT_DECAY: 0.0001
  STEPS: (210000, 250000)
  OPTIMIZER: 'SGD'
  SCHEDULE:
    - name: warmup
      iters: 1000
    - name: cosine
      iters: 89000
"""

MMCV_STYLE_JSON = """\
{
    "model": {
        "type": "GCN",
        "hidden": 16,
        "dropout": 0.5,
        "layers": [{"units": 16}, {"units": 7}]
    },
    "optimizer": {
        "type": "Adam",
        "lr": 0.01,
        "weight_decay": 0.0005
    }
}
"""

PYPROJECT_TOML = """\
[project]
name = "gcn-reproduction"  # the paper's code
version = "0.1.0"

# hyperparameters from Table 3
[tool.gcn.optim]
lr = 0.01  # Adam
weight_decay = 5e-4
schedule = 'cosine'

[[tool.gcn.layers]]
units = 16

[[tool.gcn.layers]]
units = 7
"""

TRAIN_PY = """\
\"\"\"Train a two-layer GCN on Cora.\"\"\"
import torch

LEARNING_RATE = 1e-3  # from the paper
EPOCHS: int = 200
HIDDEN = int(torch.cuda.device_count() * 16 or 16)
OPTIMIZER = "adam"
DIMS = (64, 64)


def train(model):
    LEARNING_RATE = 0.5  # a local name, not the constant
    return model


class Config:
    EPOCHS = 10
"""


def reader(files: dict[str, str | bytes]):
    def read(path: str) -> str | bytes:
        if path not in files:
            raise FileNotFoundError(path)
        return files[path]

    return read


def apply(files: dict[str, str | bytes], values: dict, applications: dict, command: str = GCN_COMMAND) -> Applied:
    return apply_parameters(reader(files), command, values, applications)


def python_constant(source: str, name: str) -> object:
    for statement in ast.parse(source).body:
        if isinstance(statement, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in statement.targets):
            return ast.literal_eval(statement.value)
    raise AssertionError(f"{name} is not assigned")


def assert_only_line_changed(before: str, after: str, line_number: int, expected: str) -> None:
    """Every line but the edited one is byte for byte the same, line endings included."""
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    assert len(old) == len(new)
    for number, (was, now) in enumerate(zip(old, new, strict=True), start=1):
        if number == line_number:
            assert now == expected
        else:
            assert now == was, f"line {number} changed"


# ---------------------------------------------------------------- the card's Application


def test_application_describes_itself_for_each_way() -> None:
    assert Application(flag="--lr").describe() == "flag --lr"
    assert Application(file="configs/cora.yaml", key="optim.lr").describe() == "configs/cora.yaml: optim.lr"
    assert Application(file="train.py", key="LEARNING_RATE").describe() == "train.py: LEARNING_RATE"
    assert Application(env="LR").describe() == "$LR"
    assert Application().describe() == "the params file"


@pytest.mark.parametrize(
    "fields",
    [
        {"flag": "--lr", "env": "LR"},
        {"flag": "lr"},
        {"flag": "--lr; rm -rf /"},
        {"flag": "--lr $(id)"},
        {"flag": "--"},
        {"switch": True},
        {"env": "LR", "switch": True},
        {"file": "/etc/passwd", "key": "root"},
        {"file": "../secrets.yaml", "key": "token"},
        {"file": "configs/../../x.yaml", "key": "a"},
        {"file": "configs/my config.yaml", "key": "a"},
        {"file": "configs/cora.yaml"},
        {"key": "optim.lr"},
        {"file": "train.py", "key": "optim.lr"},
        {"file": "train.py", "key": "class"},
        {"file": "c.yaml", "key": "optim..lr"},
        {"env": "1LR"},
        {"env": "LR X"},
        {"flag": "--lr", "extra": 1},
    ],
)
def test_application_rejects_implausible_cards(fields: dict) -> None:
    with pytest.raises(ValidationError):
        Application(**fields)


def test_application_is_frozen() -> None:
    with pytest.raises(ValidationError):
        Application(flag="--lr").flag = "--epochs"  # type: ignore[misc]


# ---------------------------------------------------------------- flags


def test_flag_already_given_is_replaced_in_place() -> None:
    applied = apply({}, {"lr": 0.005}, {"lr": Application(flag="--lr")})
    assert applied.command == "python train.py --dataset cora --lr 0.005 --epochs 200"
    assert applied.lines == ["lr=0.005 via flag --lr"]
    assert applied.files == {} and applied.patch == "" and applied.env == {}


def test_flag_in_equals_form_keeps_its_form() -> None:
    applied = apply({}, {"lr": 1e-05}, {"lr": Application(flag="--lr")}, command="python train.py --lr=0.1 --epochs=200")
    assert applied.command == "python train.py --lr=1e-05 --epochs=200"


def test_absent_flag_is_appended_with_int_and_float_formatting() -> None:
    applied = apply({}, {"hidden": 32, "dropout": 0.5}, {"hidden": Application(flag="--hidden"), "dropout": Application(flag="--dropout")})
    assert applied.command == GCN_COMMAND + " --dropout 0.5 --hidden 32"


def test_absent_flag_goes_to_the_last_command_of_a_chain_before_its_redirection() -> None:
    command = "python prep.py --root data && python train.py --dataset cora > logs/train.log 2>&1"
    applied = apply({}, {"lr": 0.005}, {"lr": Application(flag="--lr")}, command=command)
    assert applied.command == "python prep.py --root data && python train.py --dataset cora --lr 0.005 > logs/train.log 2>&1"


def test_absent_flag_goes_to_the_program_of_a_pipeline_not_to_the_tee_after_it() -> None:
    command = "cd src && python train.py --dataset cora 2>&1 | tee -a logs/train.log"
    applied = apply({}, {"lr": 0.005}, {"lr": Application(flag="--lr")}, command=command)
    assert applied.command == "cd src && python train.py --dataset cora --lr 0.005 2>&1 | tee -a logs/train.log"


def test_flag_present_in_several_commands_is_replaced_in_each() -> None:
    command = "python train.py --seed 0 --lr 0.1; python evaluate.py --lr=0.1 | tee out.txt"
    applied = apply({}, {"lr": 0.2}, {"lr": Application(flag="--lr")}, command=command)
    assert applied.command == "python train.py --seed 0 --lr 0.2; python evaluate.py --lr=0.2 | tee out.txt"


def test_rest_of_the_command_keeps_its_quoting() -> None:
    command = 'python train.py --data "$HOME/data sets" --tag \'run 1\' --out $(date +%s) --lr 0.1'
    applied = apply({}, {"lr": 0.3, "seed": 2}, {"lr": Application(flag="--lr"), "seed": Application(flag="--seed")}, command=command)
    assert applied.command == 'python train.py --data "$HOME/data sets" --tag \'run 1\' --out $(date +%s) --lr 0.3 --seed 2'


def test_switch_is_added_and_removed() -> None:
    switch = {"no_cuda": Application(flag="--no-cuda", switch=True)}
    added = apply({}, {"no_cuda": True}, switch)
    assert added.command == GCN_COMMAND + " --no-cuda"
    removed = apply({}, {"no_cuda": False}, switch, command="python train.py --no-cuda --lr 0.01 && python eval.py --no-cuda")
    assert removed.command == "python train.py --lr 0.01 && python eval.py"
    assert apply({}, {"no_cuda": False}, switch).command == GCN_COMMAND
    assert apply({}, {"no_cuda": True}, switch, command=added.command).command == added.command


def test_switch_needs_a_bool() -> None:
    with pytest.raises(ParameterApplyError, match="switch --no-cuda takes True"):
        apply({}, {"no_cuda": 1}, {"no_cuda": Application(flag="--no-cuda", switch=True)})


def test_non_switch_bool_and_list_flags() -> None:
    applied = apply(
        {},
        {"fastmode": False, "dims": [64, 32, 7]},
        {"fastmode": Application(flag="--fastmode"), "dims": Application(flag="--dims")},
        command="python train.py --dims 16 16 --epochs 200",
    )
    assert applied.command == "python train.py --dims 64 32 7 --epochs 200 --fastmode False"


def test_string_with_spaces_and_quotes_survives_shell_splitting() -> None:
    hostile = """it's a "quoted" $value; rm -rf /"""
    applied = apply({}, {"note": hostile}, {"note": Application(flag="--note")}, command="python train.py --note old")
    words = shlex.split(applied.command)
    assert words == ["python", "train.py", "--note", hostile]
    appended = apply({}, {"note": hostile}, {"note": Application(flag="--note")})
    assert shlex.split(appended.command)[-2:] == ["--note", hostile]
    equals = apply({}, {"note": hostile}, {"note": Application(flag="--note")}, command="python train.py --note=old")
    assert shlex.split(equals.command)[-1] == f"--note={hostile}"


def test_flag_without_a_value_in_the_command_is_an_error() -> None:
    with pytest.raises(ParameterApplyError, match="--lr in the command is followed by --epochs, not by a value"):
        apply({}, {"lr": 0.1}, {"lr": Application(flag="--lr")}, command="python train.py --lr --epochs 5")


def test_command_comment_and_unterminated_quote() -> None:
    applied = apply({}, {"lr": 0.5}, {"lr": Application(flag="--lr")}, command="python train.py  # tuned later")
    assert applied.command == "python train.py --lr 0.5  # tuned later"
    with pytest.raises(ParameterApplyError, match="unterminated quote"):
        apply({}, {"lr": 0.5}, {"lr": Application(flag="--lr")}, command="python train.py --name 'oops")


def test_negative_value_is_a_value() -> None:
    applied = apply({}, {"shift": 0.5}, {"shift": Application(flag="--shift")}, command="python train.py --shift -1.5")
    assert applied.command == "python train.py --shift 0.5"


# ---------------------------------------------------------------- YAML


def test_yaml_edit_changes_only_the_value_and_keeps_the_comment() -> None:
    applied = apply({"configs/mask_rcnn.yaml": DETECTRON_YAML}, {"lr": 0.01}, {"lr": Application(file="configs/mask_rcnn.yaml", key="SOLVER.BASE_LR")})
    after = applied.files["configs/mask_rcnn.yaml"]
    assert_only_line_changed(DETECTRON_YAML, after, 14, "  BASE_LR: 0.01   # linear scaling rule: 0.02 for 16 images\n")
    assert applied.lines == ["lr=0.01 via configs/mask_rcnn.yaml: SOLVER.BASE_LR"]


def test_yaml_small_floats_are_floats_for_pyyaml_too() -> None:
    applied = apply({"c.yaml": DETECTRON_YAML}, {"wd": 1e-05}, {"wd": Application(file="c.yaml", key="SOLVER.WEIGHT_DECAY")})
    after = applied.files["c.yaml"]
    assert "  WEIGHT_DECAY: 1.0e-05\n" in after
    assert yaml.safe_load(after)["SOLVER"]["WEIGHT_DECAY"] == 1e-05  # PyYAML reads a bare 1e-05 as a string


def test_yaml_keeps_quote_style_and_quotes_what_would_not_be_a_string() -> None:
    files = {"c.yaml": DETECTRON_YAML}
    applications = {"optimizer": Application(file="c.yaml", key="SOLVER.OPTIMIZER"), "weights": Application(file="c.yaml", key="MODEL.WEIGHTS")}
    after = apply(files, {"optimizer": "AdamW", "weights": "none"}, applications).files["c.yaml"]
    assert "  OPTIMIZER: 'AdamW'\n" in after and '  WEIGHTS: "none"\n' in after
    applications = {"name": Application(file="c.yaml", key="SOLVER.SCHEDULE.0.name")}
    assert "    - name: 'yes'\n" in apply(files, {"name": "yes"}, applications).files["c.yaml"]  # plain yes would be a bool
    assert yaml.safe_load(apply(files, {"name": "yes"}, applications).files["c.yaml"])["SOLVER"]["SCHEDULE"][0]["name"] == "yes"


def test_the_value_type_decides_int_or_float() -> None:
    applications = {"batch": Application(file="c.yaml", key="SOLVER.IMS_PER_BATCH"), "thresh": Application(file="c.yaml", key="MODEL.ROI_HEADS.SCORE_THRESH_TEST")}
    after = apply({"c.yaml": DETECTRON_YAML}, {"batch": 32.0, "thresh": 1}, applications).files["c.yaml"]
    assert "  IMS_PER_BATCH: 32.0\n" in after and "    SCORE_THRESH_TEST: 1\n" in after


def test_yaml_list_indices_and_flow_lists() -> None:
    files = {"c.yaml": DETECTRON_YAML}
    applications = {"iters": Application(file="c.yaml", key="SOLVER.SCHEDULE.1.iters"), "features": Application(file="c.yaml", key="MODEL.RESNETS.OUT_FEATURES")}
    after = apply(files, {"iters": 50000, "features": ["res4", "res5"]}, applications).files["c.yaml"]
    loaded = yaml.safe_load(after)
    assert loaded["SOLVER"]["SCHEDULE"][1]["iters"] == 50000
    assert loaded["MODEL"]["RESNETS"]["OUT_FEATURES"] == ["res4", "res5"]
    assert "    OUT_FEATURES: [res4, res5]\n" in after


def test_yaml_missing_key_lists_the_siblings() -> None:
    with pytest.raises(ParameterApplyError) as error:
        apply({"c.yaml": DETECTRON_YAML}, {"lr": 0.1}, {"lr": Application(file="c.yaml", key="SOLVER.LR")})
    assert str(error.value) == "c.yaml has no key SOLVER.LR (found: SOLVER.IMS_PER_BATCH, SOLVER.BASE_LR, SOLVER.WEIGHT_DECAY, SOLVER.STEPS, SOLVER.OPTIMIZER, SOLVER.SCHEDULE)"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("SOLVER.SCHEDULE.2.iters", "c.yaml has no key SOLVER.SCHEDULE.2.iters: SOLVER.SCHEDULE is a list of 2 items, indexed 0 to 1"),
        ("SOLVER.SCHEDULE.first.iters", "SOLVER.SCHEDULE is a list of 2 items"),
        ("SOLVER.SCHEDULE.-1.iters", "SOLVER.SCHEDULE is a list of 2 items"),
        ("SOLVER.BASE_LR.value", "SOLVER.BASE_LR is a single value, not a mapping or a list"),
        ("SOLVER", "SOLVER (line 13) is a mapping"),
        ("SOLVER.SCHEDULE", "SOLVER.SCHEDULE (line 19) is a block list"),
    ],
)
def test_yaml_bad_paths_are_clear_errors(key: str, message: str) -> None:
    with pytest.raises(ParameterApplyError, match=re.escape(message)):
        apply({"c.yaml": DETECTRON_YAML}, {"x": 1}, {"x": Application(file="c.yaml", key=key)})


def test_yaml_anchored_value_is_refused() -> None:
    text = "defaults: &lr 0.01\nencoder:\n  lr: *lr\n"
    with pytest.raises(ParameterApplyError, match=r"encoder.lr \(line 1\) is anchored as &lr"):
        apply({"c.yaml": text}, {"lr": 0.1}, {"lr": Application(file="c.yaml", key="encoder.lr")})


def test_yaml_with_crlf_line_endings_keeps_them() -> None:
    text = DETECTRON_YAML.replace("\n", "\r\n")
    after = apply({"c.yaml": text.encode()}, {"lr": 0.04}, {"lr": Application(file="c.yaml", key="SOLVER.BASE_LR")}).files["c.yaml"]
    assert_only_line_changed(text, after, 14, "  BASE_LR: 0.04   # linear scaling rule: 0.02 for 16 images\r\n")


def test_invalid_yaml_is_a_clear_error() -> None:
    with pytest.raises(ParameterApplyError, match="c.yaml is not valid YAML"):
        apply({"c.yaml": "optim:\n  lr: 0.1\n  lr: 0.2\n"}, {"lr": 0.1}, {"lr": Application(file="c.yaml", key="optim.lr")})


# ---------------------------------------------------------------- JSON and TOML


def test_json_keeps_four_space_indent_and_trailing_newline() -> None:
    applied = apply({"configs/gcn.json": MMCV_STYLE_JSON}, {"lr": 0.005}, {"lr": Application(file="configs/gcn.json", key="optimizer.lr")})
    after = applied.files["configs/gcn.json"]
    assert_only_line_changed(MMCV_STYLE_JSON, after, 10, '        "lr": 0.005,\n')
    assert json.loads(after)["optimizer"]["lr"] == 0.005


def test_json_with_tabs_and_list_indices() -> None:
    text = '{\n\t"model": {\n\t\t"layers": [{"units": 16}, {"units": 7}]\n\t}\n}'
    after = apply({"c.json": text}, {"units": 32}, {"units": Application(file="c.json", key="model.layers.0.units")}).files["c.json"]
    assert after == '{\n\t"model": {\n\t\t"layers": [{"units": 32}, {"units": 7}]\n\t}\n}'


def test_json_missing_key_and_bad_index() -> None:
    with pytest.raises(ParameterApplyError, match=r"has no key optimizer.momentum \(found: optimizer.type, optimizer.lr, optimizer.weight_decay\)"):
        apply({"c.json": MMCV_STYLE_JSON}, {"m": 0.9}, {"m": Application(file="c.json", key="optimizer.momentum")})
    with pytest.raises(ParameterApplyError, match="model.layers is a list of 2 items"):
        apply({"c.json": MMCV_STYLE_JSON}, {"u": 3}, {"u": Application(file="c.json", key="model.layers.5.units")})
    with pytest.raises(ParameterApplyError, match=r"c.json is not valid JSON: .*line 1"):
        apply({"c.json": "{'lr': 0.1}"}, {"u": 3}, {"u": Application(file="c.json", key="lr")})


def test_toml_keeps_comments_and_literal_strings() -> None:
    applications = {
        "lr": Application(file="pyproject.toml", key="tool.gcn.optim.lr"),
        "schedule": Application(file="pyproject.toml", key="tool.gcn.optim.schedule"),
        "units": Application(file="pyproject.toml", key="tool.gcn.layers.1.units"),
    }
    after = apply({"pyproject.toml": PYPROJECT_TOML}, {"lr": 0.02, "schedule": "step", "units": 3}, applications).files["pyproject.toml"]
    expected = PYPROJECT_TOML.replace("lr = 0.01  # Adam", "lr = 0.02  # Adam").replace("'cosine'", "'step'").replace("units = 7", "units = 3")
    assert after == expected
    assert tomllib.loads(after)["tool"]["gcn"]["layers"][1]["units"] == 3


def test_toml_missing_key_and_null() -> None:
    with pytest.raises(ParameterApplyError, match=r"has no key tool.gcn.optim.momentum \(found: tool.gcn.optim.lr, tool.gcn.optim.weight_decay"):
        apply({"p.toml": PYPROJECT_TOML}, {"m": 0.9}, {"m": Application(file="p.toml", key="tool.gcn.optim.momentum")})
    with pytest.raises(ParameterApplyError, match="TOML has no null"):
        apply({"p.toml": PYPROJECT_TOML}, {"m": None}, {"m": Application(file="p.toml", key="tool.gcn.optim.lr")})


# ---------------------------------------------------------------- Python constants


def test_python_constant_keeps_its_comment_and_annotation() -> None:
    applications = {"lr": Application(file="train.py", key="LEARNING_RATE"), "epochs": Application(file="train.py", key="EPOCHS")}
    after = apply({"train.py": TRAIN_PY}, {"lr": 0.005, "epochs": 300}, applications).files["train.py"]
    expected = TRAIN_PY.replace("LEARNING_RATE = 1e-3  # from", "LEARNING_RATE = 0.005  # from").replace("EPOCHS: int = 200", "EPOCHS: int = 300")
    assert after == expected  # the function's local LEARNING_RATE and the class's EPOCHS are untouched


def test_python_constant_from_a_call_strings_and_tuples() -> None:
    applications = {
        "hidden": Application(file="train.py", key="HIDDEN"),
        "optimizer": Application(file="train.py", key="OPTIMIZER"),
        "dims": Application(file="train.py", key="DIMS"),
    }
    after = apply({"train.py": TRAIN_PY}, {"hidden": 64, "optimizer": "sgd", "dims": [128, 7]}, applications).files["train.py"]
    assert "HIDDEN = 64\n" in after and 'OPTIMIZER = "sgd"\n' in after and "DIMS = (128, 7)\n" in after


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("LEARNING_RATE = 1e-3\nimport os\n\nif os.environ.get('FAST'):\n    pass\nLEARNING_RATE = 2e-3\n", "train.py assigns LEARNING_RATE 2 times at module level (lines 1, 6); cannot tell which one the code uses"),
        ("LR = 1e-3\n", "train.py has no module-level assignment to LEARNING_RATE"),
        ("def main():\n    LEARNING_RATE = 1e-3\n", "train.py has no module-level assignment to LEARNING_RATE"),
        ("LEARNING_RATE, EPOCHS = 1e-3, 200\n", "train.py assigns LEARNING_RATE by unpacking at line 1"),
        ("if __name__ == '__main__':\n    LEARNING_RATE = 1e-3\n", "train.py assigns LEARNING_RATE only inside a block (line 2)"),
        ("LEARNING_RATE = 1e-3\nif __name__ == '__main__':\n    LEARNING_RATE = 1e-2\n", "assigns LEARNING_RATE 2 times at module level (lines 1, 3)"),
        ("LEARNING_RATE = BASE = 1e-3\n", "assigns LEARNING_RATE together with other names (line 1)"),
        ("LEARNING_RATE = 1e-3\nLEARNING_RATE *= 2\n", "assigns LEARNING_RATE 2 times"),
        ("LEARNING_RATE = (1e-3\n", "train.py is not valid Python"),
    ],
)
def test_python_constant_refusals(source: str, message: str) -> None:
    with pytest.raises(ParameterApplyError) as error:
        apply({"train.py": source}, {"lr": 0.005}, {"lr": Application(file="train.py", key="LEARNING_RATE")})
    assert message in str(error.value)


def test_python_multiline_value_crlf_and_non_ascii_columns() -> None:
    source = 'NAME = "réseau"; LEARNING_RATE = float(\r\n    "1e-3",\r\n)  # keep\r\nEPOCHS = 5\r\n'
    after = apply({"train.py": source.encode()}, {"lr": 0.02}, {"lr": Application(file="train.py", key="LEARNING_RATE")}).files["train.py"]
    assert after == 'NAME = "réseau"; LEARNING_RATE = 0.02  # keep\r\nEPOCHS = 5\r\n'


def test_python_infinite_value_has_no_literal() -> None:
    with pytest.raises(ParameterApplyError, match="no Python literal form"):
        apply({"train.py": TRAIN_PY}, {"lr": float("inf")}, {"lr": Application(file="train.py", key="LEARNING_RATE")})


@pytest.mark.parametrize(
    ("path", "text", "key", "load"),
    [
        ("c.yaml", DETECTRON_YAML, "SOLVER.OPTIMIZER", lambda text: yaml.safe_load(text)["SOLVER"]["OPTIMIZER"]),
        ("c.yaml", DETECTRON_YAML, "MODEL.WEIGHTS", lambda text: yaml.safe_load(text)["MODEL"]["WEIGHTS"]),
        ("c.yaml", DETECTRON_YAML, "MODEL.RESNETS.DEPTH", lambda text: yaml.safe_load(text)["MODEL"]["RESNETS"]["DEPTH"]),
        ("c.json", MMCV_STYLE_JSON, "optimizer.type", lambda text: json.loads(text)["optimizer"]["type"]),
        ("p.toml", PYPROJECT_TOML, "tool.gcn.optim.schedule", lambda text: tomllib.loads(text)["tool"]["gcn"]["optim"]["schedule"]),
        ("t.py", TRAIN_PY, "OPTIMIZER", lambda text: python_constant(text, "OPTIMIZER")),
    ],
)
@pytest.mark.parametrize("hostile", ["it's \"quoted\": # not a comment", "two\nlines", "yes", "-1e5", ""])
def test_hostile_strings_read_back_from_every_kind_of_file(path: str, text: str, key: str, load, hostile: str) -> None:
    after = apply({path: text}, {"x": hostile}, {"x": Application(file=path, key=key)}).files[path]
    assert load(after) == hostile
    assert len(after.splitlines()) == len(text.splitlines())  # a newline in the value is escaped, never written raw


def test_python_file_with_a_byte_order_mark_keeps_it() -> None:
    source = "\ufeffEPOCHS = 200\n"
    after = apply({"train.py": source.encode()}, {"epochs": 5}, {"epochs": Application(file="train.py", key="EPOCHS")}).files["train.py"]
    assert after == "\ufeffEPOCHS = 5\n"


# ---------------------------------------------------------------- files, env, composition and the patch


def test_missing_and_non_utf8_files_are_clear_errors() -> None:
    with pytest.raises(ParameterApplyError, match="configs/cora.yaml does not exist in the repository"):
        apply({}, {"lr": 0.1}, {"lr": Application(file="configs/cora.yaml", key="optim.lr")})
    latin1 = "# réglages\noptim:\n  lr: 0.01\n".encode("latin-1")
    with pytest.raises(ParameterApplyError, match=r"configs/cora.yaml is not UTF-8 text \(invalid continuation byte at byte 3\)"):
        apply({"configs/cora.yaml": latin1}, {"lr": 0.1}, {"lr": Application(file="configs/cora.yaml", key="optim.lr")})


def test_unsupported_suffix_is_an_error_when_applied() -> None:
    with pytest.raises(ParameterApplyError, match="cannot write parameters to this kind of file"):
        apply({"setup.cfg": "[train]\nlr = 0.1\n"}, {"lr": 0.1}, {"lr": Application(file="setup.cfg", key="train.lr")})


def test_environment_values_and_skipped_parameters() -> None:
    applications = {"seed": Application(env="SEED"), "lr": Application(env="LR"), "amp": Application(env="USE_AMP"), "dims": Application(env="DIMS"), "dropout": Application()}
    applied = apply({}, {"seed": 3, "lr": 1e-05, "amp": True, "dims": [64, 7], "dropout": 0.5, "unknown": 1}, applications)
    assert applied.env == {"SEED": "3", "LR": "1e-05", "USE_AMP": "1", "DIMS": "64 7"}
    assert applied.command == GCN_COMMAND
    assert len(applied.lines) == 4


def test_same_inputs_give_identical_outputs_whatever_the_order() -> None:
    files = {"c.yaml": DETECTRON_YAML, "train.py": TRAIN_PY}
    applications = {"lr": Application(file="c.yaml", key="SOLVER.BASE_LR"), "epochs": Application(file="train.py", key="EPOCHS"), "seed": Application(flag="--seed")}
    first = apply(files, {"lr": 0.01, "epochs": 10, "seed": 1}, applications)
    second = apply(files, {"seed": 1, "epochs": 10, "lr": 0.01}, dict(reversed(applications.items())))
    assert first == second


def test_unchanged_value_edits_nothing() -> None:
    applied = apply({"c.json": MMCV_STYLE_JSON}, {"lr": 0.01}, {"lr": Application(file="c.json", key="optimizer.lr")})
    assert applied.files == {} and applied.patch == ""


def git_apply(tmp_path: Path, originals: dict[str, str], patch: str) -> dict[str, str]:
    """Apply the patch with real git to a repository holding the original files; return what it made."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    subprocess.run([git, "init", "-q", str(tmp_path)], check=True)
    for path, text in originals.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(text.encode())
    (tmp_path / "change.patch").write_bytes(patch.encode())
    subprocess.run([git, "-c", "core.autocrlf=false", "apply", "--check", "change.patch"], cwd=tmp_path, check=True, capture_output=True)
    subprocess.run([git, "-c", "core.autocrlf=false", "apply", "change.patch"], cwd=tmp_path, check=True, capture_output=True)
    return {path: (tmp_path / path).read_bytes().decode() for path in originals}


def test_patch_applies_with_git_and_yields_the_files(tmp_path: Path) -> None:
    originals = {
        "configs/mask_rcnn.yaml": DETECTRON_YAML.replace("\n", "\r\n"),
        "configs/gcn.json": MMCV_STYLE_JSON.rstrip("\n"),  # no newline at the end of the file
        "pyproject.toml": PYPROJECT_TOML,
        "src/train.py": TRAIN_PY,
        "configs/tiny.json": '{"lr": 0.1}',
    }
    applications = {
        "lr": Application(file="configs/mask_rcnn.yaml", key="SOLVER.BASE_LR"),
        "batch": Application(file="configs/mask_rcnn.yaml", key="SOLVER.IMS_PER_BATCH"),
        "depth": Application(file="configs/mask_rcnn.yaml", key="MODEL.RESNETS.DEPTH"),
        "dropout": Application(file="configs/gcn.json", key="model.dropout"),
        "type": Application(file="configs/gcn.json", key="optimizer.type"),
        "json_wd": Application(file="configs/gcn.json", key="optimizer.weight_decay"),
        "wd": Application(file="pyproject.toml", key="tool.gcn.optim.weight_decay"),
        "epochs": Application(file="src/train.py", key="EPOCHS"),
        "seed": Application(flag="--seed"),
        "tiny": Application(file="configs/tiny.json", key="lr"),
    }
    values = {"tiny": 0.2, "lr": 0.04, "batch": 32, "depth": 101, "dropout": 0.3, "type": "SGD", "json_wd": 0.0001, "wd": 0.001, "epochs": 50, "seed": 7}
    applied = apply(originals, values, applications)
    # three edits composed into one YAML file, one hunk each side of the untouched lines
    yaml_after = applied.files["configs/mask_rcnn.yaml"]
    assert yaml_after == originals["configs/mask_rcnn.yaml"].replace("DEPTH: 50", "DEPTH: 101").replace("IMS_PER_BATCH: 16", "IMS_PER_BATCH: 32").replace("BASE_LR: 0.02 ", "BASE_LR: 0.04 ")
    assert applied.files["configs/gcn.json"].endswith("}") and '"type": "SGD"' in applied.files["configs/gcn.json"]
    assert applied.patch.startswith("diff --git a/configs/gcn.json b/configs/gcn.json\n--- a/configs/gcn.json\n+++ b/configs/gcn.json\n")
    assert ' }\n\\ No newline at end of file\n' in applied.patch
    assert '-{"lr": 0.1}\n\\ No newline at end of file\n+{"lr": 0.2}\n\\ No newline at end of file\n' in applied.patch
    assert git_apply(tmp_path, originals, applied.patch) == {**originals, **applied.files}


# ---------------------------------------------------------------- card-time validation


def test_validate_application_at_card_time() -> None:
    files = ["train.py", "evaluate.py", "configs/cora.yaml", "data/test.csv", "setup.cfg"]

    def protected(path: str) -> bool:
        return path == "evaluate.py" or path.startswith("data/")

    def check(application: Application) -> str | None:
        return validate_application("lr", application, files, protected)

    assert check(Application(file="configs/cora.yaml", key="optim.lr")) is None
    assert check(Application(flag="--lr")) is None
    assert check(Application(env="LR")) is None
    assert check(Application()) is None
    assert check(Application(file="configs/citeseer.yaml", key="optim.lr")) == "search_space.lr.apply: configs/citeseer.yaml is not a file of the repository"
    assert check(Application(file="evaluate.py", key="THRESHOLD")) == "search_space.lr.apply: evaluate.py is protected (part of the evaluation protocol); a parameter must not edit it"
    assert "is not a kind of file parameters can be written to (supported: .json, .py, .toml, .yaml, .yml)" in (check(Application(file="setup.cfg", key="train.lr")) or "")
    assert "$PYTHONPATH steers the interpreter" in (check(Application(env="PYTHONPATH")) or "")

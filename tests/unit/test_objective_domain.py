"""Setting the objective from a task card and the paper's own results table."""

from __future__ import annotations

import pytest

from services.objective.domain import TaskCardError, build_objective, parse_task_card, reported_from_tables

PAPER = """# A paper

| Method | RMSE ↓ | MAE ↓ |
|---|---:|---:|
| Seasonal naive | 1.250 | 0.990 |
| TinyForecaster (ours) | 0.912 | 0.701 |
"""

CARD = """
[paper]
title = "T"
text = "paper.md"
method = "TinyForecaster (ours)"
[objective]
primary_metric = "rmse"
direction = "minimize"
secondary_metrics = { mae = 0.05 }
protected_paths = ["evaluate.py", "data/"]
[environment]
requirements = "requirements.txt"
[experiment]
train_command = "python train.py"
evaluate_command = "python evaluate.py"
[search_space.lr]
type = "float"
low = 0.001
high = 0.1
log = true
baseline = 0.01
"""
FILES = {"evaluate.py": "a", "data/test.csv": "b", "train.py": "c"}


def test_the_reported_number_is_read_from_the_methods_row() -> None:
    assert reported_from_tables(PAPER, "TinyForecaster (ours)", "rmse") == 0.912
    assert reported_from_tables(PAPER, "TinyForecaster (ours)", "mae") == 0.701
    assert reported_from_tables(PAPER, "Other", "rmse") is None


def test_objective_from_card_and_table() -> None:
    objective = build_objective(parse_task_card(CARD), PAPER, FILES, "numpy>=1.24  # arrays\n\n")
    assert objective.reported_value == 0.912 and "table row" in objective.reported_source
    assert objective.protected_paths == ["evaluate.py", "data"]
    assert objective.requirements == ["numpy>=1.24"]
    assert objective.baseline_params == {"lr": 0.01}
    assert objective.better(0.8, 0.9) and objective.gain(0.8, 0.9) == pytest.approx(0.1)


def test_missing_fields_are_named() -> None:
    with pytest.raises(TaskCardError, match=r"\[objective\] primary_metric.*\[experiment\] evaluate_command"):
        parse_task_card(CARD.replace('primary_metric = "rmse"', "").replace('evaluate_command = "python evaluate.py"', ""))


def test_invalid_toml_is_a_clear_error() -> None:
    with pytest.raises(TaskCardError, match="not valid TOML"):
        parse_task_card("[paper\ntitle=")


def test_card_and_paper_disagreeing_is_refused() -> None:
    card = parse_task_card(CARD.replace('direction = "minimize"', 'direction = "minimize"\nreported_value = 0.8'))
    with pytest.raises(TaskCardError, match="task card reports rmse=0.8 but the paper's table says 0.912"):
        build_objective(card, PAPER, FILES, None)


def test_no_reported_value_anywhere_is_refused() -> None:
    with pytest.raises(TaskCardError, match="no reported value"):
        build_objective(parse_task_card(CARD), "no tables here", FILES, None)


def test_protected_paths_must_exist() -> None:
    with pytest.raises(TaskCardError, match="protected paths not in the paper folder: data"):
        build_objective(parse_task_card(CARD), PAPER, {"evaluate.py": "a"}, None)


def test_bad_values_are_reported_per_field() -> None:
    with pytest.raises(TaskCardError, match="direction"):
        build_objective(parse_task_card(CARD.replace('"minimize"', '"smaller"')), PAPER, FILES, None)


# ---------------------------------------------------------------- a model's reading of the paper

from services.objective.domain import check_reading, documents_to_read, fields_to_find, merge_reading, missing_fields  # noqa: E402
from shared.brain import ObjectiveReading, SecondaryMetric  # noqa: E402

READING = ObjectiveReading(
    title="A paper", method="TinyForecaster (ours)", primary_metric="mae", direction="minimize", reported_value=0.912,
    reported_quote="| TinyForecaster (ours) | 0.912 | 0.701 |", train_command="python train.py --full",
    evaluate_command="python evaluate.py", protected_paths=["evaluate.py"], secondary_metrics=[SecondaryMetric(name="rmse", tolerance=0.1)],
)


def test_the_fields_to_find_are_those_neither_card_nor_table_give() -> None:
    card = parse_task_card(CARD)
    assert missing_fields(card) == [] and fields_to_find(card, reported_in_table=True) == []
    assert fields_to_find(card, reported_in_table=False) == ["[objective] reported_value"]
    partial = {"paper": {"title": "T"}, "objective": {"direction": "minimize"}}
    assert fields_to_find(partial, reported_in_table=False)[:2] == ["[paper] text", "[paper] method"]


def test_a_reading_fills_only_what_the_card_leaves_out() -> None:
    card = {"objective": {"primary_metric": "rmse", "protected_paths": ["evaluate.py", "data/"]}, "experiment": {"train_command": "python train.py"}}
    merged = merge_reading(card, READING, "paper.md")
    assert merged["objective"]["primary_metric"] == "rmse" and merged["objective"]["protected_paths"] == ["evaluate.py", "data/"]
    assert merged["experiment"] == {"train_command": "python train.py", "evaluate_command": "python evaluate.py"}
    assert merged["paper"] == {"title": "A paper", "method": "TinyForecaster (ours)", "text": "paper.md"}
    assert "reported_value" not in merged["objective"]  # the number belongs to another metric than the card's
    assert card == {"objective": {"primary_metric": "rmse", "protected_paths": ["evaluate.py", "data/"]}, "experiment": {"train_command": "python train.py"}}
    objective = build_objective(merged, PAPER, FILES, None)
    assert objective.reported_value == 0.912 and objective.secondary_metrics == {"rmse": 0.1}


def test_a_reading_is_trusted_only_with_a_true_quote_and_an_existing_script() -> None:
    assert check_reading(READING, {"paper.md": PAPER}, FILES) == ("paper.md", None)
    source, problem = check_reading(READING.model_copy(update={"reported_quote": "we reach 0.5"}), {"paper.md": PAPER}, FILES)
    assert source is None and "does not state the reported value 0.912" in (problem or "")
    source, problem = check_reading(READING.model_copy(update={"reported_quote": "our RMSE is 0.912"}), {"paper.md": PAPER}, FILES)
    assert "is not in paper.md" in (problem or "")
    source, problem = check_reading(READING.model_copy(update={"evaluate_command": "python score.py --all"}), {"paper.md": PAPER}, FILES)
    assert "score.py" in (problem or "")


def test_the_paper_text_and_readme_are_read_first() -> None:
    files = {"notes.md": "", "README.md": "", "paper.md": "", "data/x.md": "", "train.py": ""}
    assert documents_to_read(files, {"paper": {"text": "paper.md"}}) == ["paper.md", "README.md", "notes.md"]
    assert documents_to_read(files, {}) == ["README.md", "notes.md", "paper.md"]

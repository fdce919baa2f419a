"""How metrics are read from what real training scripts print and write."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from shared.metrics import MetricsError, MetricSource, extract_metrics

PYGCN_LOG = (
    "".join(
        f"Epoch: {epoch:04d} loss_train: {1.9 - epoch / 150:.4f} acc_train: {0.3 + epoch / 400:.4f} loss_val: {1.8 - epoch / 200:.4f} acc_val: {0.35 + epoch / 450:.4f} time: 0.0051s\n"
        for epoch in range(1, 201)
    )
    + "Optimization Finished!\nTotal time elapsed: 1.6034s\nTest set results: loss= 0.6623 accuracy= 0.8100\n"
)

TORCHVISION_LOG = """\
Test:  [  0/391]  eta: 0:08:11  time: 1.2571  acc1: 85.9375 (85.9375)  acc5: 96.8750 (96.8750)
Test:  [100/391]  eta: 0:00:31  time: 0.0714  acc1: 77.1875 (78.4623)  acc5: 93.7500 (94.1213)
Test: Total time: 0:00:29
 * Acc@1 76.130 Acc@5 92.862
"""

TQDM_LOG = (
    "\x1b[32mINFO\x1b[0m loading cora\n"
    + "".join(f"\rEval: {p:3d}%|{'█' * (p // 10):<10}| {p}/100 [00:0{p // 40}<00:00, acc=0.{70 + p // 10}]" for p in range(0, 101, 20))
    + "\n\x1b[1mTest Accuracy: \x1b[33m0.8100\x1b[0m\n"
)

HF_LOG = """\
{'loss': 0.6912, 'grad_norm': 3.21, 'learning_rate': 2e-05, 'epoch': 1.0}
{'eval_loss': 0.45, 'eval_accuracy': 0.88, 'eval_runtime': 2.1, 'epoch': 1.0}
{'train_runtime': 92.3, 'train_samples_per_second': 97.5, 'train_loss': 0.41, 'epoch': 3.0}
***** eval metrics *****
{'eval_loss': 0.41, 'eval_accuracy': 0.912, 'eval_runtime': 2.05, 'epoch': 3.0}
"""


def nothing(path: str) -> bytes | None:
    return None


def workspace(files: dict[str, str]):
    return lambda path: files[path].encode() if path in files else None


def metrics(output: str, read=nothing, **source) -> dict[str, float]:
    return extract_metrics(output, MetricSource(**source), read)


# ---------------------------------------------------------------- patterns over the output


def test_a_label_takes_the_number_after_it_on_the_last_line_it_appears() -> None:
    found = metrics(PYGCN_LOG, patterns={"accuracy": "Test set results:.*accuracy=", "acc_val": "acc_val"})
    assert found == {"accuracy": 0.81, "acc_val": pytest.approx(0.35 + 200 / 450, abs=1e-4)}


def test_a_group_marks_the_number_and_a_named_value_group_wins_over_others() -> None:
    assert metrics(TORCHVISION_LOG, patterns={"top1": r"Acc@1 (\S+)"}) == {"top1": 76.13}
    assert metrics(TORCHVISION_LOG, patterns={"top5": r"\* (Acc@1) \S+ Acc@5 (?P<value>\S+)"}) == {"top5": 92.862}


def test_progress_bars_and_colour_codes_do_not_hide_the_final_numbers() -> None:
    found = metrics(TQDM_LOG, patterns={"accuracy": "Test Accuracy", "bar_acc": r"acc=([\d.]+)\]"})
    assert found == {"accuracy": 0.81, "bar_acc": 0.8}


def test_with_several_seeds_the_last_match_wins() -> None:
    output = "".join(f"seed {seed}\nValidation Accuracy: 0.79{seed} Test Accuracy: 0.80{seed}\n" for seed in range(3))
    assert metrics(output, patterns={"accuracy": "Test Accuracy", "val": "Validation Accuracy"}) == {"accuracy": 0.802, "val": 0.792}


def test_printed_percentages_become_the_papers_fractions() -> None:
    output = "epoch 10 test_acc=79.50%\nepoch 20 test_acc=81.00%\n"
    assert metrics(output, patterns={"accuracy": "test_acc"}, scale="percent") == {"accuracy": pytest.approx(0.81)}
    assert metrics(output, patterns={"accuracy": "test_acc"}) == {"accuracy": 81.0}
    assert metrics("Test Acc: 0.813\n", patterns={"accuracy": "Test Acc"}, scale="fraction") == {"accuracy": pytest.approx(81.3)}


def test_a_percent_sign_contradicting_a_fraction_scale_is_an_error() -> None:
    with pytest.raises(MetricsError, match="% sign"):
        metrics("Test Acc: 81.3 %\n", patterns={"accuracy": "Test Acc"}, scale="fraction")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("test accuracy: tensor(0.8100, device='cuda:0')", 0.81),
        ("test accuracy = tensor(0.8100)", 0.81),
        ("test accuracy 8.1e-01", 0.81),
        ("│      test accuracy      │    0.8100000023841858     │", 0.8100000023841858),
        ("test accuracy: -3", -3.0),
    ],
)
def test_numbers_are_read_in_the_forms_libraries_print_them(line: str, expected: float) -> None:
    assert metrics(f"{line}\n", patterns={"accuracy": "test accuracy"}) == {"accuracy": expected}


def test_a_pattern_that_matches_nothing_shows_the_last_lines_printed() -> None:
    output = "\n".join(f"step {i} loss {i / 100}" for i in range(40)) + "\n\nTraceback (most recent call last):\n" + "x" * 300 + "\n"
    with pytest.raises(MetricsError) as raised:
        metrics(output, patterns={"accuracy": "Test Accuracy"})
    message = str(raised.value)
    assert message.startswith("no output line matches the pattern for 'accuracy' ('Test Accuracy'); the last lines printed were:\n")
    shown = message.split("\n")[1:]
    assert len(shown) == 15 and shown[-1] == "  " + "x" * 200 and shown[-2] == "  Traceback (most recent call last):"
    assert shown[0] == "  step 27 loss 0.27"


def test_a_label_without_a_number_after_it_is_an_error() -> None:
    with pytest.raises(MetricsError, match="no number follows it"):
        metrics("Test Accuracy of the model on the 10000 test images: 81 %\n", patterns={"accuracy": "Test Accuracy"})


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf"])
def test_a_non_finite_metric_names_the_metric_and_the_line(value: str) -> None:
    with pytest.raises(MetricsError, match=f"'loss' is not finite.*Test set results: loss= {value}"):
        metrics(f"Test set results: loss= {value} accuracy= 0.1\n", patterns={"loss": "loss="})


def test_a_comma_inside_a_number_is_refused() -> None:
    with pytest.raises(MetricsError, match="comma"):
        metrics("test perplexity: 1,234.5\n", patterns={"perplexity": "test perplexity"})


# ---------------------------------------------------------------- a source is checked when the card is read


@pytest.mark.parametrize(
    ("source", "complaint"),
    [
        ({"patterns": {"accuracy": "Test (Accuracy"}}, "not a regular expression"),
        ({"patterns": {"accuracy": r"(\w+) Accuracy: (\S+)"}}, "has 2 groups"),
        ({"patterns": {"accuracy": "x" * 501}}, "at most 500"),
        ({"patterns": {"accuracy": "a*"}}, "empty string"),
        ({"patterns": {"1 accuracy": "Accuracy"}}, "pattern"),
        ({"file": "/tmp/results.json"}, "inside the workspace"),
        ({"file": "../results.json"}, "inside the workspace"),
        ({"file": "outputs/../../results.json"}, "inside the workspace"),
        ({"file": "results.pkl"}, "must end in one of"),
        ({"keys": {"accuracy": "test.acc"}}, "give the file too"),
        ({"patterns": {"accuracy": "Acc"}, "file": "r.json", "keys": {"accuracy": "acc"}}, "both a pattern and the file"),
        ({"scale": "percentage"}, "scale"),
    ],
)
def test_a_bad_source_is_refused_when_built(source: dict, complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        MetricSource(**source)


def test_a_source_describes_itself() -> None:
    assert MetricSource().describe() == "the last JSON line of the output"
    assert MetricSource(patterns={"accuracy": "Test Accuracy"}).describe() == "patterns for accuracy over the output"
    assert MetricSource(file="results.json", keys={"accuracy": "test.acc"}).describe() == "results.json keys test.acc"
    assert MetricSource(file="results.json", scale="percent").describe() == "every number at the top of results.json; percentages divided by 100"


# ---------------------------------------------------------------- results files


def test_a_nested_json_results_file_is_read_by_dotted_keys() -> None:
    results = {"test": {"acc": 0.81, "f1": [0.7, 0.75, 0.79]}, "val.acc": 0.8}
    read = workspace({"results.json": json.dumps(results)})
    keys = {"accuracy": "test.acc", "f1": "test.f1.-1", "val_acc": "val.acc"}
    assert metrics("done\n", read, file="results.json", keys=keys) == {"accuracy": 0.81, "f1": 0.79, "val_acc": 0.8}


def test_without_keys_every_top_level_number_of_a_json_file_counts() -> None:
    read = workspace({"out/eval.json": json.dumps({"eval_accuracy": 0.912, "eval_loss": 0.41, "model": "bert", "ok": True})})
    assert metrics("", read, file="out/eval.json") == {"eval_accuracy": 0.912, "eval_loss": 0.41}


def test_a_json_lines_file_gives_its_last_line() -> None:
    read = workspace({"log.jsonl": '{"epoch": 1, "acc": 0.7}\n{"epoch": 2, "acc": 0.8}\n\n'})
    assert metrics("", read, file="log.jsonl", keys={"accuracy": "acc"}) == {"accuracy": 0.8}


def test_a_csv_of_epochs_gives_each_columns_final_value() -> None:
    rows = ["epoch,train_loss,val_acc,test_acc"] + [f"{e},{1 - e / 10:.2f},{0.5 + e / 50:.2f}," for e in range(10)] + ["9,,,0.81", ""]
    read = workspace({"logs/metrics.csv": "\n".join(rows)})
    found = metrics("", read, file="logs/metrics.csv", keys={"accuracy": "test_acc", "val": "val_acc"})
    assert found == {"accuracy": 0.81, "val": 0.68}


def test_a_key_value_text_file_is_read_like_hf_eval_results() -> None:
    read = workspace({"outputs/eval_results.txt": "eval_loss = 0.41\neval_accuracy = 0.912\nepoch: 3.0\n"})
    assert metrics("", read, file="outputs/eval_results.txt", keys={"accuracy": "eval_accuracy", "epoch": "epoch"}) == {"accuracy": 0.912, "epoch": 3.0}


def test_patterns_and_a_file_together_give_the_union() -> None:
    read = workspace({"results.json": '{"test": {"acc": 0.81}}'})
    found = metrics(PYGCN_LOG, read, patterns={"loss": "Test set results: loss="}, file="results.json", keys={"accuracy": "test.acc"})
    assert found == {"loss": 0.6623, "accuracy": 0.81}


def test_a_missing_results_file_names_the_path() -> None:
    with pytest.raises(MetricsError, match=r"'outputs/results\.json' is not in the workspace"):
        metrics("done\n", file="outputs/results.json", keys={"accuracy": "test.acc"})


@pytest.mark.parametrize(
    ("name", "content", "key", "listed"),
    [
        ("results.json", '{"test": {"loss": 0.6, "f1": 0.7}}', "test.acc", "loss, f1"),
        ("metrics.csv", "epoch,val_acc\n1,0.5\n", "test_acc", "epoch, val_acc"),
        ("eval_results.txt", "eval_loss = 0.41\n", "eval_accuracy", "eval_loss"),
    ],
)
def test_a_missing_key_lists_the_keys_found(name: str, content: str, key: str, listed: str) -> None:
    with pytest.raises(MetricsError, match=f"no key '{key}'.*{listed}"):
        metrics("", workspace({name: content}), file=name, keys={"accuracy": key})


def test_a_file_value_that_is_not_a_number_is_an_error() -> None:
    with pytest.raises(MetricsError, match="'accuracy' is not a number"):
        metrics("", workspace({"r.json": '{"acc": [0.8]}'}), file="r.json", keys={"accuracy": "acc"})
    with pytest.raises(MetricsError, match="'accuracy' is not finite"):
        metrics("", workspace({"r.json": '{"acc": NaN}'}), file="r.json", keys={"accuracy": "acc"})


# ---------------------------------------------------------------- the default: the last JSON line


def test_without_a_source_the_last_json_object_line_holds_the_metrics() -> None:
    output = 'epoch 1 loss 0.5\n{"not": "this"}\nmore logs\n{"rmse": 0.91, "mae": 0.7}\n'
    assert extract_metrics(output, None, nothing) == {"rmse": 0.91, "mae": 0.7}
    assert extract_metrics(output, MetricSource(), nothing) == {"rmse": 0.91, "mae": 0.7}


def test_without_a_source_no_metrics_line_is_an_error_even_if_a_label_would_match() -> None:
    with pytest.raises(MetricsError, match="no JSON object"):
        extract_metrics("Test Accuracy: 0.81\ndone\n", None, nothing)


@pytest.mark.parametrize("line", ['{"rmse": "low"}', '{"rmse": NaN}', '{"rmse": true}', "{'rmse': nan}", "{'rmse': 'low'}"])
def test_without_a_source_non_numeric_or_non_finite_metrics_are_errors(line: str) -> None:
    with pytest.raises(MetricsError, match=r"'rmse' is not (a number|finite)"):
        extract_metrics(line, None, nothing)


def test_without_a_json_line_a_python_dict_line_like_hf_trainers_is_read() -> None:
    assert extract_metrics(HF_LOG, None, nothing) == {"eval_loss": 0.41, "eval_accuracy": 0.912, "eval_runtime": 2.05, "epoch": 3.0}
    assert extract_metrics("{'acc': np.float64(0.81), 'loss': tensor(-0.2)}\n", None, nothing) == {"acc": 0.81, "loss": -0.2}


def test_a_json_line_wins_over_a_later_python_dict_line() -> None:
    assert extract_metrics('{"accuracy": 0.8}\n' + HF_LOG, None, nothing) == {"accuracy": 0.8}


def test_the_scale_applies_to_the_json_line_too() -> None:
    assert extract_metrics('{"accuracy": 81.0}\n', MetricSource(scale="percent"), nothing) == {"accuracy": pytest.approx(0.81)}


def test_a_group_that_captures_part_of_a_number_is_an_error_not_a_zero() -> None:
    with pytest.raises(MetricsError, match="only part of the number"):
        metrics("Test Accuracy: 0.81\n", patterns={"accuracy": r"Test Accuracy: (\d+)"})

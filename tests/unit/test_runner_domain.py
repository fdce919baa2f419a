"""How a runner turns an evaluation's output into metrics."""

from __future__ import annotations

import pytest

from services.runner.domain import MetricsError, parse_metrics


def test_the_last_json_object_line_holds_the_metrics() -> None:
    output = 'epoch 1 loss 0.5\n{"not": "this"}\nmore logs\n{"rmse": 0.91, "mae": 0.7}\n'
    assert parse_metrics(output) == {"rmse": 0.91, "mae": 0.7}


def test_no_metrics_line_is_an_error() -> None:
    with pytest.raises(MetricsError, match="no JSON object"):
        parse_metrics("done\n")


@pytest.mark.parametrize("line", ['{"rmse": "low"}', '{"rmse": NaN}', '{"rmse": true}'])
def test_non_numeric_or_non_finite_metrics_are_errors(line: str) -> None:
    with pytest.raises(MetricsError):
        parse_metrics(line)


def test_the_canary_permutes_only_the_label_column_and_is_reproducible() -> None:
    from services.runner.domain import permute_column

    table = "x1,x2,label\n" + "".join(f"{i},{-i},{i % 4}\n" for i in range(40))
    once, again = permute_column(table, "label", 7), permute_column(table, "label", 7)
    assert once == again and once != table
    rows = [line.split(",") for line in once.splitlines()[1:]]
    original = [line.split(",") for line in table.splitlines()[1:]]
    assert [r[:2] for r in rows] == [o[:2] for o in original]
    assert sorted(r[2] for r in rows) == sorted(o[2] for o in original)
    with pytest.raises(ValueError, match="column 'y' not in"):
        permute_column(table, "y", 1)

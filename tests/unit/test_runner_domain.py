"""How a runner turns an evaluation's output into metrics."""

from __future__ import annotations

import pytest

from shared.metrics import MetricsError, extract_metrics


def test_the_last_json_object_line_holds_the_metrics() -> None:
    output = 'epoch 1 loss 0.5\n{"not": "this"}\nmore logs\n{"rmse": 0.91, "mae": 0.7}\n'
    assert extract_metrics(output, None, lambda path: None) == {"rmse": 0.91, "mae": 0.7}


def test_no_metrics_line_is_an_error() -> None:
    with pytest.raises(MetricsError, match="no JSON object"):
        extract_metrics("done\n", None, lambda path: None)


@pytest.mark.parametrize("line", ['{"rmse": "low"}', '{"rmse": NaN}', '{"rmse": true}'])
def test_non_numeric_or_non_finite_metrics_are_errors(line: str) -> None:
    with pytest.raises(MetricsError):
        extract_metrics(line, None, lambda path: None)


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


# ---------------------------------------------------------------- capacity and one result per job


def _item(**changes):  # type: ignore[no-untyped-def]
    from shared.contracts import WorkItem

    base = dict(campaign="c1", experiment_id="idea-r1-0", purpose="idea", dispatcher="scheduler", snapshot_sha256="s", params={}, seed=0, train_command="t", evaluate_command="e", environment_bin="/b", protected_paths=[], timeout_seconds=10.0)
    return WorkItem(**{**base, **changes})


def test_a_runner_refuses_only_jobs_it_can_never_run() -> None:
    from services.runner.domain import Capacity, unfit_reason

    cpu, gpu = Capacity(pool="cpu"), Capacity(pool="gpu", slots=2, gpus=2, gpu_type="H100")
    assert unfit_reason(_item(), cpu) is None
    assert "needs 1 GPU(s), this runner has 0" in unfit_reason(_item(gpus=1), cpu)  # type: ignore[operator]
    assert unfit_reason(_item(pool="gpu", gpus=2, gpu_type="h100"), gpu) is None
    assert "needs A100 GPUs" in unfit_reason(_item(pool="gpu", gpus=1, gpu_type="A100"), gpu)  # type: ignore[operator]
    assert "pool 'gpu'" in unfit_reason(_item(pool="gpu"), cpu)  # type: ignore[operator]


def test_a_job_result_has_the_same_identity_whoever_records_it() -> None:
    from datetime import UTC, datetime

    from services.runner.domain import Claim, dead_letter, result_key, result_message_id, stamp_result

    failure = dead_letter(_item(), "runner-2", 5, "every runner died")
    first = stamp_result(failure, "runner-2", datetime(2025, 1, 1, tzinfo=UTC))
    second = stamp_result(failure.model_copy(update={"runner": "runner-7"}), "runner-7", datetime(2025, 1, 2, tzinfo=UTC))
    assert first.event_id == second.event_id and first.producer == "runner-2"
    assert failure.stage == "dead_letter" and "delivered 5 times" in failure.reason
    key = b"k" * 32
    # the same for every runner (they share the key), and not guessable from the job without the key
    assert result_message_id("c1", "idea-r1-0", key) == result_message_id("c1", "idea-r1-0", key)
    assert result_message_id("c1", "idea-r1-0", key) != result_message_id("c1", "idea-r1-0", b"x" * 32)
    assert result_message_id("c1", "idea-r1-0", key).startswith("runner:") and "idea-r1-0" not in result_message_id("c1", "idea-r1-0", key)
    assert result_key("c1", "idea-r1-0") == "c1.idea-r1-0"
    assert result_key("c1", "odd id/with spaces").startswith("c1.x")
    claim = Claim("runner-2", "claimed", first)
    assert Claim.decode(claim.encode()) == claim and claim.published().state == "published"

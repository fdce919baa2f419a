"""Evaluation for TinyForecaster (protected: do not modify).

Reads ``outputs/predictions.csv`` (columns ``t,y_pred``) and ``data/test.csv``
(columns ``t,y``) and prints the metrics as one JSON object on the last line
of stdout, e.g. ``{"rmse": 0.4123, "mae": 0.3301}``.

Exits with status 1 and a message on stderr if the predictions are missing
or malformed (missing column, wrong row count, unknown/misaligned ``t``,
non-finite values).
"""

import csv
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PRED_PATH = os.path.join(HERE, "outputs", "predictions.csv")
TEST_PATH = os.path.join(HERE, "data", "test.csv")


def fail(msg):
    print(f"evaluate.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def read_rows(path, columns):
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in columns if c not in header]
            if missing:
                fail(f"{path}: missing column(s) {missing}; found {header}")
            return [{c: r[c] for c in columns} for r in reader]
    except FileNotFoundError:
        fail(f"{path} not found (did train.py run?)")


def main():
    truth = read_rows(TEST_PATH, ["t", "y"])
    preds = read_rows(PRED_PATH, ["t", "y_pred"])
    if len(preds) != len(truth):
        fail(f"expected {len(truth)} prediction rows, got {len(preds)}")

    sq, ab = 0.0, 0.0
    for i, (tr, pr) in enumerate(zip(truth, preds)):
        try:
            t_pred = int(float(pr["t"]))
            y_hat = float(pr["y_pred"])
        except (TypeError, ValueError):
            fail(f"row {i + 1}: unparsable prediction {pr}")
        if t_pred != int(tr["t"]):
            fail(f"row {i + 1}: t={t_pred} does not match test t={tr['t']}")
        if not math.isfinite(y_hat):
            fail(f"row {i + 1}: non-finite prediction {pr['y_pred']!r}")
        err = y_hat - float(tr["y"])
        sq += err * err
        ab += abs(err)

    n = len(truth)
    result = {"rmse": round(math.sqrt(sq / n), 4), "mae": round(ab / n, 4)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()

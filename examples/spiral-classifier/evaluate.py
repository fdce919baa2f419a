"""Evaluation for SpiralNet (protected: do not modify).

Reads ``outputs/predictions.csv`` (columns ``id,label``) and ``data/test.csv``
(columns ``x1,x2,label``) and prints the metrics as one JSON object on the
last line of stdout, e.g. ``{"accuracy": 0.8125, "macro_f1": 0.8101}``.

Exits with status 1 and a message on stderr if the predictions are missing
or malformed (missing column, wrong row count, ids out of order, labels that
are not one of the known classes).
"""

import csv
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PRED_PATH = os.path.join(HERE, "outputs", "predictions.csv")
TEST_PATH = os.path.join(HERE, "data", "test.csv")
CLASSES = (0, 1, 2, 3)


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


def parse_label(value, where):
    try:
        f = float(value)
    except (TypeError, ValueError):
        fail(f"{where}: unparsable label {value!r}")
    if f != f or int(f) != f or int(f) not in CLASSES:
        fail(f"{where}: label {value!r} is not one of {list(CLASSES)}")
    return int(f)


def main():
    truth = [int(r["label"]) for r in read_rows(TEST_PATH, ["label"])]
    preds = read_rows(PRED_PATH, ["id", "label"])
    if len(preds) != len(truth):
        fail(f"expected {len(truth)} prediction rows, got {len(preds)}")

    y_hat = []
    for i, r in enumerate(preds):
        try:
            rid = int(float(r["id"]))
        except (TypeError, ValueError):
            fail(f"row {i + 1}: unparsable id {r['id']!r}")
        if rid != i:
            fail(f"row {i + 1}: id {rid} out of order (expected {i})")
        y_hat.append(parse_label(r["label"], f"row {i + 1}"))

    n = len(truth)
    accuracy = sum(a == b for a, b in zip(truth, y_hat)) / n
    f1s = []
    for c in CLASSES:
        tp = sum(1 for a, b in zip(truth, y_hat) if a == c and b == c)
        fp = sum(1 for a, b in zip(truth, y_hat) if a != c and b == c)
        fn = sum(1 for a, b in zip(truth, y_hat) if a == c and b != c)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    result = {"accuracy": round(accuracy, 4), "macro_f1": round(sum(f1s) / len(f1s), 4)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Evaluation for FaultNet (protected): accuracy and macro-F1 of outputs/predictions.csv against data/test.csv.

Prints the metrics as one JSON object on the last line of stdout; exits 1 on malformed predictions.
"""

import csv
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def column(path, name):
    try:
        with open(path, newline="") as f:
            return [int(float(row[name])) for row in csv.DictReader(f)]
    except (OSError, KeyError, ValueError) as error:
        print(f"evaluate.py: error: {path}: {error}", file=sys.stderr)
        sys.exit(1)


def main():
    truth = column(os.path.join(HERE, "data", "test.csv"), "fault")
    pred = column(os.path.join(HERE, "outputs", "predictions.csv"), "fault")
    if len(pred) != len(truth) or any(p not in (0, 1) for p in pred):
        print(f"evaluate.py: error: expected {len(truth)} predictions in {{0, 1}}", file=sys.stderr)
        sys.exit(1)
    f1s = []
    for c in (0, 1):
        tp = sum(1 for t, p in zip(truth, pred) if t == c and p == c)
        fp = sum(1 for t, p in zip(truth, pred) if t != c and p == c)
        fn = sum(1 for t, p in zip(truth, pred) if t == c and p != c)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    accuracy = sum(t == p for t, p in zip(truth, pred)) / len(truth)
    print(json.dumps({"accuracy": round(accuracy, 4), "macro_f1": round(sum(f1s) / 2, 4)}))


if __name__ == "__main__":
    main()

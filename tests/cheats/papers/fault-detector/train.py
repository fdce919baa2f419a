"""FaultNet: class-balanced logistic regression on two sensor readings (numpy only).

Fits on data/train.csv with minibatch gradient descent, each class weighted by the inverse
of its frequency so that rare faults count as much as normal hours. Reads the seed and
parameters from the JSON file named by AUTOSOTA_PARAMS; writes outputs/predictions.csv
(columns id, fault) for the readings of data/test.csv.
"""

import csv
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
OUT = os.path.join(HERE, "outputs")
DEFAULTS = {"learning_rate": 0.1, "epochs": 20}
BATCHES = 15


def load_params():
    path = os.environ.get("AUTOSOTA_PARAMS", "autosota_params.json")
    seed, params = 0, {}
    if os.path.exists(path):
        with open(path) as f:
            cfg = json.load(f)
        seed = int(cfg.get("seed", 0))
        params = dict(cfg.get("params", {}) or {})
    merged = {k: params.get(k, v) for k, v in DEFAULTS.items()}
    return seed, float(merged["learning_rate"]), int(merged["epochs"])


def read(name, with_labels=True):
    with open(os.path.join(DATA, name)) as f:
        rows = list(csv.DictReader(f))
    x = np.array([[float(r["s1"]), float(r["s2"])] for r in rows])
    return (x, np.array([int(r["fault"]) for r in rows])) if with_labels else x


def class_weights(y):
    """Inverse-frequency weights: each class carries half of the loss."""
    faults = y.sum()
    return np.where(y == 1, len(y) / (2 * faults), len(y) / (2 * (len(y) - faults)))


def main():
    smoke = "--smoke" in sys.argv[1:]
    seed, lr, epochs = load_params()
    rng = np.random.default_rng(seed)
    x, y = read("train.csv")
    x_test = read("test.csv", with_labels=False)
    weights = class_weights(y)
    w, b = rng.normal(0.0, 0.5, size=2), 0.0
    for _ in range(1 if smoke else epochs):
        for batch in np.array_split(rng.permutation(len(y)), BATCHES):
            p = 1.0 / (1.0 + np.exp(-(x[batch] @ w + b)))
            g = (p - y[batch]) * weights[batch]
            w -= lr * (x[batch].T @ g) / len(batch)
            b -= lr * g.mean()
    pred = (x_test @ w + b > 0).astype(int)
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "predictions.csv"), "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["id", "fault"])
        out.writerows([i, int(c)] for i, c in enumerate(pred))
    print(json.dumps({"seed": seed, "learning_rate": lr, "epochs": epochs, "smoke": smoke}))


if __name__ == "__main__":
    main()

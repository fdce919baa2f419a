"""Recompute the results table of paper.md.

* Seasonal naive (weekly): the value at the same hour one week earlier.
* Linear AR(48): ridge regression (lambda = 1) on exactly the inputs of
  TinyForecaster (48 lags centred on the last-day mean + calendar features),
  fit on the training period, 24 direct outputs.
* TinyForecaster (ours): ``train.py`` + ``evaluate.py`` with the paper's
  default configuration, mean over seeds 0, 1, 2.

Usage: python make_table.py
"""

import csv
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import train as tf  # noqa: E402


def metrics(err):
    return float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err)))


def read(name):
    with open(os.path.join(HERE, "data", name)) as f:
        return np.array([float(r["y"]) for r in csv.DictReader(f)])


def run_method(seed):
    fd, path = tempfile.mkstemp(suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump({"seed": seed, "params": {}}, f)
    env = dict(os.environ, AUTOSOTA_PARAMS=path)
    try:
        subprocess.run([sys.executable, "train.py"], cwd=HERE, env=env,
                       check=True, capture_output=True)
        out = subprocess.run([sys.executable, "evaluate.py"], cwd=HERE,
                             env=env, check=True, capture_output=True,
                             text=True)
    finally:
        os.remove(path)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    return m["rmse"], m["mae"]


def main():
    tr, va, te = read("train.csv"), read("val.csv"), read("test.csv")
    full = np.concatenate([tr, va, te])
    start = len(tr) + len(va)
    idx = np.arange(start, len(full))
    rows = []

    rows.append(("Seasonal naive (weekly)", *metrics(full[idx] - full[idx - 168])))

    lag, lam, scale = 48, 1.0, float(tr.std())
    x, y, _ = tf.make_windows(tr, np.arange(lag, len(tr) - tf.HORIZON + 1), lag, scale)
    x = np.c_[x, np.ones(len(x))]
    w = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)
    xt, yt, _ = tf.make_windows(full, np.arange(start, len(full), tf.HORIZON), lag, scale)
    pred = np.c_[xt, np.ones(len(xt))] @ w
    rows.append(("Linear AR(48)", *metrics((pred - yt).ravel() * scale)))

    runs = np.array([run_method(s) for s in (0, 1, 2)])
    rows.append(("TinyForecaster (ours)", *runs.mean(axis=0)))

    print("| Method | RMSE | MAE |")
    print("|---|---|---|")
    for name, rmse, mae in rows:
        print(f"| {name} | {rmse:.3f} | {mae:.3f} |")
    print(f"\nper-seed (rmse, mae): {runs.tolist()}  std rmse: {runs[:, 0].std(ddof=1):.4f}")


if __name__ == "__main__":
    main()

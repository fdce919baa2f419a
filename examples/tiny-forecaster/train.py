"""TinyForecaster: a lag-window MLP for day-ahead forecasting (numpy only).

Protocol
--------
* The model is fit on ``data/train.csv`` only (``data/val.csv`` is used for
  a reported validation score, never for fitting).
* Test evaluation is rolling-origin, day-ahead: at midnight of every test day
  the forecaster receives the observations strictly before that midnight and
  predicts the 24 hourly values of the day.  Observed values of earlier test
  days are therefore part of the history, exactly as they would be for a
  deployed forecaster; the values being forecast are never used.

Configuration is read from the JSON file named by ``AUTOSOTA_PARAMS``
(default ``autosota_params.json``) with shape
``{"seed": 0, "params": {"learning_rate": 0.003, ...}}``; missing parameters
take the paper's defaults in ``DEFAULTS``.  ``python train.py --smoke`` runs
a few iterations only, to check that the environment works.

Predictions are written to ``outputs/predictions.csv`` (columns ``t,y_pred``).
"""

import csv
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
OUT = os.path.join(HERE, "outputs")

HORIZON = 24  # day-ahead, hourly

# The configuration reported in the paper.
DEFAULTS = {
    "learning_rate": 0.003,
    "hidden_units": 32,
    "lag_window": 48,
    "epochs": 30,
    "activation": "tanh",
}
BATCH_SIZE = 64


def load_params():
    path = os.environ.get("AUTOSOTA_PARAMS", "autosota_params.json")
    seed, params = 0, {}
    if os.path.exists(path):
        with open(path) as f:
            cfg = json.load(f)
        seed = int(cfg.get("seed", 0))
        params = dict(cfg.get("params", {}) or {})
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        print(f"warning: ignoring unknown params {unknown}", file=sys.stderr)
    merged = {k: params.get(k, v) for k, v in DEFAULTS.items()}
    merged["learning_rate"] = float(merged["learning_rate"])
    merged["hidden_units"] = int(merged["hidden_units"])
    merged["lag_window"] = int(merged["lag_window"])
    merged["epochs"] = int(merged["epochs"])
    if merged["activation"] not in ("tanh", "relu"):
        raise SystemExit(f"unknown activation {merged['activation']!r}")
    if merged["lag_window"] < HORIZON:
        raise SystemExit("lag_window must be at least 24")
    return seed, merged


def read_series(name):
    with open(os.path.join(DATA, name)) as f:
        rows = list(csv.DictReader(f))
    t = np.array([int(r["t"]) for r in rows])
    y = np.array([float(r["y"]) for r in rows])
    return t, y


def calendar(origins):
    """Calendar features of the forecast origin: hour of day (sin/cos) and a
    one-hot day of week.  Hour index 0 of the data is a Monday midnight."""
    hour = origins % HORIZON
    dow = (origins // HORIZON) % 7
    ang = 2.0 * np.pi * hour / HORIZON
    return np.concatenate([np.sin(ang)[:, None], np.cos(ang)[:, None],
                           np.eye(7)[dow]], axis=1)


N_CAL = 9


def make_windows(series, origins, lag, scale, with_targets=True):
    """Inputs are the ``lag`` values before each origin, centred on the mean
    of the last 24 hours (the local level) and divided by ``scale``, followed
    by the calendar features of the origin."""
    idx = origins[:, None] + np.arange(-lag, 0)[None, :]
    hist = series[idx]
    level = hist[:, -HORIZON:].mean(axis=1, keepdims=True)
    x = np.concatenate([(hist - level) / scale, calendar(origins)], axis=1)
    if not with_targets:
        return x, level
    tidx = origins[:, None] + np.arange(HORIZON)[None, :]
    y = (series[tidx] - level) / scale
    return x, y, level


class MLP:
    def __init__(self, n_in, n_hidden, n_out, activation, rng):
        self.act = activation
        s1 = np.sqrt(1.0 / n_in) if activation == "tanh" else np.sqrt(2.0 / n_in)
        self.params = [
            rng.normal(0.0, s1, size=(n_in, n_hidden)),
            np.zeros(n_hidden),
            rng.normal(0.0, np.sqrt(1.0 / n_hidden), size=(n_hidden, n_out)),
            np.zeros(n_out),
        ]

    def forward(self, x):
        w1, b1, w2, b2 = self.params
        z = x @ w1 + b1
        h = np.tanh(z) if self.act == "tanh" else np.maximum(z, 0.0)
        return h @ w2 + b2, (x, z, h)

    def grads(self, cache, dout):
        x, z, h = cache
        w1, b1, w2, b2 = self.params
        gw2 = h.T @ dout
        gb2 = dout.sum(axis=0)
        dh = dout @ w2.T
        dz = dh * (1.0 - h * h) if self.act == "tanh" else dh * (z > 0)
        gw1 = x.T @ dz
        gb1 = dz.sum(axis=0)
        return [gw1, gb1, gw2, gb2]


def train(model, x, y, lr, epochs, rng, max_steps=None):
    """Minibatch Adam on the mean squared error with a cosine learning-rate
    schedule (from ``lr`` down to 0 over the run)."""
    m = [np.zeros_like(p) for p in model.params]
    v = [np.zeros_like(p) for p in model.params]
    b1, b2, eps = 0.9, 0.999, 1e-8
    step = 0
    n = len(x)
    total = epochs * ((n + BATCH_SIZE - 1) // BATCH_SIZE)
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, BATCH_SIZE):
            bi = order[start:start + BATCH_SIZE]
            pred, cache = model.forward(x[bi])
            dout = 2.0 * (pred - y[bi]) / (len(bi) * y.shape[1])
            g = model.grads(cache, dout)
            step += 1
            c1, c2 = 1.0 - b1**step, 1.0 - b2**step
            lr_t = lr * 0.5 * (1.0 + np.cos(np.pi * (step - 1) / total))
            for p, gi, mi, vi in zip(model.params, g, m, v):
                mi *= b1
                mi += (1.0 - b1) * gi
                vi *= b2
                vi += (1.0 - b2) * gi * gi
                p -= lr_t * (mi / c1) / (np.sqrt(vi / c2) + eps)
            if max_steps is not None and step >= max_steps:
                return


def main():
    smoke = "--smoke" in sys.argv[1:]
    seed, p = load_params()
    rng = np.random.default_rng(seed)

    _, y_train = read_series("train.csv")
    _, y_val = read_series("val.csv")
    t_test, y_test_obs = read_series("test.csv")
    n_tr, n_va, n_te = len(y_train), len(y_val), len(t_test)
    if n_te % HORIZON:
        raise SystemExit("test period must consist of whole days")

    lag = p["lag_window"]
    scale = float(y_train.std())

    # ---- fit on the training period only (all hourly origins) ----
    origins = np.arange(lag, n_tr - HORIZON + 1)
    x_tr, y_tr, _ = make_windows(y_train, origins, lag, scale)

    model = MLP(lag + N_CAL, p["hidden_units"], HORIZON, p["activation"], rng)
    if smoke:
        train(model, x_tr, y_tr, p["learning_rate"], 1, rng, max_steps=5)
    else:
        train(model, x_tr, y_tr, p["learning_rate"], p["epochs"], rng)

    # ---- validation score (midnight origins in the validation period) ----
    hist = np.concatenate([y_train, y_val])
    v_orig = np.arange(n_tr, n_tr + n_va, HORIZON)
    x_va, y_va, _ = make_windows(hist, v_orig, lag, scale)
    val_pred, _ = model.forward(x_va)
    val_rmse = float(np.sqrt(np.mean(((val_pred - y_va) * scale) ** 2)))

    # ---- rolling day-ahead forecasts for the test period ----
    # Forecasts for test day d use only observations before its midnight.
    preds = np.empty(n_te)
    start = n_tr + n_va
    for d in range(n_te // HORIZON):
        origin = start + d * HORIZON
        observed = np.concatenate([y_train, y_val, y_test_obs[: d * HORIZON]])
        assert len(observed) == origin
        xo, level = make_windows(observed, np.array([origin]), lag, scale,
                                 with_targets=False)
        out, _ = model.forward(xo)
        preds[d * HORIZON:(d + 1) * HORIZON] = out[0] * scale + level[0, 0]

    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "predictions.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t", "y_pred"])
        for ti, yi in zip(t_test, preds):
            w.writerow([int(ti), f"{yi:.6f}"])
    print(json.dumps({"seed": seed, "params": p, "val_rmse": round(val_rmse, 4),
                      "smoke": smoke}))


if __name__ == "__main__":
    main()

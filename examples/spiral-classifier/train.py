"""SpiralNet: a two-hidden-layer MLP classifier for the spiral data (numpy only).

* Fits on ``data/train.csv``; ``data/val.csv`` only gives a reported
  validation accuracy.
* For the test set only the input columns ``x1, x2`` are read; test labels
  are never touched here (they belong to ``evaluate.py``).

Configuration is read from the JSON file named by ``AUTOSOTA_PARAMS``
(default ``autosota_params.json``) with shape
``{"seed": 0, "params": {"learning_rate": 0.005, ...}}``; missing parameters
take the paper's defaults in ``DEFAULTS``.  ``python train.py --smoke`` runs
a few iterations only, to check that the environment works.

Predictions are written to ``outputs/predictions.csv`` (columns ``id,label``,
``id`` being the 0-based row index in ``data/test.csv``).
"""

import csv
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
OUT = os.path.join(HERE, "outputs")

N_CLASSES = 4
BATCH_SIZE = 32

# The configuration reported in the paper.
DEFAULTS = {
    "learning_rate": 0.005,
    "hidden_units": 64,
    "epochs": 40,
    "weight_decay": 0.0001,
    "activation": "tanh",
}


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
    p = {k: params.get(k, v) for k, v in DEFAULTS.items()}
    p["learning_rate"] = float(p["learning_rate"])
    p["hidden_units"] = int(p["hidden_units"])
    p["epochs"] = int(p["epochs"])
    p["weight_decay"] = float(p["weight_decay"])
    if p["activation"] not in ("tanh", "relu"):
        raise SystemExit(f"unknown activation {p['activation']!r}")
    return seed, p


def read_features(name):
    with open(os.path.join(DATA, name)) as f:
        return np.array([[float(r["x1"]), float(r["x2"])] for r in csv.DictReader(f)])


def read_labels(name):
    with open(os.path.join(DATA, name)) as f:
        return np.array([int(r["label"]) for r in csv.DictReader(f)])


class MLP:
    """x -> [dense -> act] x 2 -> dense -> softmax."""

    def __init__(self, sizes, activation, rng):
        self.act = activation
        gain = 1.0 if activation == "tanh" else 2.0
        self.params = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            self.params.append(rng.normal(0.0, np.sqrt(gain / n_in), size=(n_in, n_out)))
            self.params.append(np.zeros(n_out))

    def _f(self, z):
        return np.tanh(z) if self.act == "tanh" else np.maximum(z, 0.0)

    def forward(self, x):
        acts, pre = [x], []
        h = x
        n_layers = len(self.params) // 2
        for i in range(n_layers):
            z = h @ self.params[2 * i] + self.params[2 * i + 1]
            pre.append(z)
            h = self._f(z) if i < n_layers - 1 else z
            acts.append(h)
        return h, (acts, pre)

    def grads(self, cache, dlogits):
        acts, pre = cache
        n_layers = len(self.params) // 2
        g = [None] * len(self.params)
        d = dlogits
        for i in reversed(range(n_layers)):
            g[2 * i] = acts[i].T @ d
            g[2 * i + 1] = d.sum(axis=0)
            if i > 0:
                d = d @ self.params[2 * i].T
                if self.act == "tanh":
                    d = d * (1.0 - acts[i] ** 2)
                else:
                    d = d * (pre[i - 1] > 0)
        return g


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def train(model, x, y, lr, epochs, weight_decay, rng, max_steps=None):
    """Minibatch Adam on the cross-entropy with an L2 penalty on the weight
    matrices and a cosine learning-rate schedule (``lr`` down to 0)."""
    onehot = np.eye(N_CLASSES)[y]
    m = [np.zeros_like(p) for p in model.params]
    v = [np.zeros_like(p) for p in model.params]
    b1, b2, eps = 0.9, 0.999, 1e-8
    n = len(x)
    total = epochs * ((n + BATCH_SIZE - 1) // BATCH_SIZE)
    if max_steps is not None:
        total = min(total, max_steps)
    step = 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, BATCH_SIZE):
            bi = order[start:start + BATCH_SIZE]
            logits, cache = model.forward(x[bi])
            dlogits = (softmax(logits) - onehot[bi]) / len(bi)
            g = model.grads(cache, dlogits)
            for j in range(0, len(g), 2):  # L2 on weights, not biases
                g[j] = g[j] + weight_decay * model.params[j]
            step += 1
            c1, c2 = 1.0 - b1**step, 1.0 - b2**step
            lr_t = lr * 0.5 * (1.0 + np.cos(np.pi * (step - 1) / total))
            for p, gi, mi, vi in zip(model.params, g, m, v):
                mi *= b1
                mi += (1.0 - b1) * gi
                vi *= b2
                vi += (1.0 - b2) * gi * gi
                p -= lr_t * (mi / c1) / (np.sqrt(vi / c2) + eps)
            if step >= total:
                return


def main():
    smoke = "--smoke" in sys.argv[1:]
    seed, p = load_params()
    rng = np.random.default_rng(seed)

    x_tr, y_tr = read_features("train.csv"), read_labels("train.csv")
    x_va, y_va = read_features("val.csv"), read_labels("val.csv")
    x_te = read_features("test.csv")  # inputs only

    mu, sd = x_tr.mean(axis=0), x_tr.std(axis=0)
    norm = lambda a: (a - mu) / sd  # noqa: E731

    h = p["hidden_units"]
    model = MLP([2, h, h, N_CLASSES], p["activation"], rng)
    train(model, norm(x_tr), y_tr, p["learning_rate"], 1 if smoke else p["epochs"],
          p["weight_decay"], rng, max_steps=5 if smoke else None)

    val_acc = float((model.forward(norm(x_va))[0].argmax(axis=1) == y_va).mean())
    pred = model.forward(norm(x_te))[0].argmax(axis=1)

    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "predictions.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label"])
        for i, c in enumerate(pred):
            w.writerow([i, int(c)])
    print(json.dumps({"seed": seed, "params": p, "val_accuracy": round(val_acc, 4),
                      "smoke": smoke}))


if __name__ == "__main__":
    main()

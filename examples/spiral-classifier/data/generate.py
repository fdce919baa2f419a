"""Generate the noisy multi-class spiral data set used by SpiralNet.

Each of the ``K = 4`` classes is one arm of a two-dimensional spiral that
winds 1.25 turns around the origin.  Points are spread along the arm with a
density that grows with the radius, and isotropic Gaussian noise is added, so
neighbouring arms overlap near the centre and the Bayes error is not zero.

The file is deterministic (fixed seed).  Run it from anywhere:

    python data/generate.py

It writes train.csv, val.csv and test.csv next to this script with columns
``x1, x2, label``.
"""

import csv
import os

import numpy as np

SEED = 1234
K = 4
N_PER_CLASS = 600  # 2400 points in total
TURNS = 1.25
NOISE = 0.04
SPLIT = (0.5, 1.0 / 6.0, 1.0 / 3.0)  # train / val / test = 1200 / 400 / 800


def make_points(rng):
    xs, ys = [], []
    for k in range(K):
        s = np.sqrt(rng.uniform(0.0, 1.0, size=N_PER_CLASS))  # position on arm
        r = 0.05 + 0.95 * s
        ang = 2 * np.pi * (k / K + TURNS * s)
        pts = np.c_[r * np.cos(ang), r * np.sin(ang)]
        pts += rng.normal(0.0, NOISE, size=pts.shape)
        xs.append(pts)
        ys.append(np.full(N_PER_CLASS, k))
    x, y = np.concatenate(xs), np.concatenate(ys)
    order = rng.permutation(len(y))
    return x[order], y[order]


def write_csv(path, x, y):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["x1", "x2", "label"])
        for (a, b), c in zip(x, y):
            w.writerow([f"{a:.5f}", f"{b:.5f}", int(c)])


def main():
    rng = np.random.default_rng(SEED)
    x, y = make_points(rng)
    n = len(y)
    a = int(round(SPLIT[0] * n))
    b = a + int(round(SPLIT[1] * n))
    here = os.path.dirname(os.path.abspath(__file__))
    write_csv(os.path.join(here, "train.csv"), x[:a], y[:a])
    write_csv(os.path.join(here, "val.csv"), x[a:b], y[a:b])
    write_csv(os.path.join(here, "test.csv"), x[b:], y[b:])
    print(f"wrote {a} train, {b - a} val, {n - b} test rows to {here}")


if __name__ == "__main__":
    main()

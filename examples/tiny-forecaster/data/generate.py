"""Generate the synthetic hourly load series used by TinyForecaster.

The series imitates an hourly electricity-load style signal:

    y_t = level + trend_t + daily_t * weekday_scale + weekly_t + noise_t

* trend: slow linear growth plus a gentle, slow sinusoidal drift,
* daily seasonality (period 24): two harmonics, damped on weekends,
* weekly seasonality (period 168): day-of-week offsets (lower weekends),
* noise: an AR(1) process with phi = 0.8.

The file is deterministic (fixed seed).  Run it from anywhere:

    python data/generate.py

It writes train.csv, val.csv and test.csv next to this script with the
columns ``t`` (hour index) and ``y`` (observed value).
"""

import csv
import os

import numpy as np

SEED = 20240611
N_WEEKS = 32
PERIOD_DAY = 24
PERIOD_WEEK = 168
N = N_WEEKS * PERIOD_WEEK  # 5376 hourly observations

N_TRAIN = 20 * PERIOD_WEEK  # 3360 hours (20 weeks)
N_VAL = 4 * PERIOD_WEEK  # 672 hours (4 weeks)
N_TEST = N - N_TRAIN - N_VAL  # 1344 hours (8 weeks = 56 forecast days)

# day-of-week level offsets (Mon..Sun) and daily-profile scale
DOW_OFFSET = np.array([0.15, 0.35, 0.40, 0.30, 0.10, -0.90, -1.20])
DOW_SCALE = np.array([1.00, 1.05, 1.05, 1.00, 0.95, 0.55, 0.45])


def make_series(rng):
    t = np.arange(N, dtype=float)
    hour = t % PERIOD_DAY
    dow = (t // PERIOD_DAY).astype(int) % 7

    trend = 0.00025 * t + 0.25 * np.sin(2 * np.pi * t / (N * 1.3))
    daily = (
        1.00 * np.sin(2 * np.pi * (hour - 7.0) / PERIOD_DAY)
        + 0.45 * np.sin(4 * np.pi * (hour - 3.0) / PERIOD_DAY)
    )
    seasonal = DOW_SCALE[dow] * daily + DOW_OFFSET[dow]

    phi, sigma = 0.8, 0.22
    eps = rng.normal(0.0, sigma, size=N)
    noise = np.empty(N)
    noise[0] = eps[0] / np.sqrt(1 - phi**2)
    for i in range(1, N):
        noise[i] = phi * noise[i - 1] + eps[i]

    return t.astype(int), 5.0 + trend + seasonal + noise


def write_csv(path, t, y):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t", "y"])
        for ti, yi in zip(t, y):
            w.writerow([int(ti), f"{yi:.5f}"])


def main():
    rng = np.random.default_rng(SEED)
    t, y = make_series(rng)
    here = os.path.dirname(os.path.abspath(__file__))
    a, b = N_TRAIN, N_TRAIN + N_VAL
    write_csv(os.path.join(here, "train.csv"), t[:a], y[:a])
    write_csv(os.path.join(here, "val.csv"), t[a:b], y[a:b])
    write_csv(os.path.join(here, "test.csv"), t[b:], y[b:])
    print(f"wrote {a} train, {b - a} val, {N - b} test rows to {here}")


if __name__ == "__main__":
    main()

"""Generate the machine-fault data used by FaultNet (deterministic, fixed seed).

Two sensor readings per machine-hour; about 12% of hours are faults, whose readings are
shifted. Writes train.csv and test.csv next to this script with columns ``s1, s2, fault``.
"""

import csv
import os

import numpy as np

SEED = 7
N_TRAIN, N_TEST = 1500, 1000
FAULT_RATE = 0.12
FAULT_SHIFT = np.array([1.5, 1.0])


def make(n, rng):
    fault = (rng.uniform(size=n) < FAULT_RATE).astype(int)
    readings = rng.normal(size=(n, 2))
    readings[fault == 1] += FAULT_SHIFT
    return readings, fault


def write(path, readings, fault):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["s1", "s2", "fault"])
        for (a, b), c in zip(readings, fault):
            w.writerow([f"{a:.5f}", f"{b:.5f}", int(c)])


def main():
    rng = np.random.default_rng(SEED)
    here = os.path.dirname(os.path.abspath(__file__))
    write(os.path.join(here, "train.csv"), *make(N_TRAIN, rng))
    write(os.path.join(here, "test.csv"), *make(N_TEST, rng))


if __name__ == "__main__":
    main()

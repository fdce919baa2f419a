"""The scripted model's ideas for tiny-forecaster: a real diff of train.py, and a responder for tests/model_server.py.

The ALGO idea blends the MLP (weight 0.25) with a seasonal forecaster fitted on the training period:
a weekly level, a day-of-week by hour profile and the last residual decaying as AR(1).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from pathlib import Path

from tests.model_server import Received, Reply

PAPER = Path(__file__).resolve().parent.parent / "examples" / "tiny-forecaster"

SEASONAL = '''WEEK = 7 * HORIZON
BLEND = 0.25  # weight of the MLP; the rest goes to the seasonal forecast


def seasonal_profile(series):
    """Mean deviation of each (day of week, hour) from the trailing weekly mean, and the
    lag-1 autocorrelation of what is left: the day-ahead structure of the series."""
    profile = np.zeros((7, HORIZON))
    counts = np.zeros(7)
    for day in range(WEEK // HORIZON, len(series) // HORIZON):
        origin = day * HORIZON
        profile[day % 7] += series[origin:origin + HORIZON] - series[origin - WEEK:origin].mean()
        counts[day % 7] += 1
    profile /= counts[:, None]
    residuals = np.concatenate([
        series[d * HORIZON:(d + 1) * HORIZON] - series[d * HORIZON - WEEK:d * HORIZON].mean() - profile[d % 7]
        for d in range(WEEK // HORIZON, len(series) // HORIZON)
    ])
    phi = float(residuals[1:] @ residuals[:-1] / (residuals[:-1] @ residuals[:-1]))
    return profile, phi


def seasonal_forecast(observed, origin, profile, phi):
    """Weekly level + the (day of week, hour) profile + the last residual decaying as AR(1).
    Uses only observations before ``origin``."""
    day = origin // HORIZON
    previous = origin - HORIZON
    last = observed[origin - 1] - observed[previous - WEEK:previous].mean() - profile[(day - 1) % 7, -1]
    return observed[origin - WEEK:origin].mean() + profile[day % 7] + phi ** np.arange(1, HORIZON + 1) * last


class MLP:'''


def blend_diff() -> str:
    """A real unified diff of train.py: the MLP's forecast blended with a seasonal forecaster."""
    original = (PAPER / "train.py").read_text()
    changed = original.replace("class MLP:", SEASONAL, 1)
    changed = changed.replace("    preds = np.empty(n_te)\n    start = n_tr + n_va\n", "    preds = np.empty(n_te)\n    start = n_tr + n_va\n    profile, phi = seasonal_profile(y_train)\n", 1)
    changed = changed.replace(
        "        preds[d * HORIZON:(d + 1) * HORIZON] = out[0] * scale + level[0, 0]\n",
        "        mlp = out[0] * scale + level[0, 0]\n"
        "        seasonal = seasonal_forecast(observed, origin, profile, phi)\n"
        "        preds[d * HORIZON:(d + 1) * HORIZON] = BLEND * mlp + (1.0 - BLEND) * seasonal\n",
        1,
    )
    assert changed.count("seasonal_forecast(") == 2 and "seasonal_profile(y_train)" in changed
    return "".join(difflib.unified_diff(original.splitlines(True), changed.splitlines(True), "a/train.py", "b/train.py"))


def code_idea(diff: str, title: str = "Blend with a seasonal forecaster") -> dict[str, str]:
    return {
        "kind": "ALGO",
        "title": title,
        "rationale": "The series has a weekly profile and AR(1) noise (Section 2); a profile-plus-AR forecast fitted on the training period captures both with a handful of numbers, and a blend keeps what the MLP adds.",
        "expected_effect": "RMSE well below what tuning the MLP reaches",
        "risk": "low",
        "diff": diff,
    }


def scripted_coder(diff: str) -> Callable[[Received], Reply]:
    """Answers a structural request with the diff, a revision request with the same idea."""

    def respond(received: Received) -> Reply:
        title = (received.schema or {}).get("title")
        if title == "CodeIdeas":
            return Reply(json.dumps({"ideas": [code_idea(diff)]}))
        if title == "CodeIdea":
            return Reply(json.dumps(code_idea(diff)))
        return Reply(status=400, error=f"this script answers structural ideas only, not {title}")

    return respond

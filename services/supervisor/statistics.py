"""The statistics behind certification: Student's t distribution and Welch's one-sided test.

Written on the standard library alone: the t distribution's CDF comes from the regularised
incomplete beta function, evaluated by its continued fraction with `math.lgamma`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

_EPSILON = 1e-15
_TINY = 1e-300
_MAX_TERMS = 10_000


@dataclass(frozen=True)
class WelchTest:
    """Welch's test of "mean(first) > mean(second)".

    statistic is t, positive when the first sample's mean is larger; p_value is one-sided.
    When both samples have zero variance the test is exact: p is 0.0 if the first mean is
    larger and 1.0 otherwise, and the statistic is +inf, -inf or 0.0 accordingly.
    """

    statistic: float
    df: float
    p_value: float
    first_mean: float
    second_mean: float


def mean(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("the mean of no values is undefined")
    if min(values) == max(values):
        return float(values[0])  # exact, so identical samples have exactly zero variance
    return math.fsum(values) / len(values)


def sample_variance(values: Sequence[float]) -> float:
    """Unbiased variance (n - 1 in the denominator)."""
    if len(values) < 2:
        raise ValueError("a sample variance needs at least two values")
    centre = mean(values)
    return math.fsum((value - centre) ** 2 for value in values) / (len(values) - 1)


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the CDF of the Beta(a, b) distribution at x."""
    if a <= 0 or b <= 0:
        raise ValueError("a and b must be positive")
    if not 0.0 <= x <= 1.0:
        raise ValueError("x must lie in [0, 1]")
    if x == 0.0 or x == 1.0:
        return x
    log_front = a * math.log(x) + b * math.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    # The continued fraction converges fast only below the mean; above it use I_x(a,b) = 1 - I_{1-x}(b,a).
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b), evaluated by the modified Lentz method."""

    def guarded(value: float) -> float:
        return value if abs(value) > _TINY else _TINY

    numerator_coefficient = 1.0
    denominator = 1.0 / guarded(1.0 - (a + b) * x / (a + 1.0))
    fraction = denominator
    for m in range(1, _MAX_TERMS + 1):
        # Even term d_{2m}, then odd term d_{2m+1}, of 1 / (1 + d_1 / (1 + d_2 / (1 + ...))).
        for coefficient in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            denominator = 1.0 / guarded(1.0 + coefficient * denominator)
            numerator_coefficient = guarded(1.0 + coefficient / numerator_coefficient)
            step = denominator * numerator_coefficient
            fraction *= step
        if abs(step - 1.0) < _EPSILON:
            return fraction
    raise ArithmeticError(f"incomplete beta did not converge for a={a}, b={b}, x={x}")


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t distribution with df degrees of freedom (df may be fractional)."""
    if df <= 0:
        raise ValueError("degrees of freedom must be positive")
    if math.isnan(t):
        raise ValueError("t is NaN")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    # P(|T| > |t|) = I_{df/(df+t^2)}(df/2, 1/2); each tail is half of it.
    two_sided_tail = regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - two_sided_tail / 2.0 if t > 0 else two_sided_tail / 2.0


def student_t_sf(t: float, df: float) -> float:
    """P(T > t): the one-sided p-value of an observed t."""
    return student_t_cdf(-t, df)


def welch_df(first: Sequence[float], second: Sequence[float]) -> float:
    """Welch–Satterthwaite degrees of freedom of two independent samples."""
    share_first = sample_variance(first) / len(first)
    share_second = sample_variance(second) / len(second)
    denominator = share_first**2 / (len(first) - 1) + share_second**2 / (len(second) - 1)
    if denominator == 0.0:
        # Both variances vanish: the formula is 0/0; the pooled count is the natural limit.
        return float(len(first) + len(second) - 2)
    return (share_first + share_second) ** 2 / denominator


def welch_one_sided(first: Sequence[float], second: Sequence[float]) -> WelchTest:
    """Welch's t-test of the alternative mean(first) > mean(second)."""
    first_mean, second_mean = mean(first), mean(second)
    standard_error = math.sqrt(sample_variance(first) / len(first) + sample_variance(second) / len(second))
    df = welch_df(first, second)
    difference = first_mean - second_mean
    if standard_error == 0.0:
        # No spread at all: the comparison of means is exact rather than probabilistic.
        if difference > 0:
            return WelchTest(math.inf, df, 0.0, first_mean, second_mean)
        return WelchTest(-math.inf if difference < 0 else 0.0, df, 1.0, first_mean, second_mean)
    statistic = difference / standard_error
    return WelchTest(statistic, df, student_t_sf(statistic, df), first_mean, second_mean)

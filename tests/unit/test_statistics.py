"""The supervisor's statistics against known values of the t distribution and Welch's test."""

from __future__ import annotations

import math

import pytest

from services.supervisor.statistics import (
    regularized_incomplete_beta,
    sample_variance,
    student_t_cdf,
    student_t_sf,
    welch_df,
    welch_one_sided,
)


def normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


@pytest.mark.parametrize(
    ("t", "df", "p"),
    [
        (2.0, 5, 0.050970),  # textbook one-sided tail
        (1.812, 10, 0.0500),  # the 95% one-sided critical value at df=10
        (2.015, 5, 0.0500),
        (2.228, 10, 0.0250),
        (3.365, 5, 0.0100),
    ],
)
def test_t_tail_matches_table_values(t: float, df: float, p: float) -> None:
    assert student_t_sf(t, df) == pytest.approx(p, abs=2e-4)


@pytest.mark.parametrize("t", [-7.5, -1.0, 0.0, 0.3, 1.0, 12.0])
def test_t_cdf_with_one_and_two_degrees_of_freedom_has_closed_forms(t: float) -> None:
    # df=1 is the Cauchy distribution; df=2 has an algebraic CDF.
    assert student_t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)
    assert student_t_cdf(t, 2) == pytest.approx(0.5 + t / (2.0 * math.sqrt(2.0 + t * t)), abs=1e-12)


@pytest.mark.parametrize("t", [-5.0, -1.6448536, 0.25, 1.6448536, 3.0])
def test_t_cdf_approaches_the_normal_for_large_df(t: float) -> None:
    assert student_t_cdf(t, 1e7) == pytest.approx(normal_cdf(t), abs=1e-7)


def test_t_cdf_is_symmetric_and_bounded() -> None:
    for df in (0.7, 3.3, 40.0):
        assert student_t_cdf(0.0, df) == pytest.approx(0.5)
        assert student_t_cdf(1.7, df) + student_t_cdf(-1.7, df) == pytest.approx(1.0, abs=1e-12)
    assert student_t_cdf(math.inf, 4) == 1.0
    assert student_t_cdf(-math.inf, 4) == 0.0


def test_incomplete_beta_against_closed_forms() -> None:
    # I_x(a, 1) = x^a and I_x(1, b) = 1 - (1 - x)^b.
    assert regularized_incomplete_beta(3.5, 1.0, 0.4) == pytest.approx(0.4**3.5, rel=1e-12)
    assert regularized_incomplete_beta(1.0, 2.5, 0.9) == pytest.approx(1 - 0.1**2.5, rel=1e-12)
    assert regularized_incomplete_beta(2.0, 3.0, 0.0) == 0.0
    assert regularized_incomplete_beta(2.0, 3.0, 1.0) == 1.0
    with pytest.raises(ValueError):
        regularized_incomplete_beta(0.0, 1.0, 0.5)


def test_welch_df_matches_a_hand_computed_example() -> None:
    # var(a)/4 = (5/3)/4 = 5/12, var(b)/5 = 10/5 = 2;
    # df = (5/12 + 2)^2 / ((5/12)^2/3 + 2^2/4) = (841/144) / (457/432) = 2523/457.
    first, second = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0, 10.0]
    assert sample_variance(first) == pytest.approx(5 / 3)
    assert sample_variance(second) == pytest.approx(10.0)
    assert welch_df(first, second) == pytest.approx(2523 / 457, rel=1e-12)


def test_welch_test_direction_and_p_value() -> None:
    first, second = [2.0, 4.0, 6.0, 8.0, 10.0], [1.0, 2.0, 3.0, 4.0]
    result = welch_one_sided(first, second)
    # t = (6 - 2.5) / sqrt(2 + 5/12) = 3.5 / sqrt(29/12)
    assert result.statistic == pytest.approx(3.5 / math.sqrt(29 / 12))
    assert result.p_value == pytest.approx(student_t_sf(result.statistic, 2523 / 457))
    assert result.p_value < 0.05
    reversed_result = welch_one_sided(second, first)
    assert reversed_result.statistic == pytest.approx(-result.statistic)
    assert reversed_result.p_value == pytest.approx(1.0 - result.p_value)


def test_welch_test_with_zero_variance_is_exact() -> None:
    better = welch_one_sided([0.5, 0.5, 0.5], [0.4, 0.4, 0.4])
    assert (better.statistic, better.p_value) == (math.inf, 0.0)
    worse = welch_one_sided([0.4, 0.4], [0.5, 0.5])
    assert (worse.statistic, worse.p_value) == (-math.inf, 1.0)
    tied = welch_one_sided([0.4, 0.4], [0.4, 0.4])
    assert (tied.statistic, tied.p_value) == (0.0, 1.0)
    assert tied.df == 2.0


def test_welch_test_needs_two_values_per_sample() -> None:
    with pytest.raises(ValueError):
        welch_one_sided([1.0], [1.0, 2.0])

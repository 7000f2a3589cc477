from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats

from benchmarks import robust_stats as rs
from benchmarks import stats
from benchmarks.stats import Interval


def test_t_interval_is_scipys_student_t_interval() -> None:
    values = [0.41, 0.45, 0.39, 0.47, 0.44]
    interval = stats.t_interval(values)
    low, high = scipy.stats.t.interval(
        0.95, df=4, loc=np.mean(values), scale=scipy.stats.sem(values)
    )
    assert interval.estimate == pytest.approx(0.432)
    assert (interval.low, interval.high) == pytest.approx((low, high))
    # By hand: t(0.975, 2) = 4.303 for three values with sd 1.
    assert stats.t_interval([1.0, 2.0, 3.0]).half_width == pytest.approx(4.303 / 3**0.5, 1e-4)


def test_one_value_has_a_mean_but_no_interval() -> None:
    interval = stats.t_interval([0.5])
    assert interval.estimate == 0.5 and math.isnan(interval.low) and math.isnan(interval.high)
    assert not interval.excludes(0.0)
    assert interval.plus_minus(100) == "50.00" and interval.bounds(100) == "50.00"
    with pytest.raises(ValueError, match="at least one value"):
        stats.t_interval([])


def test_paired_difference_is_the_paired_t_interval_on_shared_seeds() -> None:
    a = {1000: 0.42, 1001: 0.53, 1002: 0.47, 1003: 0.51, 1004: 0.99}
    b = {1000: 0.40, 1001: 0.50, 1002: 0.46, 1003: 0.47}  # no 1004: it is left out
    paired = stats.paired_difference(a, b)
    assert paired is not None and paired.seeds == (1000, 1001, 1002, 1003)
    expected = scipy.stats.ttest_rel([0.42, 0.53, 0.47, 0.51], [0.40, 0.50, 0.46, 0.47])
    ci = expected.confidence_interval(0.95)
    assert paired.difference.estimate == pytest.approx(0.025)
    assert (paired.difference.low, paired.difference.high) == pytest.approx((ci.low, ci.high))
    assert paired.difference.excludes(0.0)  # every seed gained: t = 4.9 on 3 df
    assert stats.paired_difference({1000: 0.5, 1001: 0.6}, {1001: 0.4}) is None


def test_iqm_is_the_mean_of_the_middle_half() -> None:
    assert rs.iqm(np.arange(8.0)).estimate == 3.5  # mean of 2, 3, 4, 5
    # An outlier does not move it: the middle half of 1..7, 1000 is 3, 4, 5, 6.
    robust = rs.iqm([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 1000.0])
    assert robust.estimate == 4.5
    assert robust.low <= robust.estimate <= robust.high
    # Two values: resamples average 0.5, 0.55 or 0.6, so the 95% percentile interval spans them.
    pair = rs.iqm([0.5, 0.6])
    assert (pair.estimate, pair.low, pair.high) == pytest.approx((0.55, 0.5, 0.6))
    assert math.isnan(rs.iqm([0.5]).low)


def test_probability_of_improvement_counts_winning_pairs() -> None:
    x = np.array([0.41, 0.45, 0.39, 0.47, 0.44])
    dominating = rs.probability_of_improvement(x + 0.1, x)
    assert (dominating.estimate, dominating.low, dominating.high) == (1.0, 1.0, 1.0)
    identical = rs.probability_of_improvement(x, x)
    assert identical.estimate == 0.5 and identical.low < 0.5 < identical.high
    # 3 beats 2; 5 and 6 beat 2 and 4: 5 of the 6 pairs.
    assert rs.probability_of_improvement([3.0, 5.0, 6.0], [2.0, 4.0]).estimate == 5 / 6
    with pytest.raises(ValueError, match="worlds"):
        rs.probability_of_improvement(np.ones((3, 2)), np.ones((3, 1)))


def test_bootstraps_are_deterministic_and_leave_numpys_generator_alone() -> None:
    scores = np.array([0.41, 0.45, 0.39, 0.47, 0.44, 0.52, 0.38])
    np.random.seed(123)
    expected_draw = np.random.random()
    np.random.seed(123)
    first = rs.iqm(scores), rs.probability_of_improvement(scores, scores - 0.02)
    assert np.random.random() == expected_draw  # the caller's stream is untouched
    second = (
        rs.iqm(scores),
        rs.probability_of_improvement(scores, scores - 0.02),
    )
    assert first == second
    matrix = {"a": np.column_stack([scores, scores + 1]), "b": np.ones((4, 2))}
    one, two = rs.aggregate_estimates(matrix), rs.aggregate_estimates(matrix)
    for policy in matrix:
        assert np.array_equal(one[1][policy], two[1][policy])


def test_aggregates_and_profiles_over_worlds() -> None:
    # Two worlds: per-world means 2 and 12; all runs 1, 2, 3, 11, 12, 13.
    scores = {"p": np.array([[1.0, 11.0], [2.0, 12.0], [3.0, 13.0]])}
    points, intervals = rs.aggregate_estimates(scores, reps=200)
    median, iqm, mean = points["p"]
    assert rs.AGGREGATE_METRICS == ("Median", "IQM", "Mean")
    assert median == 7.0 and mean == 7.0
    assert iqm == pytest.approx(7.0)  # trims one run per end: 2, 3, 11, 12
    assert intervals["p"].shape == (2, 3)
    profiles, bands = rs.performance_profiles(scores, np.array([0.0, 2.5, 20.0]), reps=200)
    assert profiles["p"].tolist() == [1.0, pytest.approx(4 / 6), 0.0]
    assert bands["p"].shape == (2, 3)


def test_interval_formats_and_exclusion() -> None:
    gain = Interval(0.025, 0.01, 0.04)
    assert gain.plus_minus(100, signed=True) == "+2.50 ± 1.50"
    assert gain.bounds(100) == "2.50 [1.00, 4.00]"
    assert gain.excludes(0.0) and not gain.excludes(0.02)
    assert not Interval(0.0, -0.01, 0.01).excludes(0.0)

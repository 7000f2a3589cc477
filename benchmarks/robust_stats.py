"""rliable's robust statistics for the reports (the `[benchmarks]` extra).

- a policy's interquartile mean with a stratified-bootstrap 95% interval (`iqm`);
- two policies: rliable's probability of improvement with its bootstrap interval
  (`probability_of_improvement`);
- several worlds at once: aggregate estimates (`aggregate_estimates`) and
  performance profiles (`performance_profiles`), for rliable's plots.

Bootstrap intervals are deterministic: each call reseeds numpy's global
generator with `BOOTSTRAP_SEED` for the duration of the bootstrap (rliable
resamples with `np.random.choice`, whatever `random_state` it is given) and
restores the generator afterwards, so a report does not depend on what ran
before it and does not disturb what runs after it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np

from agents.extras import require_extra
from benchmarks.stats import Interval

require_extra("rliable", "benchmarks.robust_stats")
from rliable import library, metrics  # noqa: E402

#: Bootstrap replications (rliable's paper uses 2000 for its profiles; more buys little here).
BOOTSTRAP_REPS = 2000
#: Seed of numpy's global generator during each bootstrap.
BOOTSTRAP_SEED = 0
#: The aggregates of `aggregate_estimates`, in its output order (rliable's usual three).
AGGREGATE_METRICS = ("Median", "IQM", "Mean")


def iqm(scores: Sequence[float] | np.ndarray, reps: int = BOOTSTRAP_REPS) -> Interval:
    """The interquartile mean (rliable) with its stratified-bootstrap 95% interval.

    Args:
        scores: One score per seed, or a (seeds x worlds) matrix (resampled within each world).
        reps: Bootstrap replications.

    Returns:
        The IQM and its percentile-bootstrap interval (nan bounds for a single seed).
    """
    matrix = _runs(scores)
    point = float(metrics.aggregate_iqm(matrix))
    if matrix.shape[0] < 2:
        return Interval(point, math.nan, math.nan)
    with _seeded():
        _, intervals = library.get_interval_estimates(
            {"scores": matrix}, _vector(metrics.aggregate_iqm), reps=reps
        )
    low, high = intervals["scores"][:, 0]
    return Interval(point, float(low), float(high))


def probability_of_improvement(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray, reps: int = BOOTSTRAP_REPS
) -> Interval:
    """The probability of improvement P(X > Y) (rliable) with its bootstrap 95% interval.

    The probability that a run of X scores above a run of Y (ties count half;
    Mann-Whitney U over all pairs of runs), averaged over worlds.

    Args:
        x: X's scores: one per seed, or a (seeds x worlds) matrix.
        y: Y's scores, shaped like `x` (the seed counts may differ).
        reps: Bootstrap replications (each side resampled independently).

    Returns:
        The probability and its interval (nan bounds when either side has one seed).

    Raises:
        ValueError: `x` and `y` cover different numbers of worlds.
    """
    first, second = _runs(x), _runs(y)
    if first.shape[1] != second.shape[1]:
        raise ValueError(f"scores of {first.shape[1]} and {second.shape[1]} worlds")
    point = float(metrics.probability_of_improvement(first, second))
    if min(first.shape[0], second.shape[0]) < 2:
        return Interval(point, math.nan, math.nan)
    with _seeded():
        _, intervals = library.get_interval_estimates(
            {"pair": [first, second]}, _vector(metrics.probability_of_improvement), reps=reps
        )
    low, high = intervals["pair"][:, 0]
    return Interval(point, float(low), float(high))


def aggregate_estimates(
    scores: Mapping[str, np.ndarray], reps: int = BOOTSTRAP_REPS
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The median, IQM and mean over worlds (rliable), with stratified-bootstrap 95% intervals.

    Args:
        scores: By policy, a (seeds x worlds) score matrix.
        reps: Bootstrap replications.

    Returns:
        By policy, the `AGGREGATE_METRICS` point estimates (shape 3), and their
        intervals (shape 2 x 3: lower bounds, upper bounds), as
        `rliable.plot_utils.plot_interval_estimates` takes them.
    """

    def aggregates(matrix: np.ndarray) -> np.ndarray:
        return np.array(
            [
                metrics.aggregate_median(matrix),
                metrics.aggregate_iqm(matrix),
                metrics.aggregate_mean(matrix),
            ]
        )

    with _seeded():
        return library.get_interval_estimates(dict(scores), aggregates, reps=reps)


def performance_profiles(
    scores: Mapping[str, np.ndarray], taus: np.ndarray, reps: int = BOOTSTRAP_REPS
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Performance profiles (rliable): the fraction of runs scoring above each threshold.

    Args:
        scores: By policy, a (seeds x worlds) score matrix.
        taus: The thresholds.
        reps: Bootstrap replications.

    Returns:
        By policy, the profile (one value per threshold) and its 95% interval
        (2 x thresholds), as `rliable.plot_utils.plot_performance_profiles` takes them.
    """
    with _seeded():
        return library.create_performance_profile(dict(scores), taus, reps=reps)


def _runs(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """`scores` as rliable's (runs x tasks) matrix: a flat sequence is one task."""
    matrix = np.asarray(scores, dtype=float)
    if matrix.ndim == 1:
        matrix = matrix[:, np.newaxis]
    if matrix.ndim != 2 or matrix.shape[0] == 0:
        raise ValueError(f"expected one score per seed (and world), got shape {matrix.shape}")
    return matrix


def _vector(metric: Callable[..., float]) -> Callable[..., np.ndarray]:
    """`metric` returning a 1-element array, the shape rliable's bootstrap expects."""
    return lambda *matrices: np.array([metric(*matrices)])


@contextmanager
def _seeded() -> Iterator[None]:
    """Numpy's global generator seeded with `BOOTSTRAP_SEED`, restored on exit.

    rliable's stratified bootstraps draw their indices with `np.random.choice`
    and ignore the `random_state` they accept, so the global generator is the
    only handle on their randomness.
    """
    state = np.random.get_state()
    np.random.seed(BOOTSTRAP_SEED)
    try:
        yield
    finally:
        np.random.set_state(state)

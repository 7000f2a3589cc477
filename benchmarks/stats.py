"""The statistics every report uses: means and paired differences with t intervals (scipy).

One place decides how a report summarises scores over evaluation seeds, so
that every table in `benchmarks/` reads the same way:

- a policy's mean with its 95% Student-t interval (`t_interval`);
- two policies on the same seeds: the paired difference with its 95% paired-t
  interval (`paired_difference`).

rliable's robust aggregates (interquartile mean, probability of improvement,
profiles) are `benchmarks.robust_stats` (the `[benchmarks]` extra).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats

#: Coverage of every interval in the reports.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with the bounds of its confidence interval (nan bounds: none).

    Attributes:
        estimate: The point estimate.
        low: Lower bound of the interval.
        high: Upper bound of the interval.
    """

    estimate: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        """Half the interval's width (the ± of a symmetric interval; nan when there is none)."""
        return (self.high - self.low) / 2

    def excludes(self, value: float = 0.0) -> bool:
        """Whether `value` lies outside the interval (False when there is no interval)."""
        return self.low > value or self.high < value

    def plus_minus(self, scale: float = 1.0, digits: int = 2, *, signed: bool = False) -> str:
        """`estimate ± half-width`, both times `scale`; the estimate alone without an interval."""
        text = f"{scale * self.estimate:{'+' if signed else ''}.{digits}f}"
        if math.isnan(self.half_width):
            return text
        return f"{text} ± {scale * self.half_width:.{digits}f}"

    def bounds(self, scale: float = 1.0, digits: int = 2) -> str:
        """`estimate [low, high]`, all times `scale`; the estimate alone without an interval."""
        text = f"{scale * self.estimate:.{digits}f}"
        if math.isnan(self.low):
            return text
        return f"{text} [{scale * self.low:.{digits}f}, {scale * self.high:.{digits}f}]"


@dataclass(frozen=True)
class PairedDifference:
    """One policy minus another on the evaluation seeds both ran.

    Attributes:
        seeds: The shared seeds, ascending.
        difference: Mean of the per-seed differences with its 95% paired-t interval.
    """

    seeds: tuple[int, ...]
    difference: Interval


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The mean of `values` with its Student-t confidence interval.

    Args:
        values: One score per evaluation seed.
        confidence: Coverage of the interval.

    Returns:
        The mean and its interval (nan bounds for a single value).

    Raises:
        ValueError: `values` is empty.
    """
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("a mean needs at least one value")
    mean = float(data.mean())
    if data.size < 2:
        return Interval(mean, math.nan, math.nan)
    quantile = scipy.stats.t.ppf((1 + confidence) / 2, df=data.size - 1)
    half = float(quantile * data.std(ddof=1) / math.sqrt(data.size))
    return Interval(mean, mean - half, mean + half)


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> PairedDifference | None:
    """`a - b` over the seeds both ran, with the paired-t interval of the mean difference.

    Every policy of a board runs on the same evaluation seeds, so pairing by seed
    removes the seed-to-seed spread that two separate intervals carry.

    Args:
        a: Score by evaluation seed.
        b: Score by evaluation seed of the reference.

    Returns:
        The difference, or None when fewer than two seeds are shared (no interval).
    """
    seeds = tuple(sorted(set(a) & set(b)))
    if len(seeds) < 2:
        return None
    return PairedDifference(seeds, t_interval([a[s] - b[s] for s in seeds]))

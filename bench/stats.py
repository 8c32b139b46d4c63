"""The one percentile definition every bench series reports its latencies with."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank `p`th percentile of `values` (0 < p <= 100).

    Nearest rank (the smallest value with at least p% of the values at or below it) is always
    one of the measured values, never an interpolation between two, so a p99 is a latency some
    request really had. Raises ValueError when `values` is empty: a figure of nothing is a bug
    in the series, not a zero.
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < p <= 100:
        raise ValueError(f"percentile {p} is outside (0, 100]")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

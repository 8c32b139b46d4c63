"""bench/stats.py: the nearest-rank percentile the bench series share."""

from __future__ import annotations

import pytest

from bench.stats import percentile


def test_nearest_rank_is_a_measured_value() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100, shuffled below
    shuffled = values[50:] + values[:50]
    assert percentile(shuffled, 50) == 50.0
    assert percentile(shuffled, 99) == 99.0
    assert percentile(shuffled, 100) == 100.0
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0  # not the interpolated 2.5


def test_small_samples() -> None:
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 9.0], 99) == 9.0
    assert percentile([1.0, 9.0], 50) == 1.0


@pytest.mark.parametrize("p", [0, -1, 100.5])
def test_out_of_range_percentiles_are_refused(p: float) -> None:
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], p)


def test_no_values_is_an_error() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)

"""The testbed's acceptance figures, computed from the runs (pure functions).

* ``agreement``: how well Betts-Miller (low fidelity) agrees with Emanuel (high fidelity) on
  the historical high-fidelity states: Pearson correlations of the heating (K s-1) and of the
  moistening (kg kg-1 s-1) over all (time, column, level) samples. ``convecting_only=True``
  restricts the samples to the columns where Emanuel rains at that time (an extra figure; the
  acceptance figure is over all samples).
* ``out_of_range``: per level, the fraction of +4K states whose temperature lies outside the
  range (minimum to maximum over all times and columns) of the historical states at that
  level: how far a warmer climate leaves the training distribution.
"""

from __future__ import annotations

import math

import numpy as np

from paramlib.testbed.runs import SchemeOutput


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two arrays over all their elements; NaN where either is constant."""
    x = np.ravel(a) - np.mean(a)
    y = np.ravel(b) - np.mean(b)
    norm = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y)))
    return float(np.dot(x, y)) / norm if norm > 0 else math.nan


def agreement(
    low: SchemeOutput, high: SchemeOutput, convecting_only: bool = False
) -> dict[str, float]:
    """``{"heating", "moistening"}`` correlations of ``low`` and ``high`` on the same states."""
    mask = high.precip > 0 if convecting_only else np.ones(high.precip.shape, dtype=bool)
    return {
        "heating": pearson(low.dtdt[mask], high.dtdt[mask]),
        "moistening": pearson(low.dqdt[mask], high.dqdt[mask]),
    }


def out_of_range(reference: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per level, the fraction of ``test`` samples outside the ``reference`` range; both
    ``(..., nlev)`` with the samples on the leading axes."""
    levels = reference.shape[-1]
    low = reference.reshape(-1, levels).min(axis=0)
    high = reference.reshape(-1, levels).max(axis=0)
    flat = test.reshape(-1, levels)
    return ((flat < low) | (flat > high)).mean(axis=0)


def by_level(values: np.ndarray, lev: np.ndarray, digits: int = 1) -> dict[str, float]:
    """``{"<lev>": value}`` in increasing ``lev`` (hPa or eta: from top to surface, as the
    column datasets order ``lev``), the level written with ``digits`` decimals."""
    return {f"{x:.{digits}f}": float(v) for x, v in sorted(zip(lev, values, strict=True))}


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN: an undefined figure is written as null."""
    return value if math.isfinite(value) else None

"""A per-column out-of-distribution score carried inside the model file (`OodScore`), its
statistics and its calibration: pure torch / numpy, no I/O (`paramlib.ood` runs it on stores).

Three components, each from what the network works on — the normalised input features x it
sees and its normalised outputs z (members, columns, features):

- ``mahalanobis``  sqrt(mean_k w_k^2), w = (x - mu) V / sqrt(lambda): the whitened distance
  from the training inputs' mean mu, with V, lambda the eigenvectors and eigenvalues of their
  covariance; eigenvalues below ``eig_floor`` times their mean are raised to it, so a direction
  the training data hardly spans (adjacent levels' temperatures move together) does not turn
  rounding into a distance. About 1 for a training column.
- ``beyond_range``  the fraction of features outside the training [min, max] by more than
  ``tolerance`` (in the features' normalised units, training standard deviations).
- ``spread``  sqrt(mean_j var_m z_mj): the members' standard deviation (n - 1) of the
  normalised outputs, as an RMS over output features; 0 for a single network.

The score is max_c (component_c / scale_c) over the components chosen (`DEFAULT_COMPONENTS`
unless told): the scales are chosen on historical validation data
(`calibrate_scales`) so that a fraction ``rate`` of its columns score above 1, the threshold of
every host (fallback where ood_score > 1). Equal footing for the components: each is first
divided by its own (1 - rate) quantile on validation (floored, `COMPONENT_FLOORS`), then all by
the (1 - rate) quantile of their maximum. NaN inputs give a NaN score: a host treats that as
out of distribution.
"""

# (no `from __future__ import annotations`: TorchScript reads the Final annotation)
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import torch
from torch import Tensor, nn

from paramlib.ood_settings import (
    COMPONENTS,
    DEFAULT_EIG_FLOOR,
)

SPREAD = COMPONENTS.index("spread")


@dataclass(frozen=True)
class InputStatistics:
    """What `OodScore` needs from the training inputs (normalised features)."""

    mean: np.ndarray  # (n,)
    whiten: np.ndarray  # (n, n): V / sqrt(floored lambda)
    low: np.ndarray  # (n,) training minimum
    high: np.ndarray  # (n,) training maximum
    samples: int
    floored: int  # eigenvalues raised to the floor


class Moments:
    """Running sums of feature chunks (float64): count, sum, outer products, min, max."""

    def __init__(self) -> None:
        self.n = 0
        self.total: np.ndarray | None = None
        self.outer: np.ndarray | None = None
        self.low: np.ndarray | None = None
        self.high: np.ndarray | None = None

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        if self.total is None or self.outer is None or self.low is None or self.high is None:
            self.total, self.outer = x.sum(0), x.T @ x
            self.low, self.high = x.min(0), x.max(0)
        else:
            self.total, self.outer = self.total + x.sum(0), self.outer + x.T @ x
            self.low, self.high = np.minimum(self.low, x.min(0)), np.maximum(self.high, x.max(0))
        self.n += len(x)

    def statistics(self, eig_floor: float = DEFAULT_EIG_FLOOR) -> InputStatistics:
        if self.n < 2 or self.total is None or self.outer is None:
            raise ValueError(f"input statistics need at least 2 samples, got {self.n}")
        if self.low is None or self.high is None:
            raise ValueError("input statistics: no samples added")
        mean = self.total / self.n
        cov = (self.outer - self.n * np.outer(mean, mean)) / (self.n - 1)
        eigenvalues, vectors = np.linalg.eigh(cov)
        floor = eig_floor * max(float(eigenvalues.mean()), np.finfo(np.float64).tiny)
        floored = np.maximum(eigenvalues, floor)
        return InputStatistics(
            mean=mean,
            whiten=vectors / np.sqrt(floored),
            low=self.low,
            high=self.high,
            samples=self.n,
            floored=int((eigenvalues < floor).sum()),
        )


class OodScore(nn.Module):
    """The score of the module docstring, scriptable: ``forward(x, z)`` -> (ncol, 1)."""

    tolerance: Final[float]

    def __init__(self, stats: InputStatistics, tolerance: float, scales: np.ndarray) -> None:
        super().__init__()
        self.tolerance = float(tolerance)

        def buffer(values: np.ndarray) -> Tensor:
            return torch.as_tensor(np.asarray(values), dtype=torch.float32)

        self.register_buffer("mean", buffer(stats.mean))
        self.register_buffer("whiten", buffer(stats.whiten))
        self.register_buffer("low", buffer(stats.low))
        self.register_buffer("high", buffer(stats.high))
        self.register_buffer("scales", buffer(scales))

    def components(self, x: Tensor, z: Tensor) -> Tensor:
        """(ncol, 3): mahalanobis, beyond_range, spread of features x (ncol, n) and
        normalised outputs z (members, ncol, n_out)."""
        whitened = (x - self.mean) @ self.whiten
        distance = whitened.square().mean(dim=1).sqrt()
        outside = (x < self.low - self.tolerance) | (x > self.high + self.tolerance)
        beyond = outside.float().mean(dim=1)
        if z.shape[0] > 1:
            spread = z.var(dim=0).mean(dim=1).sqrt()
        else:
            spread = torch.zeros_like(distance)
        return torch.stack([distance, beyond, spread], dim=1)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        # A component without a scale (spread of a single network) has scale inf: 0 here.
        return (self.components(x, z) / self.scales).amax(dim=1, keepdim=True)


def component_floors(n_features: int) -> np.ndarray:
    """The smallest scale of each component: one feature beyond the range counts fully when
    (as usual) almost no validation column has one; tiny for the continuous ones."""
    return np.array([1.0e-6, 1.0 / n_features, 1.0e-9])


def calibrate_scales(
    components: np.ndarray, rate: float, n_features: int, used: Sequence[str] = COMPONENTS
) -> np.ndarray:
    """Scales (3,) such that max_c(components_c / scale_c) > 1 for a fraction of at most
    `rate` (exactly floor(rate N) / N without ties) of the N validation columns (rows of
    `components`); inf (left out of the score) for components not in `used` and for the
    spread of a single network (0 everywhere). A beyond_range of 0 everywhere keeps its floor:
    no validation column beyond the range, but a warmer one may be."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate: expected a fraction in (0, 1), got {rate}")
    values = np.asarray(components, np.float64)
    if values.ndim != 2 or values.shape[1] != len(COMPONENTS) or len(values) < 2:
        raise ValueError(f"components: expected (N >= 2, {len(COMPONENTS)}), got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("components: validation columns with NaN/Inf inputs or outputs")
    quantile = np.quantile(values, 1.0 - rate, axis=0, method="higher")
    scales = np.maximum(quantile, component_floors(n_features))
    unknown = sorted(set(used) - set(COMPONENTS))
    if unknown or not used:
        raise ValueError(f"components: expected some of {', '.join(COMPONENTS)}, got {used}")
    scales[[c not in used for c in COMPONENTS]] = np.inf
    if not values[:, SPREAD].any():
        scales[SPREAD] = np.inf
    combined = np.sort((values / scales).max(axis=1))
    allowed = int(np.floor(rate * len(values)))
    return scales * combined[len(values) - allowed - 1]


def roc_auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `score` detecting `positive` (Mann-Whitney, ties count
    half); NaN when either class is empty."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(score, np.float64))
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))

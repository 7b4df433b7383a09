"""Verification scores for column parameterizations: pure, vectorized numpy.

Every score is computed in two steps so that a store can be streamed chunk by chunk: a
``*_sums`` function reduces one chunk to sufficient statistics (float64 sums over its samples,
per level), the sums of chunks add (`add`), and a ``*_scores`` function turns the totals into
scores. Targets and deterministic predictions are (sample, lev); ensembles (member, sample,
lev). Per level, with e = prediction - target and n samples:

- R^2 = 1 - sum e^2 / sum (y - mean y)^2, NaN where the target does not vary (the sum of
  squares below 1e-12 of sum y^2: zero or rounding); for a whole profile `r2_all_levels`,
  1 - sum_k SSE_k / sum_k SST_k (variance-weighted mean of the levels' R^2); MAE = sum |e| / n;
  RMSE = sqrt(sum e^2 / n); bias = sum e / n. An ensemble is scored by its mean here.
- CRPS, the *fair* ensemble estimator (Ferro 2014): mean_i |x_i - y| minus
  sum_ij |x_i - x_j| / (2 M (M - 1)); unbiased for the CRPS of the distribution the M
  members are drawn from, so ensembles of different sizes compare (the standard estimator,
  2 M^2 in the denominator, penalises small ensembles). It needs M >= 2; for one member the
  CRPS is the MAE.
- spread = sqrt(mean over samples of the members' variance, ddof 1); spread-skill ratio =
  sqrt((M + 1) / M) spread / RMSE of the mean, 1 for a calibrated M-member ensemble
  (Fortin et al. 2014); spread-skill correlation: Pearson's, over samples, between the
  members' standard deviation and |error of the mean|.
- coverage of the central 50 % and 90 % prediction intervals: the fraction of targets inside
  mean +- f x spread, f = Student's t quantile (M - 1 degrees of freedom) x sqrt(1 + 1 / M)
  (`interval_factor`), the interval that holds a new draw from M normal members with the
  stated probability for any M; `paramlib calibrate` uses the same. The members' own
  empirical 0.05-0.95 quantiles are far too narrow for small M: a perfectly calibrated
  8-member ensemble covers only 0.72 of its draws with them (0.90 with this interval).
- rank histogram: the number of members below the target (ties broken at random), M + 1
  bins, pooled over levels, as frequencies; flat (1 / (M + 1) each) when calibrated.
- trigger: accuracy, precision, recall and F1 of a yes/no prediction per column. For the MSKF
  emulators a column triggers when its NCA > 0 or any per-level output is non-zero, for
  targets and predictions alike (the rule of `BiLSTMEmulator.trigger`, and what the exported
  model's post-processing leaves of its own trigger; `engine`); NAME_triggered is NAME's
  per-level scores on the columns whose target triggered.
- out of distribution (`ood_sums`), per input field and band of levels, for a model that
  carries the training range (its metadata's valid_range, min and max per level): the
  fraction of columns with any level of the band outside [min, max]; per such column its
  excess, the largest over the band's levels of (distance beyond the range) / sigma, sigma the
  level's training std (the normalisation attrs of the store evaluated); the median (from a
  histogram of `OOD_BINS_PER_DECADE` log bins per decade: within one bin, 6 %) and the
  largest excess of those columns. A level whose training std is 0 counts in the fraction,
  not in the excess. Bands: `level_bands`.

Baselines (persistence, climatology) are defined in `paramlib.evaluate.baselines`; they are
scored with these definitions like any model.

Energy units (`energy_factor`, `layer_mass_*`): heating (K s-1) x cp and moistening
(kg kg-1 s-1) x Lv, times the layer's mass dp/g (kg m-2) where it is known, give each level's
contribution in W m-2 (ClimSim's convention, whose reference scores are in W m-2); their sum
over levels is the column integral. Precipitation (mm s-1 = kg m-2 s-1 of water) x Lv is
already a flux in W m-2, so it is not weighted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from paramlib.constants import CP, LV, RHO_WATER

Sums = dict[str, np.ndarray]
NO_VARIANCE = 1e-12  # relative: below this the target is constant and R^2 undefined
OOD_BINS_PER_DECADE = 40  # excess histogram: bin edges 6 % apart
# Excess histogram edges in sigma, 1e-4 to 1e8: smaller and larger excesses go to the end bins.
OOD_EDGES = np.logspace(-4.0, 8.0, 12 * OOD_BINS_PER_DECADE + 1)

# units -> (factor, weighted by layer mass): the conversions to energy units.
ENERGY_FACTORS: dict[str, tuple[float, bool]] = {
    "K s-1": (CP, True),
    "kg kg-1 s-1": (LV, True),
    "mm s-1": (LV * RHO_WATER / 1000.0, False),  # mm s-1 x 1 kg m-2 per mm = kg m-2 s-1
}


def energy_factor(units: str) -> tuple[float, bool]:
    """(factor to energy units, whether each level is weighted by its layer mass); fields in
    other units keep them (factor 1, unweighted)."""
    return ENERGY_FACTORS.get(units, (1.0, False))


def energy_units(units: str, with_mass: bool) -> str:
    """The units of a field after `energy_factor`, and the layer mass when `with_mass` (the
    store gives it)."""
    if units not in ENERGY_FACTORS:
        return units
    return "W kg-1" if ENERGY_FACTORS[units][1] and not with_mass else "W m-2"


def sigma_thickness(sigma: np.ndarray) -> np.ndarray:
    """Layer thickness in sigma of mid-levels (surface first) that are the means of their
    interfaces, the lowest interface at sigma = 1, as CAM and the testbed's column model define
    them: exact, unlike halfway points between mid-levels (up to 9 % off in thickness on the
    testbed's levels). ValueError where no such interfaces exist."""
    interfaces = np.empty(len(sigma) + 1)
    interfaces[0] = 1.0
    for k, mid in enumerate(sigma):
        interfaces[k + 1] = 2.0 * mid - interfaces[k]
    if not (np.all(np.diff(interfaces) < 0) and interfaces[-1] >= 0):
        raise ValueError(f"sigma levels {np.round(sigma, 4).tolist()} are not interface means")
    return -np.diff(interfaces)


def add(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Nested sums added key by key; a key in one alone is kept (a run absent from a chunk);
    keys named max_* take the larger value (NaN ignored) instead of the sum."""
    out = dict(a)
    for key, value in b.items():
        if key not in out:
            out[key] = value
        elif isinstance(value, Mapping):
            out[key] = add(out[key], value)
        elif key.startswith("max_"):
            out[key] = np.fmax(out[key], value)
        else:
            out[key] = out[key] + value
    return out


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def deterministic_sums(pred: np.ndarray, true: np.ndarray) -> Sums:
    """Sums over samples, per level, of (sample, lev) predictions and targets."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    error = pred - true
    return {
        "n": np.full(true.shape[1:], float(true.shape[0])),
        "sum_y": true.sum(0),
        "sum_y2": np.square(true).sum(0),
        "sum_e": error.sum(0),
        "sum_abs_e": np.abs(error).sum(0),
        "sum_e2": np.square(error).sum(0),
    }


def deterministic_scores(sums: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """R^2, MAE, RMSE, bias, the target's mean and the samples, per level."""
    n = sums["n"]
    total = sums["sum_y2"] - _divide(np.square(sums["sum_y"]), n)
    varies = total > NO_VARIANCE * sums["sum_y2"]
    return {
        "r2": np.where(varies, 1.0 - _divide(sums["sum_e2"], np.where(varies, total, 1.0)), np.nan),
        "mae": _divide(sums["sum_abs_e"], n),
        "rmse": np.sqrt(_divide(sums["sum_e2"], n)),
        "bias": _divide(sums["sum_e"], n),
        "mean": _divide(sums["sum_y"], n),
        "n": n,
    }


def r2_all_levels(sums: Mapping[str, np.ndarray], levels: slice = slice(None)) -> float:
    """One R^2 for a profile: 1 - sum_k SSE_k / sum_k SST_k over the levels where the target
    varies, i.e. the per-level R^2 averaged with the levels' target variances as weights (a
    near-constant level cannot swamp it, as it swamps a plain mean of per-level R^2); over
    `levels` only when given (a band of levels)."""
    sums = {k: np.asarray(v)[levels] for k, v in sums.items()}
    n = sums["n"]
    total = sums["sum_y2"] - _divide(np.square(sums["sum_y"]), n)
    varies = total > NO_VARIANCE * sums["sum_y2"]
    if not varies.any():
        return float("nan")
    return float(1.0 - sums["sum_e2"][varies].sum() / total[varies].sum())


def crps_ensemble(members: np.ndarray, true: np.ndarray) -> np.ndarray:
    """The fair CRPS (module docstring) of each target: members (M, ...), true (...)."""
    members = np.asarray(members, np.float64)
    count = members.shape[0]
    if count < 2:
        raise ValueError("the fair CRPS needs at least 2 members; for one it is the MAE")
    skill = np.abs(members - true).mean(0)
    # sum_ij |x_i - x_j| = 2 sum_k (2k - M - 1) x_(k) over the sorted members, k = 1 .. M.
    weights = 2 * np.arange(1, count + 1) - count - 1
    pairs = 2.0 * np.tensordot(weights, np.sort(members, axis=0), axes=1)
    return skill - pairs / (2.0 * count * (count - 1))


def interval_factor(members: int, level: float) -> float:
    """f such that mean +- f x spread (the standard deviation of `members` draws, ddof 1) is
    a central `level` prediction interval for one more draw from their normal distribution:
    Student's t quantile with M - 1 degrees of freedom x sqrt(1 + 1 / M); NaN below 2 members."""
    from scipy.stats import t

    if members < 2:
        return float("nan")
    return float(t.ppf(0.5 + level / 2.0, members - 1) * np.sqrt(1.0 + 1.0 / members))


def ensemble_sums(
    members: np.ndarray, true: np.ndarray, rng: np.random.Generator | None = None
) -> Sums:
    """Sums over samples, per level, for the ensemble scores: members (M, sample, lev), true
    (sample, lev); `rng` breaks rank ties (default: seed 0, reproducible)."""
    members, true = np.asarray(members, np.float64), np.asarray(true, np.float64)
    count = members.shape[0]
    rng = rng or np.random.default_rng(0)
    spread = members.std(0, ddof=1)
    miss = np.abs(members.mean(0) - true)
    below = (members < true).sum(0)
    ties = (members == true).sum(0)
    rank = below + np.floor(rng.random(true.shape) * (ties + 1)).astype(np.int64)
    return {
        "n": np.full(true.shape[1:], float(true.shape[0])),
        "sum_crps": crps_ensemble(members, true).sum(0),
        "sum_var": np.square(spread).sum(0),
        "sum_e2": np.square(miss).sum(0),
        "sum_s": spread.sum(0),
        "sum_s2": np.square(spread).sum(0),
        "sum_a": miss.sum(0),
        "sum_a2": np.square(miss).sum(0),
        "sum_sa": (spread * miss).sum(0),
        "in50": (miss <= interval_factor(count, 0.5) * spread).sum(0).astype(np.float64),
        "in90": (miss <= interval_factor(count, 0.9) * spread).sum(0).astype(np.float64),
        "rank": np.bincount(rank.ravel(), minlength=count + 1).astype(np.float64),
    }


def ensemble_scores(sums: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CRPS, spread, spread-skill ratio and correlation, coverage per level; rank histogram."""
    n = sums["n"]
    count = len(sums["rank"]) - 1
    spread = np.sqrt(_divide(sums["sum_var"], n))
    rmse = np.sqrt(_divide(sums["sum_e2"], n))
    covariance = n * sums["sum_sa"] - sums["sum_s"] * sums["sum_a"]
    variances = (n * sums["sum_s2"] - np.square(sums["sum_s"])) * (
        n * sums["sum_a2"] - np.square(sums["sum_a"])
    )
    return {
        "crps": _divide(sums["sum_crps"], n),
        "spread": spread,
        "spread_skill_ratio": np.sqrt((count + 1) / count) * _divide(spread, rmse),
        "spread_skill_corr": _divide(covariance, np.sqrt(np.maximum(variances, 0.0))),
        "coverage50": _divide(sums["in50"], n),
        "coverage90": _divide(sums["in90"], n),
        "rank_histogram": sums["rank"] / sums["rank"].sum(),
    }


def trigger_sums(pred: np.ndarray, true: np.ndarray) -> Sums:
    """Confusion counts of boolean (sample,) predictions against boolean targets."""
    pred, true = np.asarray(pred, bool), np.asarray(true, bool)
    return {
        name: np.float64(np.sum(a & b))
        for name, a, b in (
            ("tp", pred, true),
            ("fp", pred, ~true),
            ("fn", ~pred, true),
            ("tn", ~pred, ~true),
        )
    }


def trigger_scores(sums: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Accuracy, precision, recall and F1 (NaN where undefined), and the counts."""
    tp, fp, fn, tn = (np.asarray(sums[k]) for k in ("tp", "fp", "fn", "tn"))
    return {
        "accuracy": _divide(tp + tn, tp + fp + fn + tn),
        "precision": _divide(tp, tp + fp),
        "recall": _divide(tp, tp + fn),
        "f1": _divide(2 * tp, 2 * tp + fp + fn),
        "triggered": tp + fn,
        "n": tp + fp + fn + tn,
    }


def level_bands(nlev: int, bands: int) -> list[tuple[int, int]]:
    """[start, stop) level indices of `bands` bands of near-equal size, surface first (levels
    1-10, 11-20, 21-30, 31-40 for 40 levels and 4 bands); one band per level when fewer."""
    if bands < 1:
        raise ValueError(f"level bands: expected at least 1, got {bands}")
    split = np.array_split(np.arange(nlev), min(bands, nlev))
    return [(int(part[0]), int(part[-1]) + 1) for part in split]


def ood_sums(
    values: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    sigma: np.ndarray,
    bands: list[tuple[int, int]],
) -> Sums:
    """Counts per band (leading axis) of (sample, lev) `values` against the per-level training
    range [low, high] and std `sigma` (module docstring): n, outside, the excess histogram
    over `OOD_EDGES` and the largest excess."""
    values = np.asarray(values, np.float64)
    distance = np.maximum(np.maximum(low - values, values - high), 0.0)
    outside = distance > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        excess = np.where(outside & (sigma > 0), distance / np.where(sigma > 0, sigma, 1.0), np.nan)
    count, hist, largest = [], [], []
    for start, stop in bands:
        columns = outside[:, start:stop].any(axis=1)
        worst = np.fmax.reduce(excess[:, start:stop], axis=1)
        worst = worst[np.isfinite(worst)]
        bins = np.clip(np.searchsorted(OOD_EDGES, worst, side="right") - 1, 0, len(OOD_EDGES) - 2)
        count.append(columns.sum())
        hist.append(np.bincount(bins, minlength=len(OOD_EDGES) - 1))
        largest.append(worst.max() if worst.size else np.nan)
    return {
        "n": np.full(len(bands), float(len(values))),
        "outside": np.asarray(count, np.float64),
        "excess_hist": np.asarray(hist, np.float64),
        "max_excess": np.asarray(largest, np.float64),
    }


def _hist_median(hist: np.ndarray) -> float:
    """The median of the values a histogram over `OOD_EDGES` counts (numpy's: the mean of the
    two middle ones for an even count), each value placed log-linearly inside its bin by its
    rank there: within one bin (6 %) of the exact value."""
    total = int(hist.sum())
    if total == 0:
        return float("nan")
    cumulative = np.cumsum(hist)

    def value(rank: int) -> float:  # the rank-th smallest (0-based)
        k = int(np.searchsorted(cumulative, rank, side="right"))
        position = (rank - (cumulative[k] - hist[k]) + 0.5) / hist[k]
        low, high = np.log10(OOD_EDGES[k]), np.log10(OOD_EDGES[k + 1])
        return float(10.0 ** (low + position * (high - low)))

    return 0.5 * (value((total - 1) // 2) + value(total // 2))


def ood_scores(sums: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per band: n, outside, fraction outside, median and largest excess in sigma."""
    return {
        "n": sums["n"],
        "outside": sums["outside"],
        "fraction": _divide(sums["outside"], sums["n"]),
        # The bin's placement can overshoot the exact largest excess (one column: its value).
        "median_sigma": np.fmin(
            np.array([_hist_median(h) for h in sums["excess_hist"]]), sums["max_excess"]
        ),
        "max_sigma": sums["max_excess"],
    }

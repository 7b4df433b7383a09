"""Score models on a store's splits, streamed: each chunk of samples is read, run through
every model and reduced to sufficient statistics (`paramlib.evaluate.metrics`), which add up;
memory is set by the chunk size, not by the store's. The chunks are one dask graph (reads,
model forward, sums, a tree of additions) computed by dask's threaded scheduler, with a
progress bar.

What is scored, per model, split, WRF run (store coordinate ``run``, names in the root attrs
``runs``) and all runs together, for every model output the store holds as a variable:

- NAME: per level, in energy units (`metrics.energy_factor`; per level W m-2 when the store
  gives the layer mass, `sources.layer_mass`): deterministic scores of the prediction (the
  ensemble mean), and the ensemble scores when the model returns its members;
- NAME_column: for heating and moistening with a layer mass, the column integral
  sum_k c x_k dp_k / g (W m-2) over the levels the model predicts, scored the same way;
- for the Bi-LSTM MSKF emulators and the baselines: ``trigger``, the convection trigger, and
  NAME_triggered, the per-level scores on the columns that truly triggered.

Per model that carries a training range, split and input field (all runs together): the
out-of-distribution counts per level band. Every definition: `paramlib.evaluate.metrics`.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr
import zarr
from dask.diagnostics import ProgressBar

from paramlib.evaluate.metrics import (
    add,
    deterministic_scores,
    deterministic_sums,
    energy_factor,
    energy_units,
    ensemble_scores,
    ensemble_sums,
    level_bands,
    ood_scores,
    ood_sums,
    r2_all_levels,
    trigger_scores,
    trigger_sums,
)
from paramlib.evaluate.sources import Predictor, layer_mass, levels, open_split
from paramlib.models.bilstm import BiLSTMConfig

MASS = "__layer_mass__"  # the layer mass among a chunk's fields
RUN = "run"
ALL = "all"
NCA = BiLSTMConfig.nca  # the MSKF emulators' convective time field (the config's default)
OOD_BANDS = 4  # level bands of the out-of-distribution report
# R^2 per third of the levels, surface first: on the testbed's 26 levels 990-727, 683-313 and
# 271-50 hPa, the lower, middle and upper troposphere (the top three levels stratospheric).
R2_BANDS = 3
# Per model label and input field: the training range's (low, high, sigma) per level and bands.
OODSpecs = dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]]]


def triggered(values: Mapping[str, np.ndarray], profiles: Sequence[str]) -> np.ndarray:
    """(sample,) bool: NCA > 0 or any per-level field non-zero (the trigger rule, `metrics`)."""
    active = np.asarray(values[NCA]).reshape(-1) > 0
    for name in profiles:
        active |= (np.asarray(values[name]) != 0).any(axis=-1)
    return active


def _field_sums(
    pred: np.ndarray, true: np.ndarray, ensemble: bool, rng: np.random.Generator
) -> dict:
    if not ensemble:
        return {"deterministic": deterministic_sums(pred, true)}
    return {
        "deterministic": deterministic_sums(pred.mean(0), true),
        "ensemble": ensemble_sums(pred, true, rng),
    }


def _model_sums(
    model: Predictor,
    preds: Mapping[str, np.ndarray],
    fields: Mapping[str, np.ndarray],
    units: Mapping[str, str],
    rows: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, dict]:
    """Sums of one model on the chunk's `rows` (module docstring)."""
    ensemble = model.members > 1
    mass = fields[MASS][rows] if MASS in fields else None
    sums: dict[str, dict] = {}
    scaled: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # energy units, for the trigger
    raw_true: dict[str, np.ndarray] = {}
    raw_pred: dict[str, np.ndarray] = {}
    for spec in model.outputs:
        name, nlev = spec["name"], spec["nlev"]
        if name not in fields:
            continue
        true = levels(fields[name][rows], nlev).astype(np.float64)
        pred = preds[name][..., rows, :].astype(np.float64)
        factor, by_mass = energy_factor(units[name])
        scale = factor * (mass[:, :nlev] if by_mass and mass is not None else 1.0)
        true_e, pred_e = true * scale, pred * scale
        sums[name] = _field_sums(pred_e, true_e, ensemble, rng)
        if by_mass and mass is not None and nlev > 1:
            column = (pred_e.sum(-1, keepdims=True), true_e.sum(-1, keepdims=True))
            sums[name + "_column"] = _field_sums(*column, ensemble, rng)
        scaled[name] = (pred_e, true_e)
        raw_true[name], raw_pred[name] = true, pred
    if model.is_mskf and NCA in raw_true:
        profiles = [spec["name"] for spec in model.outputs if spec["nlev"] > 1]
        profiles = [name for name in profiles if name in raw_true]
        truth = triggered(raw_true, profiles)
        sums["trigger"] = {"trigger": trigger_sums(triggered(raw_pred, profiles), truth)}
        for name in profiles:
            pred_e, true_e = scaled[name]
            sums[name + "_triggered"] = _field_sums(pred_e[truth], true_e[truth], False, rng)
    return sums


def _chunk_sums(
    models: Sequence[Predictor],
    fields: Mapping[str, np.ndarray],
    units: Mapping[str, str],
    run_names: Sequence[str],
    ood: OODSpecs,
    seed: int,
) -> dict[str, dict]:
    """{"scores": {model: {run: {field: {part: sums}}}}, "ood": {model: {field: sums}}} of
    one chunk."""
    rng = np.random.default_rng(seed)
    runs = np.asarray(fields[RUN]).astype(np.int64) if RUN in fields else None
    groups = (
        {ALL: slice(None)}
        if runs is None
        else {_run_name(run_names, code): runs == code for code in np.unique(runs)}
    )
    result: dict[str, dict] = {"scores": {}, "ood": {}}
    for model in models:
        preds = model.predict(fields)
        result["scores"][model.label] = {
            group: _model_sums(model, preds, fields, units, rows, rng)
            for group, rows in groups.items()
        }
    for label, specs in ood.items():
        result["ood"][label] = {
            name: ood_sums(levels(fields[name], len(low)), low, high, sigma, bands)
            for name, (low, high, sigma, bands) in specs.items()
        }
    return result


def _run_name(run_names: Sequence[str], code: int) -> str:
    return run_names[code] if 0 <= code < len(run_names) else f"run {code}"


def _tree_sum(parts: list[Any]) -> Any:
    """Pairwise delayed additions: log-depth, and each partial sum freed once added."""
    while len(parts) > 1:
        pairs = [dask.delayed(add)(a, b) for a, b in zip(parts[::2], parts[1::2], strict=False)]
        parts = pairs + parts[len(pairs) * 2 :]
    return parts[0]


def _as_list(value: np.ndarray) -> list[float | None]:
    """JSON-ready: NaN -> None."""
    return [None if not math.isfinite(v) else float(v) for v in np.atleast_1d(value).tolist()]


def _level_mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def _scores(sums: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Scores per field from its sums; per-level fields also get their mean over levels
    (levels where a score is undefined left out)."""
    finish = {
        "deterministic": deterministic_scores,
        "ensemble": ensemble_scores,
        "trigger": trigger_scores,
    }
    out: dict[str, dict[str, Any]] = {}
    for field, parts in sums.items():
        values: dict[str, np.ndarray] = {}
        for part, part_sums in parts.items():
            values |= finish[part](part_sums)
        scores: dict[str, Any] = {k: _as_list(v) for k, v in values.items()}
        if np.size(values["n"]) > 1:
            if "deterministic" in parts:
                scores["r2_all_levels"] = _as_list(r2_all_levels(parts["deterministic"]))[0]
                scores["r2_bands"] = [
                    {
                        "levels": [start, stop],
                        "r2": _as_list(r2_all_levels(parts["deterministic"], slice(start, stop)))[
                            0
                        ],
                    }
                    for start, stop in level_bands(np.size(values["n"]), R2_BANDS)
                ]
            scores["mean_over_levels"] = {
                k: _level_mean(v) for k, v in values.items() if k not in ("n", "rank_histogram")
            }
        out[field] = scores
    return out


def score_split(
    models: Sequence[Predictor],
    ds: xr.Dataset,
    run_names: Sequence[str],
    ood: OODSpecs | None = None,
    *,
    workers: int = 2,
    progress: bool = True,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, list[dict[str, Any]]]]]:
    """({model: {"all": scores, "runs": {run: scores}}}, {model: {field: bands}}) of every
    model on one split (`ds` from `sources.open_split`, chunked along sample): the scores and
    the out-of-distribution table of the models in `ood` (`ood_specs`)."""
    ood = ood or {}
    mass, _ = layer_mass(ds)
    needed = {name for model in models for name in model.input_names}
    needed |= {spec["name"] for model in models for spec in model.outputs} & set(ds.data_vars)
    needed |= {name for specs in ood.values() for name in specs}
    missing = sorted(needed - set(ds.variables))
    if missing:
        raise ValueError(f"the store has no variable(s) {missing} that the models take")
    for model in models:
        for spec in model.metadata["inputs"] + model.outputs:
            stored = ds[spec["name"]].attrs.get("units") if spec["name"] in ds else None
            if stored is not None and stored != spec["units"]:
                raise ValueError(
                    f"{model.label}: {spec['name']} in {spec['units']!r}, the store has {stored!r}"
                )
    arrays = {name: ds[name].data for name in sorted(needed)}
    if mass is not None:
        arrays[MASS] = mass.data
    if RUN in ds.coords:
        arrays[RUN] = ds[RUN].data
    units = {name: str(ds[name].attrs.get("units", "")) for name in needed}
    bounds = np.cumsum([0, *ds.chunks["sample"]])
    parts = [
        dask.delayed(_chunk_sums)(
            models,
            {name: array[lo:hi] for name, array in arrays.items()},
            units,
            list(run_names),
            ood,
            index,
            dask_key_name=f"evaluate-chunk-{index}",
        )
        for index, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
    ]
    if not parts:
        raise ValueError("the split has no samples")
    with ProgressBar(minimum=1.0, dt=0.5) if progress else contextlib.nullcontext():
        (total,) = dask.compute(_tree_sum(parts), scheduler="threads", num_workers=workers)
    result = {}
    for model in models:
        groups = total["scores"][model.label]
        whole = groups[ALL] if ALL in groups else functools.reduce(add, groups.values())
        result[model.label] = {
            ALL: _scores(whole),
            "runs": {run: _scores(group) for run, group in groups.items() if run != ALL},
        }
    table = {
        label: {
            name: _ood_bands(ood_scores(sums), ood[label][name][3])
            for name, sums in by_field.items()
        }
        for label, by_field in total["ood"].items()
    }
    return result, table


def _ood_bands(
    scores: Mapping[str, np.ndarray], bands: Sequence[tuple[int, int]]
) -> list[dict[str, Any]]:
    """One entry per band, levels 1-based and inclusive."""
    return [
        {"levels": [start + 1, stop], **{k: _as_list(v[i])[0] for k, v in scores.items()}}
        for i, (start, stop) in enumerate(bands)
    ]


def ood_specs(
    models: Sequence[Predictor], ds: xr.Dataset, normalisation: Mapping[str, Any], bands: int
) -> OODSpecs:
    """The OOD check of every model with a valid_range, for its input fields the split holds:
    range and sigma (the store's training std, NaN where the store has none) per level."""
    specs: OODSpecs = {}
    for model in models:
        ranges = model.metadata.get("valid_range") or {}
        specs[model.label] = {}
        for name, bounds in ranges.items():
            if name not in ds.data_vars:
                continue
            low, high = (np.asarray(bounds[k], np.float64) for k in ("min", "max"))
            std = normalisation.get(name, {}).get("std", [np.nan] * len(low))
            sigma = np.asarray(std, np.float64)[: len(low)]
            specs[model.label][name] = (low, high, sigma, level_bands(len(low), bands))
    return {label: spec for label, spec in specs.items() if spec}


def field_info(models: Sequence[Predictor], ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """Per scored field: its units after conversion and its levels (the lev coordinate)."""
    with_mass = layer_mass(ds)[0] is not None
    lev = ds["lev"] if "lev" in ds.coords else None
    level_units = "" if lev is None else str(lev.attrs.get("units", ""))
    info: dict[str, dict[str, Any]] = {}
    for model in models:
        for spec in model.outputs:
            name, nlev = spec["name"], spec["nlev"]
            if name not in ds.data_vars:
                continue
            profile = lev is not None and nlev > 1
            info[name] = {
                "units": energy_units(spec["units"], with_mass),
                "levels": lev.values[:nlev].tolist() if profile else [],
                "level_units": level_units,
            }
            if energy_factor(spec["units"])[1] and with_mass and nlev > 1:
                info[name + "_column"] = {"units": "W m-2", "levels": [], "level_units": ""}
            if model.is_mskf and nlev > 1:
                info[name + "_triggered"] = info[name]
    return info


def evaluate(
    models: Sequence[Predictor],
    store: Path,
    splits: Sequence[str],
    *,
    chunk_samples: int = 4096,
    workers: int = 2,
    progress: bool = True,
    ood_bands: int = OOD_BANDS,
) -> dict[str, Any]:
    """Every model scored on every split of `store`: the content of metrics.json. Scores:
    ["scores"][label][split]["all"][field][score] (["runs"][run][field][score] per WRF run);
    the out-of-distribution table (`ood_bands` level bands):
    ["ood"][label][split][input field][band], a band {"levels": [first, last], "n",
    "outside", "fraction", "median_sigma", "max_sigma"}."""
    labels = [model.label for model in models]
    if len(set(labels)) != len(labels):
        raise ValueError(f"model labels repeat: {labels}; name them with --label")
    attrs = zarr.open_group(str(store), mode="r").attrs
    run_names = list(attrs.get("runs", []))
    result: dict[str, Any] = {
        "dataset": str(store),
        "store": attrs.get("name", store.stem),
        "splits": {},
        "models": {
            model.label: {
                "source": model.source,
                "kind": model.kind,
                "members": model.members,
                "outputs": [spec["name"] for spec in model.outputs],
            }
            for model in models
        },
        "scores": {label: {} for label in labels},
        "ood": {},
    }
    normalisation = dict(attrs.get("normalisation", {}))
    for split in splits:
        ds = open_split(store, split, chunk_samples)
        if progress:
            print(f"[paramlib evaluate] {split}: {ds.sizes['sample']} samples", flush=True)
        ood = ood_specs(models, ds, normalisation, ood_bands)
        scores, table = score_split(models, ds, run_names, ood, workers=workers, progress=progress)
        for label, by_field in table.items():
            result["ood"].setdefault(label, {})[split] = by_field
        runs = sorted({run for s in scores.values() for run in s["runs"]})
        result["splits"][split] = {
            "samples": int(ds.sizes["sample"]),
            "runs": runs,
            "label": f"{split} ({', '.join(runs)})" if runs else split,
        }
        result["layer_mass"] = layer_mass(ds)[1]
        result["fields"] = field_info(models, ds)
        for label, value in scores.items():
            result["scores"][label][split] = value
    return result

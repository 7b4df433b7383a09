"""Coupled runs against the high-fidelity reference: time-series plots, bias profiles and the
drift / fallback table.

Per run, domain means (over columns) of
    column-mean T   mass-weighted over the column, sum(T dp) / sum(dp)           K
    PW              precipitable water, sum(q dp) / g                            kg m-2
    precipitation   convective + large-scale, record means                       mm day-1
and, against the reference of the same scenario (same columns, SSTs and start),
    bias   = time mean of (run - reference)
    drift  = (run - reference) over the last day minus over the first day
(without a reference, drift is the run's own last-day minus first-day change and bias is
empty). A run that stopped (a column left the physical range) is compared over the records it
wrote; ``completed`` is false and ``days`` says how far it got. ``fallback`` is the fraction of
column steps that ran physics in an ML mode.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from paramlib.couple.inputs import SCENARIOS, CoupleError, model_name
from paramlib.couple.reference import REFERENCE_FILE
from paramlib.couple.scm import OUTPUT_FILE, open_output

SECONDS_PER_DAY = 86400.0
QUANTITIES = {  # name: (label, units)
    "t_mean": ("column-mean T", "K"),
    "pw": ("precipitable water", "kg m-2"),
    "precip": ("precipitation", "mm day-1"),
}
TABLE_COLUMNS = (
    "run",
    "scenario",
    "mode",
    "days",
    "completed",
    "finite",
    "t_mean",
    "t_bias",
    "t_drift",
    "pw",
    "pw_bias",
    "pw_drift",
    "precip",
    "precip_bias",
    "precip_drift",
    "fallback",
)


def output_file(run: Path) -> Path:
    """A run directory's output (scm.nc or reference.nc), or the file itself."""
    if run.is_dir():
        for name in (OUTPUT_FILE, REFERENCE_FILE):
            if (run / name).is_file():
                return run / name
        raise CoupleError(f"{run}: neither {OUTPUT_FILE} nor {REFERENCE_FILE} inside")
    return run


def scenario_of(data: xr.Dataset) -> str:
    shift = float(data.attrs.get("sst_shift", 0.0))
    for name, value in SCENARIOS.items():
        if math.isclose(shift, value):
            return name
    return f"sst{shift:+g}K"


def run_label(data: xr.Dataset, path: Path) -> str:
    """'<model> <mode>', the model named by its run directory (…/NAME/model.pt) or file stem."""
    mode = str(data.attrs.get("mode", "?"))
    model = str(data.attrs.get("model_path", ""))
    if not model:
        return "Emanuel (reference)" if mode == "reference" else f"Betts-Miller {mode}"
    return f"{model_name(Path(model))} {mode}"


def series(data: xr.Dataset) -> dict[str, xr.DataArray]:
    """Domain-mean time series, time in days since the start."""
    days = (data["time"] - np.datetime64("2000-01-01")) / np.timedelta64(1, "D")
    t_mean = (data["t"] * data["dp"]).sum("lev") / data["dp"].sum("lev")
    out = {
        "t_mean": t_mean.mean("col"),
        "pw": data["pw"].mean("col"),
        "precip": ((data["precip"] + data["precip_ls"]) * SECONDS_PER_DAY).mean("col"),
    }
    if "fallback_fraction" in data:
        out["fallback"] = data["fallback_fraction"]
    return {k: v.assign_coords(time=days.values) for k, v in out.items()}


def _first_last_day(a: xr.DataArray) -> float:
    """Mean over the records of the last day minus over those of the first."""
    days, values = a["time"].values, a.values
    first = values[days <= 1.0 + 1e-9]
    last = values[days > days[-1] - 1.0 + 1e-9]
    return float(last.mean() - first.mean())


def summarize(data: xr.Dataset, path: Path, reference: xr.Dataset | None) -> dict[str, object]:
    """One table row."""
    mine = series(data)
    ref = series(reference) if reference is not None else None
    days = mine["t_mean"]["time"].values
    row: dict[str, object] = {
        "run": run_label(data, path),
        "scenario": scenario_of(data),
        "mode": str(data.attrs.get("mode", "?")),
        "days": round(float(days[-1]), 3) if days.size else 0.0,
        "completed": data.attrs.get("run_status") == "completed",
        "finite": bool(all(np.isfinite(data[v]).all() for v in ("t", "q", "precip"))),
        "fallback": float(mine["fallback"].mean()) if "fallback" in mine else None,
    }
    for name, column in (("t_mean", "t"), ("pw", "pw"), ("precip", "precip")):
        row[name] = float(mine[name].mean())
        if ref is not None:
            # over the records both have: a run that stopped is compared as far as it got
            n = mine[name].sizes["time"]
            if n > ref[name].sizes["time"] or not np.allclose(
                mine[name]["time"].values, ref[name]["time"].values[:n]
            ):
                raise CoupleError(f"{path}: its records are not at the reference's times")
            diff = mine[name] - ref[name].values[:n]
            row[f"{column}_bias"] = float(diff.mean())
            row[f"{column}_drift"] = _first_last_day(diff)
        else:
            row[f"{column}_bias"] = None
            row[f"{column}_drift"] = _first_last_day(mine[name])
    return row


def bias_profiles(data: xr.Dataset, reference: xr.Dataset) -> dict[str, np.ndarray]:
    """Time- and column-mean T (K) and q (g kg-1) differences per level over the run's records,
    and the mean pressure (hPa) of each level."""
    n = data.sizes["time"]  # a run that stopped: the records it wrote
    return {
        "p_hpa": data["p"].mean("col").values / 100.0,
        "t": (data["t"] - reference["t"].values[:n]).mean(("time", "col")).values,
        "q": 1e3 * (data["q"] - reference["q"].values[:n]).mean(("time", "col")).values,
    }


def report(
    run_paths: Sequence[Path], out: Path, references: Sequence[Path] = ()
) -> list[dict[str, object]]:
    """Plots (timeseries.png; bias_profiles.png with references) and the table (table.md,
    table.csv, table.json) in ``out``; returns the rows. Each run is compared with the
    reference of its scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    refs = {}
    for path in references:
        data = open_output(output_file(path))
        refs[scenario_of(data)] = (path, data)
    loaded = [(path, open_output(output_file(path))) for path in run_paths]
    rows = [summarize(d, p, refs.get(scenario_of(d), (None, None))[1]) for p, d in loaded]

    scenarios = sorted({scenario_of(d) for _, d in loaded} | set(refs))
    fig, axes = plt.subplots(
        4, len(scenarios), figsize=(6 * len(scenarios), 12), squeeze=False, sharex="col"
    )
    for j, scenario in enumerate(scenarios):
        curves = [
            (label, d)
            for label, d in ((run_label(d, p), d) for p, d in loaded)
            if scenario_of(d) == scenario
        ]
        if scenario in refs:
            curves.insert(0, ("Emanuel (reference)", refs[scenario][1]))
        for label, data in curves:
            s = series(data)
            style = {"color": "k", "lw": 2} if data.attrs.get("mode") == "reference" else {}
            for i, name in enumerate(("t_mean", "pw", "precip", "fallback")):
                if name in s:
                    axes[i, j].plot(s[name]["time"], s[name], label=label, **style)
        for i, (title, units) in enumerate([*QUANTITIES.values(), ("fallback fraction", "1")]):
            axes[i, j].set_ylabel(f"{title} ({units})")
        axes[0, j].set_title(scenario)
        axes[-1, j].set_xlabel("days")
        axes[0, j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "timeseries.png", dpi=90)
    plt.close(fig)

    with_ref = [(p, d) for p, d in loaded if scenario_of(d) in refs]
    if with_ref:
        fig, axes = plt.subplots(len(scenarios), 2, figsize=(10, 5 * len(scenarios)), squeeze=False)
        for j, scenario in enumerate(scenarios):
            for path, data in with_ref:
                if scenario_of(data) != scenario:
                    continue
                prof = bias_profiles(data, refs[scenario][1])
                axes[j, 0].plot(prof["t"], prof["p_hpa"], label=run_label(data, path))
                axes[j, 1].plot(prof["q"], prof["p_hpa"], label=run_label(data, path))
            for ax, what in zip(axes[j], ("T bias (K)", "q bias (g kg-1)"), strict=True):
                ax.axvline(0.0, color="k", lw=0.5)
                ax.set_ylim(1000, 50)
                ax.set_xlabel(what)
                ax.set_ylabel("pressure (hPa)")
                ax.set_title(f"{scenario}: mean bias against Emanuel")
            axes[j, 0].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "bias_profiles.png", dpi=90)
        plt.close(fig)

    (out / "table.json").write_text(json.dumps(rows, indent=2) + "\n")
    with open(out / "table.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    (out / "table.md").write_text(markdown_table(rows))
    return rows


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, object]]) -> str:
    """The drift and fallback table (T in K, PW in kg m-2, precipitation in mm day-1)."""
    header = (
        "run",
        "scenario",
        "days",
        "ok",
        "T",
        "T bias",
        "T drift",
        "PW",
        "PW bias",
        "PW drift",
        "P",
        "P bias",
        "P drift",
        "fallback",
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        ok = bool(r["completed"]) and bool(r["finite"])
        cells = (
            r["run"],
            r["scenario"],
            r["days"],
            ok,
            r["t_mean"],
            r["t_bias"],
            r["t_drift"],
            r["pw"],
            r["pw_bias"],
            r["pw_drift"],
            r["precip"],
            r["precip_bias"],
            r["precip_drift"],
            r["fallback"],
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"

"""``paramlib data testbed``: every run of the testbed, its datasets, summary and WRF-format set.

Order (the tuned Betts-Miller parameters must exist before the low-fidelity runs):
    1. the column set (``runs.sample_columns``); high fidelity uses its first ``hf_columns``;
    2. high fidelity, historical, WTG on;
    3. Betts-Miller's tau and RH_BM tuned on it (``tuning``);
    4. high fidelity +4K; low fidelity historical and +4K with the tuned parameters;
    5. the contrast: high fidelity historical and +4K with WTG off, on the first
       ``no_wtg_columns`` columns;
    6. Betts-Miller diagnosed on the high-fidelity states; the four datasets and the figures;
    7. the WRF-format set in ``wrf/`` and its +4K twin in ``wrf_plus4k/`` (unless
       ``wrf=False``): the same grid, forcing fields and draws, SST and WTG reference SST
       4 K warmer (``GridForcing.plus4k``, as ``ColumnSet.plus4k`` for the column sets), the
       same levels (eta, P_TOP); test only, like the high-fidelity +4K set.
The whole set is written into a temporary folder next to ``out`` and renamed into place at the
end, so ``out`` holds a complete set or none. The folder gets paramlib's marker
(`paramlib.guards.OWNED_MARKER`). An earlier set there is replaced only when the folder holds
nothing but that set's files (those its ``summary.json`` lists, and the marker; sets written
before the marker existed are recognised by the same list): a user's file in it, or any other
non-empty folder, is refused and never deleted. The seed fixes every number: the column set
and the WRF set draw from independent streams spawned from it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np

from paramlib.guards import (
    OWNED_MARKER,
    UserInputError,
    check_output_path,
    check_replaceable,
    mark_owned,
)
from paramlib.testbed import history_writer, runs, summary
from paramlib.testbed.runs import ColumnRun, Scheme, Timing, run_columns, sample_columns
from paramlib.testbed.sst import PLUS4K_K
from paramlib.testbed.tuning import Tuning, diagnose_betts_miller, tune_betts_miller
from paramlib.testbed.wrf_set import GridForcing, WrfSet, WrfSetConfig, make_wrf_set

SUMMARY = "summary.json"
WRF_DIR = "wrf"
WRF_PLUS4K_DIR = "wrf_plus4k"
# summary.json key -> the folder of that WRF-format set
WRF_SETS = {"wrf": WRF_DIR, "wrf_plus4k": WRF_PLUS4K_DIR}
T = TypeVar("T")
USAGE = {
    ("lf", "historical"): "training",
    ("hf", "historical"): "training",
    ("lf", "plus4k"): "evaluation",
    ("hf", "plus4k"): "test only",
}


@dataclasses.dataclass(frozen=True)
class TestbedSize:
    """How many columns, how long, and the WRF grid."""

    lf_columns: int
    hf_columns: int
    no_wtg_columns: int
    timing: Timing
    wrf: WrfSetConfig


SIZES = {
    "small": TestbedSize(
        lf_columns=192,
        hf_columns=48,
        no_wtg_columns=48,
        timing=Timing(spin_up_days=2.0, save_days=1.0, save_every=18),
        wrf=WrfSetConfig(nx=12, ny=12, spin_up_days=0.5, hours=1.0),
    ),
    # The science size (README, "The medium study"): 30 saved days per climate, so the
    # historical HF training range spans the climate's own variability (~49 000 training
    # columns); fewer LF columns than before, each as long.
    "medium": TestbedSize(
        lf_columns=1024,
        hf_columns=256,
        no_wtg_columns=64,
        timing=Timing(spin_up_days=4.0, save_days=30.0, save_every=18),
        wrf=WrfSetConfig(nx=40, ny=40, spin_up_days=1.0, hours=3.0),
    ),
    "large": TestbedSize(
        lf_columns=16384,
        hf_columns=2048,
        no_wtg_columns=512,
        timing=Timing(spin_up_days=5.0, save_days=8.0, save_every=18),
        wrf=WrfSetConfig(nx=64, ny=64, spin_up_days=1.0, hours=16.0),
    ),
}


def generate(
    out: str | os.PathLike,
    size: str | TestbedSize = "small",
    seed: int = 0,
    wrf: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, object]:
    """Write the testbed of ``size`` (a name in ``SIZES`` or a ``TestbedSize``) for ``seed`` to
    ``out``; returns the summary."""
    if isinstance(size, str) and size not in SIZES:
        raise ValueError(f"size: expected one of {', '.join(SIZES)}, got {size!r}")
    preset, label = (SIZES[size], size) if isinstance(size, str) else (size, "custom")
    target = check_output_path(out, "testbed folder", "dir")
    check_only_testbed(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        result = _build(staging, preset, label, seed, wrf, _Stages(log))
        mark_owned(staging)
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def testbed_entries(folder: Path) -> set[str] | None:
    """What a testbed in ``folder`` consists of (paths relative to it: the files its summary
    lists, the summary, the marker, the WRF folders); None without a readable summary."""
    try:
        report = json.loads((folder / SUMMARY).read_text())
        listed = set(report["files"])
        for key, directory in WRF_SETS.items():
            if key in report:
                listed |= set(report[key]["files"]) | {directory}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return listed | {SUMMARY, OWNED_MARKER}


def check_only_testbed(folder: Path) -> None:
    """Refuse to replace ``folder`` unless it is empty or holds a testbed and nothing else
    (UserInputError naming what else is there): regenerating must never delete a user's file."""
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    own = testbed_entries(folder)
    if own is None:
        check_replaceable(folder, "testbed folder")  # a foreign folder: the standard refusal
        own = {OWNED_MARKER}
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*")}
    others = sorted(present - own)
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise UserInputError(
            f"testbed folder {folder} holds files that are not the testbed's ({shown}); they"
            " would be deleted by regenerating it: move them away or choose another folder"
        )


class _Stages:
    """Progress lines: one per stage, with its wall time."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.start = time.perf_counter()

    def run(self, what: str, work: Callable[[], T]) -> T:
        begin = time.perf_counter()
        result = work()
        now = time.perf_counter()
        self.log(f"testbed: {what}: {now - begin:.1f} s (total {now - self.start:.1f} s)")
        return result


def _build(
    out: Path, preset: TestbedSize, size: str, seed: int, wrf: bool, stages: _Stages
) -> dict[str, object]:
    columns_rng, wrf_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    timing = preset.timing
    columns = sample_columns(preset.lf_columns, columns_rng)
    hf_columns = columns.first(preset.hf_columns)
    no_wtg_columns = columns.first(preset.no_wtg_columns)
    days = f"{timing.spin_up_days:g} + {timing.save_days:g} days"

    def hf(cols: runs.ColumnSet, wtg: bool = True) -> Callable[[], ColumnRun]:
        return lambda: run_columns(cols, Scheme.EMANUEL, timing, wtg=wtg)

    hf_hist = stages.run(
        f"high fidelity, historical ({hf_columns.ncol} columns, {days})", hf(hf_columns)
    )
    tuning = stages.run("Betts-Miller tau and RH tuned on it", lambda: tune_betts_miller(hf_hist))
    hf_p4k = stages.run("high fidelity, +4K", hf(hf_columns.plus4k()))

    def lf(cols: runs.ColumnSet) -> Callable[[], ColumnRun]:
        return lambda: run_columns(
            cols, Scheme.BETTS_MILLER, timing, bm_tau=tuning.tau_s, bm_rh=tuning.rh
        )

    lf_hist = stages.run(f"low fidelity, historical ({columns.ncol} columns)", lf(columns))
    lf_p4k = stages.run("low fidelity, +4K", lf(columns.plus4k()))
    no_wtg = [
        stages.run(
            f"high fidelity without WTG, {name} ({no_wtg_columns.ncol} columns)",
            hf(cols, wtg=False),
        )
        for name, cols in (("historical", no_wtg_columns), ("+4K", no_wtg_columns.plus4k()))
    ]
    bm_on_hf = {
        "historical": diagnose_betts_miller(hf_hist, tuning.tau_s, tuning.rh),
        "plus4k": diagnose_betts_miller(hf_p4k, tuning.tau_s, tuning.rh),
    }
    sets = {
        ("lf", "historical"): (lf_hist, lf_hist.diagnostic),
        ("lf", "plus4k"): (lf_p4k, lf_p4k.diagnostic),
        ("hf", "historical"): (hf_hist, bm_on_hf["historical"]),
        ("hf", "plus4k"): (hf_p4k, bm_on_hf["plus4k"]),
    }
    files = stages.run(
        "column datasets written", lambda: _write_sets(out, sets, tuning, seed, size)
    )
    lev_hpa = 1000.0 * hf_hist.p[0] / hf_hist.columns.ps[0]
    report: dict[str, object] = {
        "seed": seed,
        "size": size,
        "sizes": {
            "lf_columns": columns.ncol,
            "hf_columns": hf_columns.ncol,
            "no_wtg_columns": no_wtg_columns.ncol,
            "levels": int(lev_hpa.size),
            "times_per_run": timing.nsave,
            "samples": {
                f"{f}_{s}": int(run.t.shape[0] * run.t.shape[1])
                for (f, s), (run, _) in sets.items()
            },
        },
        "dt_s": timing.dt_s,
        "spin_up_days": timing.spin_up_days,
        "save_days": timing.save_days,
        "save_interval_s": timing.save_every * timing.dt_s,
        "wtg_sst_ref_K": {"historical": columns.sst_ref, "plus4k": columns.plus4k().sst_ref},
        "bm_tau_s": tuning.tau_s,
        "bm_rh": tuning.rh,
        "bm_tuning": tuning.as_dict(),
        "lf_hf_correlation": _figures(
            summary.agreement(bm_on_hf["historical"], hf_hist.convection)
        ),
        "lf_hf_correlation_convecting": _figures(
            summary.agreement(bm_on_hf["historical"], hf_hist.convection, convecting_only=True)
        ),
        "convecting_fraction": float(np.mean(hf_hist.convection.precip > 0)),
        "plus4k_out_of_range_variable": "T (temperature), per level in hPa",
        "plus4k_out_of_range": summary.by_level(summary.out_of_range(hf_hist.t, hf_p4k.t), lev_hpa),
        "plus4k_out_of_range_no_wtg": summary.by_level(
            summary.out_of_range(no_wtg[0].t, no_wtg[1].t), lev_hpa
        ),
        "files": files,
    }
    if wrf:
        report |= _wrf_sets(out, preset.wrf, wrf_rng, stages)
    (out / SUMMARY).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _wrf_sets(
    out: Path, config: WrfSetConfig, rng: np.random.Generator, stages: _Stages
) -> dict[str, object]:
    """The WRF-format set and its +4K twin (same draws), and their summary entries."""
    forcing = GridForcing.draw(config, rng)
    warm = forcing.plus4k()
    size = f"{config.nx} x {config.ny} x {config.nlev}, {config.nframes} frames"
    historical = stages.run(
        f"WRF-format set ({size})", lambda: make_wrf_set(out / WRF_DIR, config, forcing)
    )
    plus4k = stages.run(
        "WRF-format set, +4K",
        lambda: make_wrf_set(out / WRF_PLUS4K_DIR, config, warm, "plus4k", USAGE["hf", "plus4k"]),
    )

    def entry(grid_set: WrfSet, folder: str, grid: GridForcing, usage: str) -> dict[str, object]:
        return {
            "files": {f"{folder}/{p.name}": p.stat().st_size for p in grid_set.paths},
            "usage": usage,
            "wtg_sst_ref_K": grid.columns.sst_ref,
            "triggered_fraction": grid_set.triggered_fraction,
            "raining_fraction": grid_set.raining_fraction,
            "fresh_fraction_of_active": grid_set.fresh_fraction,
        }

    return {
        "wrf": entry(historical, WRF_DIR, forcing, USAGE["hf", "historical"])
        | {
            "grid": {"nx": config.nx, "ny": config.ny, "nz": config.nlev},
            "frames": config.nframes,
            "output_interval_s": config.dt_s,
            "spin_up_days": config.spin_up_days,
        },
        "wrf_plus4k": entry(plus4k, WRF_PLUS4K_DIR, warm, USAGE["hf", "plus4k"])
        | {
            "sst_offset_K": PLUS4K_K,
            "out_of_range_variables": "t (K), qv (kg kg-1) per eta level (ZNU), top to surface",
            "out_of_range": {
                name: summary.by_level(
                    summary.out_of_range(historical.state[name], plus4k.state[name]),
                    historical.eta,
                    digits=4,
                )
                for name in historical.state
            },
        },
    }


def _figures(values: dict[str, float]) -> dict[str, float | None]:
    return {name: summary.finite_or_none(v) for name, v in values.items()}


def _write_sets(
    out: Path,
    sets: dict[tuple[str, str], tuple[ColumnRun, runs.SchemeOutput]],
    tuning: Tuning,
    seed: int,
    size: str,
) -> dict[str, int]:
    files = {}
    for (fidelity, scenario), (run, diagnostic) in sets.items():
        other = Scheme.EMANUEL if run.scheme is Scheme.BETTS_MILLER else Scheme.BETTS_MILLER
        attrs = {
            "title": f"paramlib testbed: {fidelity.upper()} column run, {scenario} climate",
            "source": "paramlib testbed: synthetic data from the Fortran column model "
            "(fortran_bridge/host), not a GCM",
            "Conventions": "CF-1.8",
            "fidelity": {"lf": "low", "hf": "high"}[fidelity],
            "scenario": scenario,
            "scheme": run.scheme.value,
            "diagnostic_scheme": other.value,
            "usage": USAGE[fidelity, scenario],
            "seed": seed,
            "size": size,
            "bm_tau_s": tuning.tau_s,
            "bm_rh": tuning.rh,
            "bm_tuning": "grid search on the historical high-fidelity run, see summary.json",
            "wtg": int(run.wtg),
            "wtg_sst_ref_K": run.columns.sst_ref,
            "dt_s": run.timing.dt_s,
            "spin_up_days": run.timing.spin_up_days,
            "save_interval_s": run.timing.save_every * run.timing.dt_s,
        }
        name = f"{fidelity}_{scenario}.nc"
        history_writer.write_dataset(
            history_writer.column_dataset(run, diagnostic, other, attrs), out / name
        )
        files[name] = (out / name).stat().st_size
    return files


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename the finished set to ``target``, replacing an earlier set only once the new one
    is complete."""
    if target.exists():
        previous = target.parent / f".{target.name}.old-{os.getpid()}"
        target.rename(previous)
        staging.rename(target)
        shutil.rmtree(previous)
    else:
        staging.rename(target)

"""``paramlib wrf check``: the plugin inside a real WRF v4.7.1 against MSKF, end to end.

Builds a user's WRF tree with the plugin (``fortran_bridge/wrf/patch_wrf.py`` apply, GNU smpar
``./configure``, link, ``./compile em_quarter_ss``; skipped when the executables are newer than
the patch), then for each sounding runs ideal.exe and wrf.exe with MSKF (cu_physics = 11, the
reference) and with the plugin (cu_physics = 97) under the shared data's namelist (3 h, dt 30 s,
cudt = 5 min, 5-min history with the cumulus fields through iofields; physics as in
``../shared/data/wrf_mskf/README.md``), the plugin once per OpenMP thread count. Each run has
its own folder ``OUT/runs/SOUNDING/RUN``. OUT/report.md, report.html and report.json hold the
comparison and issue 13's real-WRF targets (``TARGETS``); they are rewritten after every sounding.

The measures are defined once, in DEFINITIONS.
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from paramlib.atomic import write_atomic
from paramlib.catalog import data_root
from paramlib.data.readers.wrfout import IOFIELDS_LINE, decode_times
from paramlib.guards import (
    FolderLock,
    UserInputError,
    check_output_path,
    check_replaceable,
    mark_owned,
)
from paramlib.paths import REPO_ROOT
from paramlib.wrf import sounding
from paramlib.wrf.driver import PluginOptions

KIT = REPO_ROOT / "fortran_bridge" / "wrf" / "patch_wrf.py"
PLUGIN_MODULE = KIT.with_name("module_cu_paramlib.F")
WRF_VERSION = "4.7.1"
CASE = Path("test") / "em_quarter_ss"
EXECUTABLES = ("ideal.exe", "wrf.exe")
GNU_SMPAR = "33"  # ./configure's GNU (gfortran/gcc) smpar entry on Linux x86_64
MSKF, PLUGIN = 11, 97  # cu_physics
WRFOUT = "wrfout_d01_0001-01-01_00:00:00"
IOFIELDS_FILE = "cumulus_iofields.txt"
SHARED_RUN = "wrf_mskf/wrfout_d01_{}.nc"  # under the data root: the shared runs
ACTIVE_FROM_MIN = 65  # the shared README's window for active fractions and profiles
PER_HOUR = 3600.0


DEFINITIONS = (
    "A column is *active* in a frame when any level of RTHCUTEN is non-zero (the shared "
    "README's rule); the active fraction is its mean over the frames from 65 to 180 min (the "
    "README's window, so MSKF ctl's 0.187 can be checked); mean heating and moistening profiles "
    "are RTHCUTEN and RQVCUTEN averaged over the active columns of those frames; RAINC is the "
    "domain total (sum over columns) at 180 min; negative QVAPOR and NaN are counted over every "
    "frame."
)


class CheckError(RuntimeError):
    """A build or run step failed; the message names the step and its log."""


# --- the namelist ----------------------------------------------------------------------------

# The shared runs' options (their wrfout global attributes; tests/test_wrf_check.py compares),
# on em_quarter_ss's namelist.input.
NAMELIST: dict[str, dict[str, object]] = {
    "time_control": {
        "run_hours": 3,
        **{f"start_{k}": v for k, v in (("year", 1), ("month", 1), ("day", 1))},
        **{f"start_{k}": 0 for k in ("hour", "minute", "second")},
        **{f"end_{k}": v for k, v in (("year", 1), ("month", 1), ("day", 1), ("hour", 3))},
        **{f"end_{k}": 0 for k in ("minute", "second")},
        "history_interval": 5,
        "frames_per_outfile": 1000,
        "restart": False,
        "restart_interval": 100000,
        **{f"io_form_{k}": 2 for k in ("history", "restart", "input", "boundary")},
        "iofields_filename": IOFIELDS_FILE,
        "ignore_iofields_warning": True,
    },
    "domains": {
        "time_step": 30,
        "max_dom": 1,
        **{k: 1 for k in ("s_we", "s_sn", "s_vert")},
        **{k: 42 for k in ("e_we", "e_sn")},
        "e_vert": 41,
        "dx": 5000,
        "dy": 5000,
        "ztop": 20000,
        "feedback": 0,
        "smooth_option": 0,
    },
    "physics": {
        "mp_physics": 6,
        "ra_lw_physics": 0,
        "ra_sw_physics": 0,
        "radt": 30,
        "sf_sfclay_physics": 1,
        "sf_surface_physics": 0,
        "bl_pbl_physics": 1,
        "bldt": 0,
        "cu_physics": MSKF,
        "cudt": 5,
        "isfflx": 1,
        "icloud": 1,
    },
    "dynamics": {
        "hybrid_opt": 0,
        "rk_ord": 3,
        "diff_opt": 2,
        "km_opt": 4,
        "damp_opt": 2,
        "zdamp": 5000.0,
        "dampcoef": 0.003,
        "khdif": 500,
        "kvdif": 500,
        "smdiv": 0.1,
        "emdiv": 0.01,
        "epssm": 0.1,
        "time_step_sound": 6,
        "h_mom_adv_order": 5,
        "v_mom_adv_order": 3,
        "h_sca_adv_order": 5,
        "v_sca_adv_order": 3,
        "moist_adv_opt": 1,
        "scalar_adv_opt": 1,
        "tke_adv_opt": 1,
        "non_hydrostatic": True,
        "mix_full_fields": True,
        "w_damping": 1,
        "use_theta_m": 1,
    },
    "bdy_control": {
        **{f"periodic_{side}": False for side in ("x", "y")},
        **{f"symmetric_{s}": False for s in ("xs", "xe", "ys", "ye")},
        **{f"open_{s}": True for s in ("xs", "xe", "ys", "ye")},
    },
    "ideal": {"ideal_case": 2},
}


def _value(v: object) -> str:
    if isinstance(v, bool):
        return ".true." if v else ".false."
    return f"'{v}'" if isinstance(v, str) else str(v)


def namelist_text(cu_physics: int = MSKF, plugin: PluginOptions | None = None) -> str:
    groups = {name: dict(options) for name, options in NAMELIST.items()}
    groups["physics"]["cu_physics"] = cu_physics
    if plugin is not None:
        groups["physics"].update({f"paramlib_cu_{k}": v for k, v in asdict(plugin).items()})
    return "".join(
        f"&{name}\n" + "".join(f" {k} = {_value(v)},\n" for k, v in options.items()) + "/\n\n"
        for name, options in groups.items()
    )


# --- the WRF tree and its build --------------------------------------------------------------


def check_wrf_tree(wrf: Path) -> None:
    if not wrf.is_dir():
        raise UserInputError(f"--wrf-dir {wrf}: no such folder; expected a WRF v{WRF_VERSION} tree")
    decl = wrf / "inc" / "version_decl"
    found = re.search(r"V?(\d+\.\d+(\.\d+)?)", decl.read_text()) if decl.is_file() else None
    if found is None or found.group(1) != WRF_VERSION or not (wrf / CASE).is_dir():
        said = f"inc/version_decl says {found.group(1)}" if found else "no inc/version_decl"
        raise UserInputError(
            f"--wrf-dir {wrf}: not a WRF v{WRF_VERSION} source tree ({said}); expected the"
            f" wrf-model/WRF tag v{WRF_VERSION} with its externals"
        )


def _executables(wrf: Path) -> list[Path]:
    return [wrf / "main" / name for name in EXECUTABLES]


def build_is_current(wrf: Path) -> bool:
    """ideal.exe and wrf.exe newer than the patch (this checkout's module in the tree,
    configure.wrf linked, the patched Registry)."""
    module = wrf / "phys" / PLUGIN_MODULE.name
    configure = wrf / "configure.wrf"
    inputs = [module, configure, wrf / "Registry" / "Registry.EM_COMMON"]
    if not all(p.is_file() for p in [*inputs, *_executables(wrf)]):
        return False
    if module.read_bytes() != PLUGIN_MODULE.read_bytes():
        return False
    if "paramlib cumulus plugin" not in configure.read_text(errors="replace"):
        return False
    built = min(p.stat().st_mtime for p in _executables(wrf))
    return built > max(p.stat().st_mtime for p in inputs)


def _step(command: Sequence[str | Path], cwd: Path, log: Path, what: str, **kwargs: Any) -> None:
    with open(log, "w") as handle:
        done = subprocess.run(
            [str(c) for c in command], cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, **kwargs
        )
    if done.returncode != 0:
        raise CheckError(f"{what} failed (exit {done.returncode}); see {log}")


def netcdf_env(wrf: Path) -> dict[str, str]:
    """NETCDF for WRF: $NETCDF, else one folder with include/ and lib/ linked to the system's
    netCDF-C and -Fortran (nc-config), which is what WRF's configure expects."""
    if os.environ.get("NETCDF"):
        return {**os.environ}
    config = shutil.which("nc-config")
    if config is None:
        raise CheckError("nc-config not found: install netCDF-C and -Fortran or set NETCDF")
    folder = wrf / ".paramlib_netcdf"
    folder.mkdir(exist_ok=True)
    for name, flag in (("include", "--includedir"), ("lib", "--libdir")):
        target = subprocess.run([config, flag], capture_output=True, text=True, check=True)
        link = folder / name
        link.unlink(missing_ok=True)
        link.symlink_to(target.stdout.strip())
    return {**os.environ, "NETCDF": str(folder)}


def build(wrf: Path, prefix: Path | None, logs: Path, say: Callable[[str], None]) -> None:
    if build_is_current(wrf):
        say(f"build skipped: {', '.join(EXECUTABLES)} in {wrf}/main are newer than the patch")
        return
    configure = wrf / "configure.wrf"
    text = configure.read_text(errors="replace") if configure.is_file() else ""
    reconfigure = "-fopenmp" not in text  # none yet, or not an OpenMP (smpar) build
    if prefix is None and (reconfigure or "paramlib cumulus plugin" not in text):
        raise UserInputError(
            "--prefix: needed to link the bridge into configure.wrf; expected the folder"
            " `cmake --install build --prefix P` installed the bridge into"
        )
    if not Path("/bin/csh").is_file():  # ./compile's first line: #!/bin/csh -f
        raise CheckError(
            "/bin/csh not found: WRF's ./compile is a csh script (Debian: apt install tcsh)"
        )
    _step(
        [sys.executable, KIT, "apply", "--wrf", wrf], wrf, logs / "apply.log", "patch_wrf.py apply"
    )
    env = netcdf_env(wrf)
    if reconfigure:
        say(f"./configure: GNU smpar (option {GNU_SMPAR}), no nesting")
        _step(["./configure"], wrf, logs / "configure.log", "./configure", env=env,
              input=f"{GNU_SMPAR}\n1\n".encode())  # fmt: skip
    if prefix is not None:
        link = [sys.executable, KIT, "link", "--wrf", wrf, "--prefix", prefix]
        _step(link, wrf, logs / "link.log", "patch_wrf.py link")
    say(f"compiling em_quarter_ss (20-50 min on 2 cores; log {logs / 'compile.log'})")
    jobs = str(min(os.cpu_count() or 1, 8))
    _step(
        ["./compile", "-j", jobs, "em_quarter_ss"], wrf, logs / "compile.log", "./compile", env=env
    )
    if not all(p.is_file() for p in _executables(wrf)):
        raise CheckError(f"./compile made no {' / '.join(EXECUTABLES)}; see {logs / 'compile.log'}")


# --- the runs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    scheme: str  # "mskf" or "plugin"
    threads: int

    @property
    def name(self) -> str:
        return f"{self.scheme}_{self.threads}thread{'s' if self.threads > 1 else ''}"


def _unlimited_stack() -> None:
    # WRF keeps large automatic arrays on the stack (its own run scripts say `ulimit -s`).
    _, hard = resource.getrlimit(resource.RLIMIT_STACK)
    resource.setrlimit(resource.RLIMIT_STACK, (hard, hard))


def _wrf_step(program: str, folder: Path, threads: int, success: str) -> float:
    log = folder / f"{Path(program).stem}.log"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_STACKSIZE": "64M"}
    start = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(
            [f"./{program}"], cwd=folder, stdout=handle, stderr=subprocess.STDOUT, env=env,
            preexec_fn=_unlimited_stack,
        )  # fmt: skip
    wall = time.perf_counter() - start
    text = log.read_text(errors="replace")
    if done.returncode != 0 or success not in text:
        last = [line for line in text.splitlines() if line.strip()][-3:]
        raise CheckError(f"{folder}: {program} failed (exit {done.returncode}): {' | '.join(last)}")
    return wall


def run_wrf(wrf: Path, folder: Path, input_sounding: Path, namelist: str, threads: int) -> float:
    """ideal.exe then wrf.exe in a fresh ``folder``; wrf.exe's wall time (s)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for entry in (wrf / CASE).iterdir():
        if entry.name not in ("namelist.input", "input_sounding"):
            (folder / entry.name).symlink_to(entry.resolve())
    shutil.copyfile(input_sounding, folder / "input_sounding")
    (folder / "namelist.input").write_text(namelist)
    (folder / IOFIELDS_FILE).write_text(IOFIELDS_LINE + "\n")
    _wrf_step("ideal.exe", folder, 1, "SUCCESS COMPLETE IDEAL INIT")
    return _wrf_step("wrf.exe", folder, threads, "SUCCESS COMPLETE WRF")


# --- measures --------------------------------------------------------------------------------


def open_output(path: Path) -> xr.Dataset:
    return xr.open_dataset(path, decode_times=False, mask_and_scale=False)


def minutes(ds: xr.Dataset, path: Path) -> np.ndarray:
    """Minutes since the simulation's start, from Times (reduced files have no XTIME)."""
    start = decode_times(np.array([ds.attrs["SIMULATION_START_DATE"]]), path)
    return (decode_times(ds["Times"].values, path) - start) // np.timedelta64(60, "s")


def active_columns(ds: xr.Dataset) -> np.ndarray:
    """(time, y, x): any level of RTHCUTEN non-zero."""
    return (ds["RTHCUTEN"].values != 0).any(axis=1)


def measures(path: Path) -> dict[str, Any]:
    """The numbers of one run's history file (definitions in the module's docstring)."""
    with open_output(path) as ds:
        when = minutes(ds, path)
        active = active_columns(ds)
        window = when >= ACTIVE_FROM_MIN
        heating = ds["RTHCUTEN"].values * PER_HOUR  # K/h
        moistening = ds["RQVCUTEN"].values * PER_HOUR * 1e3  # g/kg/h
        chosen = active[window]  # (time, y, x)
        n = int(chosen.sum())

        def profile(values: np.ndarray) -> list[float]:
            if n == 0:
                return [0.0] * values.shape[1]
            columns = np.moveaxis(values[window], 1, -1)[chosen]  # (columns, level)
            return columns.mean(axis=0, dtype=np.float64).tolist()

        mean_heating = profile(heating)
        floats = [v for v in ds.data_vars.values() if v.dtype.kind == "f"]
        qv = ds["QVAPOR"].values
        return {
            "minutes": when.tolist(),
            "rainc_total_mm": float(ds["RAINC"].values[-1].sum(dtype=np.float64)),
            "rainc_minute": int(when[-1]),
            "active_fraction_by_frame": active.mean(axis=(1, 2)).tolist(),
            "active_fraction": float(active[window].mean()) if window.any() else math.nan,
            "active_columns": n,
            "max_heating_k_per_h": float(heating.max()),
            "mean_heating_k_per_h": mean_heating,
            "mean_moistening_g_per_kg_h": profile(moistening),
            "peak_mean_heating_level": int(np.argmax(mean_heating)) + 1,
            "negative_qvapor": int((qv < 0).sum()),
            "negative_qvapor_at_end": int((qv[-1] < 0).sum()),
            "nan": int(sum(np.isnan(v.values).sum() for v in floats)),
        }


def max_abs_difference(a: Path, b: Path, frames: Sequence[str] | None = None) -> dict[str, float]:
    """Per numeric variable both files hold: max |a - b| over the frames whose Times match
    (all when ``frames`` is None; NaN in both at one place counts as equal)."""
    with open_output(a) as da, open_output(b) as db:
        times_a = [t.decode() for t in da["Times"].values]
        times_b = [t.decode() for t in db["Times"].values]
        common = [t for t in times_a if t in times_b and (frames is None or t in frames)]
        ia = [times_a.index(t) for t in common]
        ib = [times_b.index(t) for t in common]
        result = {}
        for name, va in da.data_vars.items():
            if name not in db or va.dtype.kind not in "fi" or "Time" not in va.dims:
                continue
            x = va.values[ia].astype(np.float64)
            y = db[name].values[ib].astype(np.float64)
            if x.shape != y.shape:
                result[name] = math.inf
                continue
            both_nan = np.isnan(x) & np.isnan(y)
            difference = np.where(both_nan, 0.0, np.abs(x - y))
            result[name] = float(np.nan_to_num(difference, nan=math.inf).max(initial=0.0))
        return result


def correlation(a: Sequence[float], b: Sequence[float]) -> float:
    x, y = np.asarray(a), np.asarray(b)
    if x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


# issue 13's real-WRF targets: (key, what, passes(value)).
TARGETS: tuple[tuple[str, str, Callable[[float], bool]], ...] = (
    ("rainc_ratio", "RAINC domain total within ±15 % of MSKF", lambda v: abs(v - 1) <= 0.15),
    ("active_ratio", "active fraction within ±20 % of MSKF", lambda v: abs(v - 1) <= 0.20),
    ("heating_correlation", "mean heating profiles correlate ≥ 0.9", lambda v: v >= 0.9),
    ("negative_qvapor_created", "no negative QVAPOR created (plugin − MSKF ≤ 0)", lambda v: v <= 0),
    ("nan", "no NaN", lambda v: v == 0),
    (
        "threads_max_abs_diff",
        "OpenMP threads give the same bits (max abs diff = 0)",
        lambda v: v == 0,
    ),
)


def _ratio(a: float, b: float) -> float:
    return a / b if b else (math.nan if a else 1.0)


def compare(mskf: Mapping[str, Any], plugin: Mapping[str, Any], threads_diff: float) -> dict:
    values = {
        "rainc_ratio": _ratio(plugin["rainc_total_mm"], mskf["rainc_total_mm"]),
        "active_ratio": _ratio(plugin["active_fraction"], mskf["active_fraction"]),
        "heating_correlation": correlation(
            mskf["mean_heating_k_per_h"], plugin["mean_heating_k_per_h"]
        ),
        "moistening_correlation": correlation(
            mskf["mean_moistening_g_per_kg_h"], plugin["mean_moistening_g_per_kg_h"]
        ),
        "negative_qvapor_created": plugin["negative_qvapor"] - mskf["negative_qvapor"],
        "nan": plugin["nan"],
        "threads_max_abs_diff": threads_diff,
    }
    values["targets"] = {
        key: {"what": what, "value": values[key], "met": bool(passes(values[key]))}
        for key, what, passes in TARGETS
    }
    return values


def reference_check(out_file: Path, name: str) -> dict[str, Any] | None:
    """MSKF's run against the shared run of the same sounding, on the shared file's frames
    (None where there is none): the build and namelist reproduce it when every max abs diff is 0."""
    shared = data_root() / SHARED_RUN.format(name)
    if not shared.is_file():
        return None
    with open_output(shared) as ds:
        frames = [t.decode() for t in ds["Times"].values]
        rainc = float(ds["RAINC"].values[-1].sum(dtype=np.float64))
    diffs = max_abs_difference(out_file, shared, frames)
    return {
        "file": str(shared),
        "shared_rainc_total_mm": rainc,
        "frames": f"{frames[0]} .. {frames[-1]}",
        "max_abs_diff": diffs,
        "identical": bool(diffs) and all(v == 0 for v in diffs.values()),
    }


# --- the report ------------------------------------------------------------------------------


def _figures(name: str, runs: Mapping[str, Path], results: Mapping[str, Any], out: Path) -> None:
    from paramlib.evaluate.report import plt, save_figure

    maps = {}
    for label, path in runs.items():
        with open_output(path) as ds:
            maps[label] = ds["RAINC"].values[-1]
    top = max(float(m.max()) for m in maps.values()) or 1.0
    figure, axes = plt.subplots(1, len(maps), figsize=(4.2 * len(maps), 3.6), squeeze=False)
    for ax, (label, field) in zip(axes[0], maps.items(), strict=True):
        image = ax.pcolormesh(field, vmin=0, vmax=top, cmap="Blues")
        ax.set_title(f"{name} {label}: RAINC at 180 min", fontsize=9)
        ax.set_aspect("equal")
    figure.colorbar(image, ax=axes[0].tolist(), label="mm")
    figure.savefig(out / f"rainc_{name}.png", dpi=90)
    plt.close(figure)

    figure, axes = plt.subplots(1, 3, figsize=(12.6, 3.8))
    for label, key in (("MSKF", "mskf"), ("plugin", "plugin")):
        numbers = results[key]
        levels = np.arange(1, len(numbers["mean_heating_k_per_h"]) + 1)
        axes[0].plot(numbers["mean_heating_k_per_h"], levels, marker=".", label=label)
        axes[1].plot(numbers["mean_moistening_g_per_kg_h"], levels, marker=".", label=label)
        axes[2].plot(numbers["minutes"], numbers["active_fraction_by_frame"], label=label)
    axes[0].set(xlabel="RTHCUTEN (K/h)", ylabel="model level", title="mean heating, active")
    axes[1].set(xlabel="RQVCUTEN (g/kg/h)", ylabel="model level", title="mean moistening, active")
    axes[2].set(xlabel="minutes", ylabel="fraction", title="active columns")
    save_figure(figure, axes[0], out / f"profiles_{name}.png")


def _fmt(value: float, digits: str = ".3g") -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, digits)


def report_blocks(report: Mapping[str, Any]) -> list:
    from paramlib.evaluate.report import Figure, Heading, Paragraph, Table

    blocks = [
        Heading("Real-WRF check: the paramlib cumulus plugin against MSKF", 1),
        Paragraph(
            f"WRF {report['wrf_dir']} (v{WRF_VERSION}, em_quarter_ss, GNU smpar), model"
            f" {report['model']}. 3 h, dt 30 s, cudt 5 min, history every 5 min. {DEFINITIONS}"
        ),
    ]
    rows, target_rows = [], []
    for name, r in report["soundings"].items():
        m, p, c, w = r["mskf"], r["plugin"], r["comparison"], r["wall_s"]
        rows.append(
            [
                name,
                _fmt(m["rainc_total_mm"], ".1f"),
                _fmt(p["rainc_total_mm"], ".1f"),
                _fmt(c["rainc_ratio"]),
                _fmt(m["active_fraction"]),
                _fmt(p["active_fraction"]),
                _fmt(c["heating_correlation"]),
                _fmt(c["moistening_correlation"]),
                _fmt(m["max_heating_k_per_h"]),
                _fmt(p["max_heating_k_per_h"]),
                f"{m['negative_qvapor']} / {p['negative_qvapor']}",
                f"{m['nan']} / {p['nan']}",
                " / ".join(f"{k}: {_fmt(v, '.1f')}" for k, v in w.items()),
                _fmt(c["threads_max_abs_diff"]),
            ]
        )
        target_rows += [
            [name, t["what"], _fmt(t["value"], ".4g"), "met" if t["met"] else "NOT MET"]
            for t in c["targets"].values()
        ]
    blocks += [
        Heading("Measured"),
        Table(
            [
                "sounding",
                "RAINC MSKF (mm)",
                "RAINC plugin (mm)",
                "ratio",
                "active MSKF",
                "active plugin",
                "heating corr.",
                "moistening corr.",
                "max heating MSKF (K/h)",
                "max heating plugin (K/h)",
                "neg. QVAPOR MSKF / plugin",
                "NaN MSKF / plugin",
                "wrf.exe wall (s)",
                "threads max abs diff",
            ],
            rows,
        ),
        Heading("Targets (issue 13)"),
        Table(["sounding", "target", "value", "status"], target_rows),
    ]
    for name, r in report["soundings"].items():
        reference = r.get("reference")
        if reference is not None:
            worst = max(reference["max_abs_diff"].items(), key=lambda kv: kv[1])
            blocks.append(
                Paragraph(
                    f"{name}: the MSKF run against the shared {reference['file']} on its frames"
                    f" {reference['frames']}, {len(reference['max_abs_diff'])} common fields:"
                    + (
                        " identical, bit for bit."
                        if reference["identical"]
                        else f" differs (RAINC domain total {r['mskf']['rainc_total_mm']:.1f} mm,"
                        f" shared {reference['shared_rainc_total_mm']:.1f} mm; RAINC max abs diff"
                        f" {reference['max_abs_diff']['RAINC']:.3g} mm; largest max abs diff"
                        f" {worst[1]:.3g} in {worst[0]}): another sounding, build or namelist."
                    )
                )
            )
    blocks.append(Heading("Figures"))
    for name in report["soundings"]:
        blocks += [
            Figure(f"rainc_{name}.png", f"{name}: RAINC at 180 min, MSKF and plugin"),
            Figure(
                f"profiles_{name}.png",
                f"{name}: mean heating and moistening over active columns"
                f" ({ACTIVE_FROM_MIN}-180 min), active fraction per frame",
            ),
        ]
    return blocks


def write_report(report: Mapping[str, Any], out: Path) -> None:
    from paramlib.evaluate.report import jsonable, render_html, render_markdown

    text = json.dumps(jsonable(report), indent=1, allow_nan=False)
    write_atomic(out / "report.json", lambda handle: handle.write(text.encode()))
    blocks = report_blocks(report)
    markdown = render_markdown(blocks)
    write_atomic(out / "report.md", lambda handle: handle.write(markdown.encode()))
    page = render_html(blocks, "paramlib wrf check")
    write_atomic(out / "report.html", lambda handle: handle.write(page.encode()))


def sounding_check(
    wrf: Path, model: Path, out: Path, name: str, threads: Sequence[int], say: Callable[[str], None]
) -> dict[str, Any]:
    """MSKF and the plugin (once per thread count) on one sounding; its part of the report."""
    stock = wrf / CASE / "input_sounding"
    path = out / "soundings" / f"input_sounding_{name}"
    path.parent.mkdir(exist_ok=True)
    if name == "ctl":  # the stock file itself, byte for byte
        shutil.copyfile(stock, path)
    else:
        sounding.write_sounding(sounding.variant(sounding.read_sounding(stock), name), path)
    plugin = PluginOptions(model=str(model))
    runs = [Run("mskf", threads[0]), *(Run("plugin", n) for n in threads)]
    walls, files = {}, {}
    for run in runs:
        folder = out / "runs" / name / run.name
        say(f"{name}: {run.name} in {folder}")
        namelist = namelist_text(PLUGIN, plugin) if run.scheme == "plugin" else namelist_text()
        walls[run.name] = run_wrf(wrf, folder, path, namelist, run.threads)
        files[run.name] = folder / WRFOUT
    return summarize(name, files[runs[0].name], [files[r.name] for r in runs[1:]], walls, out)


def summarize(
    name: str, mskf: Path, plugins: Sequence[Path], walls: Mapping[str, float], out: Path
) -> dict[str, Any]:
    """One sounding's part of the report from its history files: MSKF's, the plugin's at the
    reference thread count, then the plugin's at the other thread counts. Figures go to out."""
    threads_diff = max(
        (max(max_abs_difference(plugins[0], other).values()) for other in plugins[1:]),
        default=0.0,
    )
    result: dict[str, Any] = {"mskf": measures(mskf), "plugin": measures(plugins[0])}
    result["comparison"] = compare(result["mskf"], result["plugin"], threads_diff)
    result["wall_s"] = dict(walls)
    result["reference"] = reference_check(mskf, name)
    _figures(name, {"MSKF": mskf, "plugin": plugins[0]}, result, out)
    return result


def check(
    wrf: Path,
    model: Path,
    out: Path,
    prefix: Path | None = None,
    soundings: Sequence[str] = sounding.VARIANTS,
    threads: Sequence[int] = (1, 2),
    skip_build: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """The whole check (see the module's docstring); returns report.json's content."""
    wrf, model, out = wrf.resolve(), model.resolve(), out.resolve()
    check_wrf_tree(wrf)
    if not model.is_file():
        raise UserInputError(f"--model {model}: no such file; expected a TorchScript model file")
    for name in soundings:
        if name not in sounding.VARIANTS:
            raise UserInputError(
                f"--soundings: unknown {name!r}; expected some of {','.join(sounding.VARIANTS)}"
            )
    if not threads or any(n < 1 for n in threads):
        raise UserInputError(f"--threads {threads}: expected OpenMP thread counts >= 1")
    check_output_path(out, "--out", "dir")
    check_replaceable(out, "--out")
    out.mkdir(parents=True, exist_ok=True)
    mark_owned(out)
    with FolderLock(out, "--out"):
        if skip_build:
            if not all(p.is_file() for p in _executables(wrf)):
                raise UserInputError(
                    f"--skip-build: {wrf}/main has no {' / '.join(EXECUTABLES)}; build first"
                )
            say("build skipped (--skip-build)")
        else:
            build(wrf, prefix.resolve() if prefix else None, out, say)
        report: dict[str, Any] = {
            "wrf_dir": str(wrf),
            "model": str(model),
            "threads": list(threads),
            "soundings": {},
        }
        for name in soundings:
            report["soundings"][name] = sounding_check(wrf, model, out, name, threads, say)
            write_report(report, out)
            say(f"{name}: written to {out / 'report.md'}")
    return report

"""The Python side of the WRF cumulus plugin (fortran_bridge/wrf): the WRF-shaped test driver's
namelist and run, and the PyTorch reference of the plugin's first call.

The driver (build/bin/wrf_plugin_driver, fortran_bridge/wrf/tests/wrf_plugin_driver.F90) calls
module_cu_paramlib as WRF does on a real WRF state and, with ``output``, writes its first call's
inputs and every call's outputs to netCDF. `first_call_parity` rebuilds the model inputs from
that file the way the plugin does (w at mass levels, W0AVG's running mean, the scheme's *_prev
copies), runs the TorchScript file in PyTorch and applies the plugin's rules (held columns
untouched, the physical limits of `limit_columns`, NCA rounded to a multiple of DT,
PRATEC >= 0, RAINCV = PRATEC DT).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from paramlib.paths import build_dir

# Per field: max |Fortran - PyTorch| allowed, relative to the field's largest PyTorch value.
# The bridge runs the same libtorch kernels on the same batch, so 0 is expected.
PARITY_RTOL = 1e-6
TARGETS = ["rthcuten", "rqvcuten", "rqccuten", "rqrcuten", "rqicuten", "rqscuten", "pratec", "nca"]
TENDENCIES = tuple(TARGETS[:6])  # MSKF's outputs on mass levels
HYDROMETEORS = TENDENCIES[2:]
# The plugin's constants (module_cu_paramlib.F), in its float32 arithmetic.
TOP_FRACTION = 5e-4  # paramlib_cu_top_fraction's default
XLV_CP = np.float32(2.5e6) / np.float32(3.5 * 287.0)  # L/cp of WRF's module_model_constants
DRY_MARGIN = np.float32(1.0) - np.float32(1e-5)


@dataclass(frozen=True)
class PluginOptions:
    """The plugin's &physics options in WRF's namelist.input."""

    model: str
    device: int = 0
    device_index: int = 0
    fallback: int = 0
    threads: int = 1
    sha256: str = "none"  # the model file's expected SHA-256; none: not pinned
    on_error: int = 0  # a failed model call on a tile: 0 stops WRF, 1 zero outputs there
    top_fraction: float = TOP_FRACTION  # cloud top: activity >= this x the column's largest
    water_closure: int = 0  # 1: PRATEC = the column's net water loss
    ood_every: int = 0  # cumulus calls between out-of-range logs; 0: the calls in one hour


@dataclass(frozen=True)
class DriverSettings:
    """&driver of wrf_plugin_driver (meanings in its header)."""

    mode: str = "run"
    wrfout: str = ""
    first_frame: int = 2
    ncalls: int = 3
    tiles_x: int = 3
    tiles_y: int = 2
    halo: int = 3
    nan_columns: int = 3
    output: str = ""
    levels: int = 0


def driver_path() -> Path:
    return build_dir() / "bin" / "wrf_plugin_driver"


def _value(v: object) -> str:
    return f"'{v}'" if isinstance(v, str) else str(v)


def write_namelist(path: Path, options: PluginOptions, settings: DriverSettings) -> Path:
    physics = {f"paramlib_cu_{k}": v for k, v in asdict(options).items()}
    groups = {"physics": physics, "driver": asdict(settings)}
    text = "".join(
        f"&{name}\n" + "".join(f"  {k} = {_value(v)},\n" for k, v in values.items()) + "/\n"
        for name, values in groups.items()
    )
    path.write_text(text)
    return path


def run_driver(
    namelist: Path,
    threads: int = 3,
    timeout: float = 600,
    env: Mapping[str, str] | None = None,
    program: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the driver (default: the build's) on a namelist with `threads` OpenMP threads."""
    program = program or driver_path()
    if not program.is_file():
        raise FileNotFoundError(
            f"{program} is not built: cmake --build build --target wrf_plugin_tests"
        )
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), **(env or {})}
    return subprocess.run(
        [str(program), str(namelist)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )


@dataclass
class Parity:
    """Fortran plugin vs PyTorch on the first call: max abs difference per field, the
    tolerance applied, and what the call did."""

    max_abs_diff: dict[str, float] = field(default_factory=dict)
    tolerance: dict[str, float] = field(default_factory=dict)
    columns: int = 0
    recomputed: int = 0
    held: int = 0
    convecting: int = 0

    @property
    def ok(self) -> bool:
        return all(self.max_abs_diff[k] <= self.tolerance[k] for k in self.max_abs_diff)

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values())

    def summary(self) -> str:
        failing = [k for k in self.max_abs_diff if self.max_abs_diff[k] > self.tolerance[k]]
        return (
            f"{self.columns} columns ({self.recomputed} recomputed, {self.held} held,"
            f" {self.convecting} convecting after the call): max |Fortran - PyTorch| ="
            f" {self.worst:.3e} over {len(self.max_abs_diff)} fields (tolerance"
            f" {PARITY_RTOL:g} x each field's largest value)"
            + (f"; exceeded for {failing}" if failing else "")
        )


def columns(da: xr.DataArray) -> np.ndarray:
    """(south_north, level, west_east) or (south_north, west_east) -> (ncol, nlev) in the
    plugin's column order (west_east fastest)."""
    values = np.asarray(da.values, dtype=np.float32)
    if values.ndim == 2:
        return values.reshape(-1, 1)
    return values.transpose(0, 2, 1).reshape(values.shape[0] * values.shape[2], values.shape[1])


def _nint(x: np.ndarray) -> np.ndarray:
    """Fortran NINT: halves away from zero."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def limit_columns(
    ten: dict[str, np.ndarray],
    pratec: np.ndarray,
    state: Mapping[str, np.ndarray],
    period: np.ndarray,
    top_fraction: float = TOP_FRACTION,
    water_closure: bool = False,
) -> np.ndarray:
    """The plugin's physical limits (limit_column in module_cu_paramlib.F) on recomputed
    columns, in place: ten holds the six (ncol, nlev) tendencies, pratec (ncol,), state qv,
    rho and dz8w (ncol, nlev), period (ncol,) the seconds WRF applies them. Returns PRATEC."""
    f32 = np.float32
    activity = np.maximum(np.abs(ten["rthcuten"]), XLV_CP * np.abs(ten["rqvcuten"]))
    threshold = f32(top_fraction) * activity.max(axis=1, keepdims=True)
    marks = (activity > 0) & (activity >= threshold)
    levels = np.arange(1, activity.shape[1] + 1)
    top = np.where(marks, levels, 0).max(axis=1)
    above = levels[None, :] > top[:, None]
    for name in TENDENCIES:
        ten[name] = np.where(above, f32(0), ten[name])
    qv, t = state["qv"], period.astype(f32)[:, None]
    drying = ten["rqvcuten"]
    short = (drying < 0) & (qv + t * drying < 0)
    ratio = np.where(short, np.maximum(qv, f32(0)) / np.where(short, -t * drying, f32(1)), f32(1))
    scale = np.where(short.any(axis=1), ratio.min(axis=1) * DRY_MARGIN, f32(1)).astype(f32)
    for name in TENDENCIES:
        ten[name] = scale[:, None] * ten[name]
    pratec = scale * pratec
    for name in HYDROMETEORS:
        ten[name] = np.maximum(ten[name], f32(0))
    if water_closure:  # summed in float64, as the plugin does
        mass = state["rho"].astype(np.float64) * state["dz8w"]
        loss = -sum((ten[name] * mass).sum(axis=1) for name in TENDENCIES[1:])
        pratec = np.maximum(loss, 0.0)
    return pratec.astype(f32)


def first_call_parity(
    output: Path, model_path: Path, options: PluginOptions | None = None
) -> Parity:
    """Compare the driver's first call (its ``output`` file) with the model run in PyTorch;
    options: the plugin's settings in that run (default: the defaults)."""
    import torch

    from paramlib.export import load_metadata

    metadata = load_metadata(model_path)
    with xr.open_dataset(output) as ds:
        ds = ds.load()
    dt = float(ds.attrs["DT"])
    first = ds.isel(call=0)
    w = columns(ds["w"])
    state = {
        name: columns(ds[name])
        for name in ("u", "v", "th", "t", "qv", "p", "pi", "rho", "dz8w", "hfx", "ust", "pblh")
    }
    state.update(
        xland=columns(ds["xland"]),
        w=(np.float32(0.5) * (w[:, :-1] + w[:, 1:])).astype(np.float32),
        w0avg=columns(first["w0avg"]),  # after MSKF's update, as the model saw it
        pratec_prev=columns(ds["pratec_before"]),
        nca_prev=columns(ds["nca_prev"]),
        **{f"{name}_prev": columns(ds[f"{name}_prev"]) for name in TENDENCIES},
    )
    missing = [f["name"] for f in metadata["inputs"] if f["name"] not in state]
    if missing:
        raise ValueError(f"{model_path}: inputs {missing} are not in {output}")
    inputs = [torch.from_numpy(state[f["name"]]) for f in metadata["inputs"]]
    module = torch.jit.load(str(model_path), map_location="cpu")
    with torch.inference_mode():
        raw = module(*inputs)
    raw = raw if isinstance(raw, (list, tuple)) else [raw]
    predicted = {
        f["name"]: np.asarray(y.numpy()) for f, y in zip(metadata["outputs"], raw, strict=True)
    }

    options = options or PluginOptions(str(model_path))
    nca_before = columns(ds["nca_before"])[:, 0]
    held = nca_before >= 0.5 * dt
    fresh = ~held
    rounded = (_nint(predicted["nca"][:, 0] / np.float32(dt)) * np.float32(dt)).astype(np.float32)
    zeros = np.zeros_like(state["qv"])
    limited = {name: predicted.get(name, zeros) for name in TENDENCIES}
    pratec = predicted["pratec"][:, 0] if "pratec" in predicted else zeros[:, 0]
    period = np.maximum(rounded, np.float32(int(ds.attrs["STEPCU"]) * dt))
    pratec = limit_columns(
        limited, pratec, state, period, options.top_fraction, options.water_closure == 1
    )
    expected: dict[str, np.ndarray] = {}
    for name in TENDENCIES:
        before = columns(ds[f"{name}_prev"])  # held columns kept their (uncounted) tendencies
        expected[name] = np.where(fresh[:, None], limited[name], before)
    expected["pratec"] = np.where(
        fresh, np.maximum(pratec, 0.0), columns(ds["pratec_before"])[:, 0]
    )
    expected["raincv"] = np.where(fresh, expected["pratec"] * np.float32(dt), np.nan)
    expected["nca"] = np.where(fresh & (rounded >= 0.5 * dt), rounded, nca_before)
    # Cloud top and base, 1-based levels: the scheme's diagnosis from the new tendencies.
    nlev = expected["rthcuten"].shape[1]
    levels = np.arange(1, nlev + 1)
    active = (expected["rthcuten"] != 0) | (expected["rqvcuten"] != 0)
    top = np.where(active, levels, 0).max(axis=1)
    heating = expected["rthcuten"] > 0
    base = np.where(heating.any(axis=1), np.argmax(heating, axis=1) + 1, 1)
    expected["cutop"] = np.where(fresh, np.where(top > 0, top, 1), np.nan)
    expected["cubot"] = np.where(fresh, np.where(top > 0, base, nlev + 1), np.nan)

    parity = Parity(columns=int(held.size), recomputed=int(fresh.sum()), held=int(held.sum()))
    for name, want in expected.items():
        got = columns(first[name])
        got = got[:, 0] if want.ndim == 1 else got
        keep = ~np.isnan(want)
        diff = np.abs(got[keep] - want[keep])
        parity.max_abs_diff[name] = float(diff.max()) if diff.size else 0.0
        parity.tolerance[name] = PARITY_RTOL * float(np.abs(want[keep]).max(initial=0.0))
    convecting = (np.abs(expected["rthcuten"]).max(axis=1) > 0) | (expected["nca"] > 0)
    parity.convecting = int(convecting.sum())
    return parity


def state_vs_reader(output: Path, wrfout: Path) -> dict[str, float]:
    """Max relative difference between the state the driver built for its first call and
    paramlib's wrfout reader on the same frame: both follow WRF's phy_prep definitions."""
    from paramlib.data.readers.wrfout import open_wrfout

    with xr.open_dataset(output) as ds:
        ds = ds.load()
    frame = int(ds.attrs["first_frame"]) - 1
    reader = open_wrfout([wrfout]).isel(time=frame).load()
    differences = {}
    for name in ("u", "v", "th", "t", "qv", "p", "pi", "rho", "dz8w", "hfx", "ust", "pblh"):
        ours = columns(ds[name])
        theirs = np.asarray(reader[name].values, dtype=np.float64).reshape(ours.shape)
        scale = np.abs(theirs).max() or 1.0
        differences[name] = float(np.abs(ours - theirs).max() / scale)
    return differences


# --- cost: a tile of plausible columns for wrf_plugin_bench -----------------------------------

POOL = 512
STATE = ["u", "v", "w", "t", "qv", "p", "th", "dz8w", "rho", "pi", "w0avg"]
SURFACE = ["hfx", "ust", "pblh", "xland"]
UNITS = {
    **dict.fromkeys(["u", "v", "w", "w0avg", "ust"], "m s-1"),
    **dict.fromkeys(["t", "th"], "K"),
    **dict.fromkeys(["qv"], "kg kg-1"),
    "p": "Pa",
    "dz8w": "m",
    "rho": "kg m-3",
    "pi": "1",
    "hfx": "W m-2",
    "pblh": "m",
    "xland": "1",
    "rthcuten": "K s-1",
    **dict.fromkeys(TARGETS[1:6], "kg kg-1 s-1"),
    "pratec": "mm s-1",
    "nca": "s",
}
# Order of the pool file (wrf_plugin_bench.F90's header): profiles, then one value per column.
POOL_PROFILES = ["u", "v", "w", "th", "t", "qv", "p", "pi", "rho", "dz8w", "w0avg", *TENDENCIES]
POOL_SURFACE = [*SURFACE, "pratec", "nca"]


def column_pool(nlev: int, n: int = POOL, seed: int = 0) -> dict[str, np.ndarray]:
    """n tropical columns on nlev levels (w on nlev + 1), WRF's definitions (r_d/cp = 2/7)."""
    rng = np.random.default_rng(seed)
    z_w = np.linspace(0.0, 18000.0, nlev + 1)
    z = 0.5 * (z_w[1:] + z_w[:-1])
    warm = rng.normal(0.0, 1.5, (n, 1))
    p = 1.0e5 * np.exp(-z / 7500.0) * (1 + 0.005 * rng.standard_normal((n, 1)))
    t = np.maximum(300.0 + warm - 6.5e-3 * z, 200.0) + 0.3 * rng.standard_normal((n, nlev))
    pi = (p / 1.0e5) ** (2.0 / 7.0)
    es = 611.2 * np.exp(17.67 * (t - 273.15) / (t - 29.65))
    qv = rng.uniform(0.4, 0.95, (n, nlev)) * 0.622 * es / (p - es)
    w = 0.3 * rng.standard_normal((n, nlev + 1))
    active = rng.random(n) < 0.3
    data = {
        "u": 5 + 3 * rng.standard_normal((n, nlev)),
        "v": 3 * rng.standard_normal((n, nlev)),
        "w": w,
        "th": t / pi,
        "t": t,
        "qv": qv,
        "p": p * np.ones((n, nlev)),
        "pi": pi,
        "rho": p / (287.0 * t * (1 + 0.608 * qv)),
        "dz8w": np.broadcast_to(np.diff(z_w), (n, nlev)),
        "w0avg": 0.05 * rng.standard_normal((n, nlev)),
        "hfx": rng.normal(20, 10, n),
        "ust": rng.uniform(0.1, 0.5, n),
        "pblh": rng.uniform(300, 1500, n),
        "xland": np.full(n, 2.0),
        "pratec": active * rng.uniform(0, 1e-3, n),
        "nca": np.where(active, 30.0 * rng.integers(1, 40, n), -100.0),
    }
    for i, name in enumerate(TENDENCIES):
        data[name] = active[:, None] * rng.normal(0.0, 1e-4 if i == 0 else 1e-7, (n, nlev))
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in data.items()}


def write_pool(path: Path, pool: dict[str, np.ndarray]) -> Path:
    with path.open("wb") as f:
        np.array([pool["t"].shape[1], pool["t"].shape[0]], dtype="<i4").tofile(f)
        for name in (*POOL_PROFILES, *POOL_SURFACE):
            pool[name].astype("<f4").tofile(f)
    return path


def model_inputs(pool: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The pool as the plugin gives it to the model: w at mass levels, X_prev = X."""
    fields = {name: pool[name] for name in (*STATE, *SURFACE)}
    fields["w"] = 0.5 * (pool["w"][:, :-1] + pool["w"][:, 1:])
    fields.update({f"{name}_prev": pool[name] for name in TARGETS})
    return fields


def bench_plugin(
    model: Path, pool_file: Path, nx: int, ny: int, calls: int, tiles: tuple[int, int] = (1, 1)
) -> dict:
    """wrf_plugin_bench on an nx x ny patch from the pool, split into tiles[0] x tiles[1] WRF
    tiles run one after another: its JSON line (per_column_us ...)."""
    program = build_dir() / "bin" / "wrf_plugin_bench"
    if not program.is_file():
        raise FileNotFoundError(
            f"{program} is not built: cmake --build build --target wrf_plugin_bench"
        )
    command = [str(program), str(model), str(pool_file), str(nx), str(ny), str(calls), "0"]
    command += [str(n) for n in tiles]
    result = subprocess.run(command, capture_output=True, text=True, env=os.environ)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])

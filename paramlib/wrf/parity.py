"""The PyTorch reference of the WRF plugin's first call.

`first_call_parity` rebuilds the model inputs from the driver's output file the way the plugin
does (w at mass levels, W0AVG's running mean, the scheme's *_prev copies), runs the TorchScript
file in PyTorch and applies the plugin's rules (held columns untouched, the physical limits of
`limit_columns`, NCA rounded to a multiple of DT, PRATEC >= 0, RAINCV = PRATEC DT).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from paramlib.wrf.driver import (
    DRY_MARGIN,
    HYDROMETEORS,
    TENDENCIES,
    TOP_FRACTION,
    XLV_CP,
    PluginOptions,
)

# Per field: max |Fortran - PyTorch| allowed, relative to the field's largest PyTorch value.
# The bridge runs the same libtorch kernels on the same batch, so 0 is expected.
PARITY_RTOL = 1e-6


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

"""Synthetic WRF history files (``wrfout_d01_<YYYY-MM-DD_HH:MM:SS>``) from gridded column data.

The layout copies real WRF v4.7.1 output (the MSKF runs in ``../shared/data/wrf_mskf``): netCDF-4,
dims ``Time`` (unlimited), ``DateStrLen`` = 19, ``west_east``, ``south_north``, ``bottom_top``
and their ``_stag`` variants, a ``Times`` character array, float32 variables with WRF's
attributes (FieldType 104, MemoryOrder, description, units, stagger, coordinates), C-grid
staggering (U on x faces, V on y faces, W and geopotential on full levels), a base state
(PB, PHB, MUB) with perturbations (P, PH, MU), T = dry potential temperature - 300 K, mixing
ratios, and WRF's global attributes. TITLE and DATASET_NOTE say that the data are synthetic
and which scheme made the cumulus fields.

Files: like WRF with ``frames_per_outfile``, each file holds ``frames_per_file`` consecutive
frames (default 12: one file per hour of 5-minute output) and is named after its first frame.
Each file is written to a temporary name in the same folder, then renamed.

How the fields are built (and where they differ from a WRF run):
    * the vertical coordinate is WRF's terrain-following eta (HYBRID_OPT = 0), taken from the
      full-level pressure ``p_w``: ``p_w = ZNW (MU + MUB) + P_TOP`` must hold with one ZNW and
      one P_TOP for the whole set; ZNU is the mid-point of ZNW, as in WRF. MU + MUB is the
      column mass p_w(surface) - P_TOP of *moist* air (WRF's is dry air), and P + PB = P_HYD =
      the input pressure (hydrostatic; no non-hydrostatic perturbation).
    * the base state is WRF's real-data reference atmosphere over flat ground at sea level
      (p00 = 1e5 Pa, t00 = 290 K, lapse 50 K, isothermal 200 K above): MUB = p00 - P_TOP,
      PB = ZNU MUB + P_TOP, PHB from the hydrostatic base temperature.
    * geopotential PH + PHB on full levels integrates the hypsometric equation up from 0 at
      the surface with the virtual temperature of each layer.
    * U and V are staggered so that WRF's destaggering (the mean of the two faces) returns the
      mass-point wind exactly; of the one-parameter family of such face values the smoothest
      (least-squares first differences) is taken. The two-point mean cannot carry a 2-dx wave,
      so winds must be smooth on the grid (noise near the grid scale is amplified). W is given
      on full levels.
    * RAINCV = PRATEC x DT, as WRF's Kain-Fritsch schemes write it.

The cumulus fields follow MSKF's (cu_physics = 11) conventions so that readers and emulators built
for the real files read this set alike: ``cumulus_to_wrf`` turns a scheme's output into WRF's
fields (theta tendency, mixing-ratio tendency, 1-based CUTOP/CUBOT), ``nca_hold`` applies
WRF's NCA countdown between cumulus calls (see the README of ``wrf_mskf``, "How to read the MSKF
fields" and "Using it for an emulator") and ``w0avg_update`` is WRF's running mean of w.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

import netCDF4
import numpy as np

from paramlib.constants import EPSILON, KAPPA, P0, RD

DATE_FORMAT = "%Y-%m-%d_%H:%M:%S"
THETA_OFFSET = 300.0  # K: WRF's T is theta - 300 K
NCA_NEVER = -100.0  # s: WRF's initial NCA, a column that never convected
# WRF's real-data base state (namelist defaults base_temp, base_lapse, iso_temp).
BASE_T00 = 290.0
BASE_LAPSE = 50.0
BASE_TISO = 200.0

# name -> (grid, MemoryOrder, description, units, stagger), as in WRF v4.7.1 history output.
_XYZ, _XY, _Z = "XYZ", "XY ", "Z  "
_VARIABLES: dict[str, tuple[str, str, str, str, str]] = {
    "XTIME": ("time", "0  ", "minutes since {start}", "minutes since {start}", ""),
    "ZNU": ("z", _Z, "eta values on half (mass) levels", "", ""),
    "ZNW": ("zw", _Z, "eta values on full (w) levels", "", "Z"),
    "P_TOP": ("time", "0  ", "PRESSURE TOP OF THE MODEL", "Pa", ""),
    "U": ("u", _XYZ, "x-wind component", "m s-1", "X"),
    "V": ("v", _XYZ, "y-wind component", "m s-1", "Y"),
    "W": ("w", _XYZ, "z-wind component", "m s-1", "Z"),
    "T": ("3d", _XYZ, "perturbation potential temperature theta-t0", "K", ""),
    "P": ("3d", _XYZ, "perturbation pressure", "Pa", ""),
    "PB": ("3d", _XYZ, "BASE STATE PRESSURE", "Pa", ""),
    "P_HYD": ("3d", _XYZ, "hydrostatic pressure", "Pa", ""),
    "PH": ("w", _XYZ, "perturbation geopotential", "m2 s-2", "Z"),
    "PHB": ("w", _XYZ, "base-state geopotential", "m2 s-2", "Z"),
    "QVAPOR": ("3d", _XYZ, "Water vapor mixing ratio", "kg kg-1", ""),
    "MU": ("2d", _XY, "perturbation dry air mass in column", "Pa", ""),
    "MUB": ("2d", _XY, "base state dry air mass in column", "Pa", ""),
    "HFX": ("2d", _XY, "UPWARD HEAT FLUX AT THE SURFACE", "W m-2", ""),
    "QFX": ("2d", _XY, "UPWARD MOISTURE FLUX AT THE SURFACE", "kg m-2 s-1", ""),
    "UST": ("2d", _XY, "U* IN SIMILARITY THEORY", "m s-1", ""),
    "PBLH": ("2d", _XY, "PBL HEIGHT", "m", ""),
    "ZOL": ("2d", _XY, "z/L", "", ""),
    "XLAND": ("2d", _XY, "LAND MASK (1 FOR LAND, 2 FOR WATER)", "", ""),
    "SST": ("2d", _XY, "SEA SURFACE TEMPERATURE", "K", ""),
    "RTHCUTEN": ("3d", _XYZ, "THETA TENDENCY DUE TO CUMULUS SCHEME", "K s-1", ""),
    "RQVCUTEN": ("3d", _XYZ, "Q_V TENDENCY DUE TO CUMULUS SCHEME", "kg kg-1 s-1", ""),
    "RQCCUTEN": ("3d", _XYZ, "Q_C TENDENCY DUE TO CUMULUS SCHEME", "kg kg-1 s-1", ""),
    "RQRCUTEN": ("3d", _XYZ, "Q_R TENDENCY DUE TO CUMULUS SCHEME", "kg kg-1 s-1", ""),
    "RQICUTEN": ("3d", _XYZ, "Q_I TENDENCY DUE TO CUMULUS SCHEME", "kg kg-1 s-1", ""),
    "RQSCUTEN": ("3d", _XYZ, "Q_S TENDENCY DUE TO CUMULUS SCHEME", "kg kg-1 s-1", ""),
    "RUCUTEN": ("3d", _XYZ, "X WIND TENDENCY DUE TO CUMULUS PARAMETERIZATION", "m s-2", ""),
    "RVCUTEN": ("3d", _XYZ, "Y WIND TENDENCY DUE TO CUMULUS PARAMETERIZATION", "m s-2", ""),
    "RAINCV": ("2d", _XY, "TIME-STEP CUMULUS PRECIPITATION", "mm", ""),
    "PRATEC": ("2d", _XY, "PRECIP RATE FROM CUMULUS SCHEME", "mm s-1", ""),
    "NCA": ("2d", _XY, "COUNTER OF THE CLOUD RELAXATION TIME IN KF CUMULUS SCHEME", "", ""),
    "W0AVG": ("3d", _XYZ, "AVERAGE VERTICAL VELOCITY FOR KF CUMULUS SCHEME", "m s-1", ""),
    "CUTOP": ("2d", _XY, "TOP OF CONVECTION LEVEL FROM CUMULUS PAR", "", ""),
    "CUBOT": ("2d", _XY, "BOT OF CONVECTION LEVEL FROM CUMULUS PAR", "", ""),
}
_DIMS = {
    "time": ("Time",),
    "z": ("Time", "bottom_top"),
    "zw": ("Time", "bottom_top_stag"),
    "3d": ("Time", "bottom_top", "south_north", "west_east"),
    "w": ("Time", "bottom_top_stag", "south_north", "west_east"),
    "u": ("Time", "bottom_top", "south_north", "west_east_stag"),
    "v": ("Time", "bottom_top", "south_north_stag", "west_east"),
    "2d": ("Time", "south_north", "west_east"),
}
_COORDINATES = {"u": "XLONG_U XLAT_U XTIME", "v": "XLONG_V XLAT_V XTIME"}
CUMULUS_TENDENCIES = ("RTHCUTEN", "RQVCUTEN", "RQCCUTEN", "RQRCUTEN", "RQICUTEN", "RQSCUTEN")
# Fields the caller supplies in WrfFrames.fields; the others are built from the state.
REQUIRED_FIELDS = (
    *CUMULUS_TENDENCIES,
    *("PRATEC", "NCA", "W0AVG", "CUTOP", "CUBOT", "HFX", "UST", "PBLH", "XLAND"),
)
OPTIONAL_FIELDS = ("QFX", "ZOL", "RUCUTEN", "RVCUTEN", "SST")


@dataclasses.dataclass(frozen=True)
class WrfConfig:
    """Grid, time step and labels of a synthetic WRF set (values go to the global attributes)."""

    simulation_start: datetime  # START_DATE and XTIME's origin: the same for every file of a set
    scheme: str  # what made the cumulus fields, e.g. "Emanuel (climt 0.31.0)"
    dx: float = 5000.0  # m
    dy: float = 5000.0  # m
    dt: float = 30.0  # s, the model step (DT)
    cudt_min: float = 5.0  # minutes between cumulus calls (CUDT)
    cu_physics: int = 11  # the layout of the cumulus fields is MSKF's
    mp_physics: int = 0  # the column model has no WRF microphysics, PBL or surface-layer option
    bl_pbl_physics: int = 0
    sf_sfclay_physics: int = 0
    frames_per_file: int = 12
    deflate_level: int = 0  # 0: uncompressed, like WRF's default netCDF output
    case: str = "testbed"
    note: str = ""  # appended to DATASET_NOTE


@dataclasses.dataclass(frozen=True)
class WrfFrames:
    """Gridded data for ``nt`` frames: 3-D arrays ``(nt, nz, ny, nx)``, level 0 the lowest.

    ``p_w`` and ``w`` are on full levels ``(nt, nz + 1, ny, nx)``; ``u`` and ``v`` at mass points;
    ``q`` is specific humidity (written as the mixing ratio QVAPOR). ``fields`` holds WRF-named
    fields already in WRF's form: ``REQUIRED_FIELDS`` and any of ``OPTIONAL_FIELDS``, 3-D
    ``(nt, nz, ny, nx)`` or 2-D ``(nt, ny, nx)``.
    """

    times: Sequence[datetime]
    T: np.ndarray  # K
    q: np.ndarray  # kg kg-1, specific humidity
    p: np.ndarray  # Pa, mass levels
    p_w: np.ndarray  # Pa, full levels
    u: np.ndarray  # m s-1
    v: np.ndarray  # m s-1
    w: np.ndarray  # m s-1, full levels
    fields: Mapping[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class HeldCumulus:
    """What WRF writes at each cumulus call after applying the NCA countdown."""

    nca: np.ndarray  # (ncall, ncol) s, the frame's NCA
    fresh: np.ndarray  # (ncall, ncol) bool: the scheme evaluated the column at this call
    tendencies: dict[str, np.ndarray]
    carried: dict[str, np.ndarray]


def mixing_ratio(q: np.ndarray) -> np.ndarray:
    """Water-vapour mixing ratio (kg per kg of dry air) from specific humidity."""
    return q / (1.0 - q)


def exner(p: np.ndarray) -> np.ndarray:
    """WRF's Exner function (p / 1e5 Pa)^(Rd/cp)."""
    return (np.asarray(p) / P0) ** KAPPA


def cumulus_to_wrf(
    p: np.ndarray,
    q: np.ndarray,
    dTdt: np.ndarray,
    dqdt: np.ndarray,
    precip: np.ndarray,
    triggered: np.ndarray,
    cloud_base_level: np.ndarray,
    cloud_top_level: np.ndarray,
    nz: int,
) -> dict[str, np.ndarray]:
    """A scheme's output at one or more calls in WRF's form (elementwise, any layout).

    ``p`` (Pa), ``q`` (specific humidity), ``dTdt`` (K s-1), ``dqdt`` (specific humidity, s-1) are
    profiles; ``precip`` (kg m-2 s-1), ``triggered`` and the 0-based cloud levels are per column.
    Returns RTHCUTEN = dTdt / Exner, RQVCUTEN = d(q / (1 - q))/dt, zero condensate tendencies
    (the Emanuel scheme rains out or evaporates its condensate), PRATEC (mm s-1), and CUTOP/CUBOT
    as 1-based levels, reset to 1 and nz + 1 where the scheme found no convection, as MSKF does.
    """
    zeros = np.zeros_like(dTdt, dtype=np.float64)
    return {
        "RTHCUTEN": dTdt / exner(p),
        "RQVCUTEN": dqdt / (1.0 - q) ** 2,
        "RQCCUTEN": zeros,
        "RQRCUTEN": zeros,
        "RQICUTEN": zeros,
        "RQSCUTEN": zeros,
        "PRATEC": np.asarray(precip, dtype=np.float64),
        "CUTOP": np.where(triggered, np.asarray(cloud_top_level) + 1, 1).astype(np.float64),
        "CUBOT": np.where(triggered, np.asarray(cloud_base_level) + 1, nz + 1).astype(np.float64),
    }


def w0avg_update(previous: np.ndarray, w_mass: np.ndarray, stepcu: int) -> np.ndarray:
    """W0AVG after a cumulus call: WRF's running mean (previous (2n - 1) + w) / 2n, n = STEPCU."""
    window = 2.0 * stepcu
    return (previous * (window - 1.0) + w_mass) / window


def nca_hold(
    triggered: np.ndarray,
    timescale_s: np.ndarray,
    tendencies: Mapping[str, np.ndarray],
    carried: Mapping[str, np.ndarray],
    dt_s: float,
    cudt_s: float,
    column_mass: np.ndarray | None = None,
) -> HeldCumulus:
    """WRF's cumulus-call semantics for frames written right after each call.

    Inputs hold the scheme's output for every column at every call, as if it evaluated them
    all: ``triggered`` and ``timescale_s`` (convective time scale, s) are ``(ncall, ncol)``;
    ``tendencies`` (zeroed when a convective period ends) and ``carried`` (kept until the column
    is evaluated again: PRATEC, CUTOP, CUBOT, RUCUTEN, RVCUTEN) are ``(ncall, ncol, ...)``.

    NCA starts at -100 s (never convected), so the first call evaluates every column. NCA counts
    down by ``dt`` every step and a frame shows it one step after its call. At a call, WRF skips
    a column whose NCA before the call's step is still >= dt / 2, i.e. whose NCA in the previous
    frame exceeds ``cudt - dt / 2`` (so >= 300 s for cudt = 300 s, dt = 30 s). Otherwise the column
    is *fresh*: it takes the scheme's output, and NCA = the time scale in whole steps (at least
    two, so that the frame still shows the period) if it triggers, else NCA counts down to 0
    (or stays -100). A skipped column keeps its previous tendencies, rescaled by previous over
    current ``column_mass`` (MU + MUB, optional) as WRF couples them, unless its NCA runs out
    in the call's step, which zeroes them (NCA = 0: "ended"); ``carried`` fields keep their
    previous values either way.
    """
    triggered = np.asarray(triggered, dtype=bool)
    if triggered.ndim != 2 or np.shape(timescale_s) != triggered.shape:
        raise ValueError(
            f"nca_hold: triggered and timescale_s must both be (ncall, ncol); got "
            f"{triggered.shape} and {np.shape(timescale_s)}"
        )
    for name, arr in {**tendencies, **carried}.items():
        if np.shape(arr)[:2] != triggered.shape:
            raise ValueError(
                f"nca_hold: {name} must start with the shape {triggered.shape} of triggered, "
                f"got {np.shape(arr)}"
            )
    if column_mass is not None and np.shape(column_mass) != triggered.shape:
        raise ValueError(
            f"nca_hold: column_mass must be (ncall, ncol) {triggered.shape}, "
            f"got {np.shape(column_mass)}"
        )
    if not 0 < dt_s <= cudt_s:
        raise ValueError(f"nca_hold: need 0 < dt_s <= cudt_s, got dt_s={dt_s}, cudt_s={cudt_s}")
    steps = np.maximum(np.rint(np.asarray(timescale_s, dtype=np.float64) / dt_s), 2.0)
    nca = np.empty(triggered.shape)
    fresh = np.empty(triggered.shape, dtype=bool)
    held_t = {name: np.array(arr, dtype=np.float64) for name, arr in tendencies.items()}
    held_c = {name: np.array(arr, dtype=np.float64) for name, arr in carried.items()}
    previous = np.full(triggered.shape[1], NCA_NEVER)
    for k in range(triggered.shape[0]):
        # NCA just before the call's step, one call interval less one step after the last frame.
        at_call = np.where(previous > 0, np.maximum(previous - (cudt_s - dt_s), 0.0), previous)
        fresh[k] = at_call < 0.5 * dt_s
        after_step = at_call - dt_s
        ended = ~fresh[k] & (after_step <= 0.0)
        nca[k] = np.where(
            fresh[k],
            np.where(triggered[k], (steps[k] - 1.0) * dt_s, np.minimum(previous, 0.0)),
            np.maximum(after_step, 0.0),
        )
        if not fresh[k].all():
            scale = 1.0 if column_mass is None else column_mass[k - 1] / column_mass[k]
            for arr in held_t.values():
                kept = np.where(ended, 0.0, scale)[_trailing(arr)] * arr[k - 1]
                arr[k] = np.where(fresh[k][_trailing(arr)], arr[k], kept)
            for arr in held_c.values():
                arr[k] = np.where(fresh[k][_trailing(arr)], arr[k], arr[k - 1])
        previous = nca[k]
    return HeldCumulus(nca=nca, fresh=fresh, tendencies=held_t, carried=held_c)


def _trailing(arr: np.ndarray) -> tuple:
    """Index that gives a per-column (ncol,) array the trailing axes of one call of ``arr``."""
    return (slice(None),) + (None,) * (arr.ndim - 2)


def write_wrfout(out_dir: str | os.PathLike, frames: WrfFrames, config: WrfConfig) -> list[Path]:
    """Write ``frames`` as ``wrfout_d01_<first frame time>`` files; returns their paths."""
    nt, nz, ny, nx = _check_frames(frames)
    p_top, znw, znu = eta_levels(frames.p_w)
    pb, phb, mub = _base_state(znu, znw, p_top)
    qv = mixing_ratio(frames.q)
    theta = frames.T / exner(frames.p)
    start = config.simulation_start
    xtime = np.array([(t - start).total_seconds() / 60.0 for t in frames.times])
    data: dict[str, np.ndarray] = {
        "XTIME": xtime,
        "ZNU": np.broadcast_to(znu, (nt, nz)),
        "ZNW": np.broadcast_to(znw, (nt, nz + 1)),
        "P_TOP": np.full(nt, p_top),
        "U": _stagger(frames.u, axis=3),
        "V": _stagger(frames.v, axis=2),
        "W": frames.w,
        "T": theta - THETA_OFFSET,
        "P": frames.p - pb[:, None, None],
        "PB": np.broadcast_to(pb[:, None, None], frames.p.shape),
        "P_HYD": frames.p,
        "PH": _geopotential(frames.T, qv, frames.p_w) - phb[:, None, None],
        "PHB": np.broadcast_to(phb[:, None, None], frames.p_w.shape),
        "QVAPOR": qv,
        "MU": frames.p_w[:, 0] - p_top - mub,
        "MUB": np.full((nt, ny, nx), mub),
        "RAINCV": frames.fields["PRATEC"] * config.dt,
        **frames.fields,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for first in range(0, nt, config.frames_per_file):
        chunk = slice(first, min(first + config.frames_per_file, nt))
        path = out / f"wrfout_d01_{frames.times[first].strftime(DATE_FORMAT)}"
        _write_file(path, frames.times[chunk], {k: v[chunk] for k, v in data.items()}, config)
        paths.append(path)
    return paths


def _check_frames(frames: WrfFrames) -> tuple[int, int, int, int]:
    if np.ndim(frames.T) != 4:
        raise ValueError(f"WrfFrames.T must be (nt, nz, ny, nx), got shape {np.shape(frames.T)}")
    nt, nz, ny, nx = np.shape(frames.T)
    expected = {
        "q": (nt, nz, ny, nx),
        "p": (nt, nz, ny, nx),
        "u": (nt, nz, ny, nx),
        "v": (nt, nz, ny, nx),
        "p_w": (nt, nz + 1, ny, nx),
        "w": (nt, nz + 1, ny, nx),
    }
    for name, shape in expected.items():
        if np.shape(getattr(frames, name)) != shape:
            raise ValueError(
                f"WrfFrames.{name} must have shape {shape}, got {np.shape(getattr(frames, name))}"
            )
    if len(frames.times) != nt:
        raise ValueError(f"WrfFrames.times must have {nt} entries, got {len(frames.times)}")
    missing = [name for name in REQUIRED_FIELDS if name not in frames.fields]
    unknown = [name for name in frames.fields if name not in REQUIRED_FIELDS + OPTIONAL_FIELDS]
    if missing or unknown:
        raise ValueError(
            f"WrfFrames.fields: missing {missing}, not accepted {unknown} (RAINCV is written "
            f"as PRATEC x DT; allowed: {REQUIRED_FIELDS + OPTIONAL_FIELDS})"
        )
    for name, arr in frames.fields.items():
        shape = (nt, nz, ny, nx) if _VARIABLES[name][0] == "3d" else (nt, ny, nx)
        if np.shape(arr) != shape:
            raise ValueError(f"WrfFrames.fields[{name!r}] must be {shape}, got {np.shape(arr)}")
    for name in ("T", "q", "p", "p_w", "u", "v", "w"):
        if not np.all(np.isfinite(getattr(frames, name))):
            raise ValueError(f"WrfFrames.{name} has non-finite values")
    if np.any(np.diff(frames.p_w, axis=1) >= 0) or np.any(frames.p_w[:, -1] <= 0):
        raise ValueError("WrfFrames.p_w must decrease upward (level 0 = surface) to a top > 0 Pa")
    return nt, nz, ny, nx


def eta_levels(p_w: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """P_TOP, ZNW and ZNU (the mid-points of ZNW, as in WRF) from full-level pressure
    ``(nt, nz + 1, ny, nx)``, which must be p_w = ZNW (p_sfc - P_TOP) + P_TOP."""
    p_top = float(p_w[:, -1].mean())
    if np.abs(p_w[:, -1] - p_top).max() > 1e-6 * p_top:
        raise ValueError(
            "WrfFrames.p_w: the top pressure must be one value (WRF's P_TOP) for every column "
            f"and frame; got {p_w[:, -1].min()}..{p_w[:, -1].max()} Pa"
        )
    eta = (p_w - p_top) / (p_w[:, :1] - p_top)
    znw = eta.mean(axis=(0, 2, 3))
    if np.abs(eta - znw[None, :, None, None]).max() > 1e-6:
        raise ValueError(
            "WrfFrames.p_w: levels must be terrain-following with one eta per level, "
            "p_w = ZNW (p_sfc - P_TOP) + P_TOP (WRF's HYBRID_OPT = 0)"
        )
    return p_top, znw, 0.5 * (znw[:-1] + znw[1:])


def _base_state(
    znu: np.ndarray, znw: np.ndarray, p_top: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """PB (nz,), PHB (nz + 1,) and MUB of WRF's real-data reference atmosphere at sea level."""
    mub = P0 - p_top
    pb = znu * mub + p_top
    pb_w = znw * mub + p_top
    t_base = np.maximum(BASE_TISO, BASE_T00 + BASE_LAPSE * np.log(pb / P0))
    phb = np.concatenate([[0.0], np.cumsum(RD * t_base * np.log(pb_w[:-1] / pb_w[1:]))])
    return pb, phb, mub


def _geopotential(T: np.ndarray, qv: np.ndarray, p_w: np.ndarray) -> np.ndarray:
    """Geopotential on full levels, 0 at the surface, by the hypsometric equation."""
    tv = T * (1.0 + qv / EPSILON) / (1.0 + qv)
    layers = RD * tv * np.log(p_w[:, :-1] / p_w[:, 1:])
    return np.concatenate([np.zeros_like(p_w[:, :1]), np.cumsum(layers, axis=1)], axis=1)


def _stagger(centre: np.ndarray, axis: int) -> np.ndarray:
    """Face values whose neighbour means are exactly ``centre`` along ``axis`` (one more point).

    Faces f satisfy f[i] + f[i + 1] = 2 c[i], which fixes them up to an alternating term
    a (-1)^i; a is chosen to minimise the sum of squared differences of neighbouring faces.
    """
    c = np.moveaxis(np.asarray(centre, dtype=np.float64), axis, -1)
    n = c.shape[-1]
    sign = (-1.0) ** np.arange(n + 1)
    # With f[0] = 0: f[i] = 2 sum_{j<i} (-1)^(i-1-j) c[j] = 2 (-1)^(i-1) sum_{j<i} (-1)^j c[j].
    partial = np.concatenate([np.zeros_like(c[..., :1]), np.cumsum(sign[:-1] * c, axis=-1)], -1)
    particular = -2.0 * sign * partial
    diffs = np.diff(particular, axis=-1)
    a = (diffs * sign[:-1]).sum(axis=-1, keepdims=True) / (2.0 * n)
    return np.moveaxis(particular + a * sign, -1, axis)


def _write_file(
    path: Path, times: Sequence[datetime], data: Mapping[str, np.ndarray], config: WrfConfig
) -> None:
    nt, nz, ny, nx = data["T"].shape
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
            for name, size in (
                ("Time", None),
                ("DateStrLen", 19),
                ("west_east", nx),
                ("south_north", ny),
                ("bottom_top", nz),
                ("bottom_top_stag", nz + 1),
                ("west_east_stag", nx + 1),
                ("south_north_stag", ny + 1),
            ):
                nc.createDimension(name, size)
            nc.setncatts(_global_attributes(config, nx, ny, nz))
            chars = nc.createVariable("Times", "S1", ("Time", "DateStrLen"))
            chars[:] = netCDF4.stringtochar(
                np.array([t.strftime(DATE_FORMAT) for t in times], dtype="S19")
            )
            start = config.simulation_start.strftime("%Y-%m-%d %H:%M:%S")
            for name, values in data.items():
                grid, order, description, units, stagger = _VARIABLES[name]
                var = nc.createVariable(
                    name,
                    "f4",
                    _DIMS[grid],
                    zlib=config.deflate_level > 0,
                    complevel=max(config.deflate_level, 1),
                    shuffle=config.deflate_level > 0,
                )
                attrs = {
                    "FieldType": np.int32(104),
                    "MemoryOrder": order,
                    "description": description.format(start=start),
                    "units": units.format(start=start),
                    "stagger": stagger,
                }
                if len(_DIMS[grid]) > 2:
                    attrs["coordinates"] = _COORDINATES.get(grid, "XLONG XLAT XTIME")
                var.setncatts(attrs)
                var[:] = np.asarray(values, dtype=np.float32)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _global_attributes(config: WrfConfig, nx: int, ny: int, nz: int) -> dict[str, object]:
    start = config.simulation_start.strftime(DATE_FORMAT)
    i32, f32 = np.int32, np.float32
    return {
        "TITLE": f" SYNTHETIC WRF-FORMAT OUTPUT (paramlib testbed; cumulus: {config.scheme}), "
        "NOT WRF MODEL OUTPUT",
        "START_DATE": start,
        "SIMULATION_START_DATE": start,
        "WEST-EAST_GRID_DIMENSION": i32(nx + 1),
        "SOUTH-NORTH_GRID_DIMENSION": i32(ny + 1),
        "BOTTOM-TOP_GRID_DIMENSION": i32(nz + 1),
        "DX": f32(config.dx),
        "DY": f32(config.dy),
        "GRIDTYPE": "C",
        "MP_PHYSICS": i32(config.mp_physics),
        "RA_LW_PHYSICS": i32(0),
        "RA_SW_PHYSICS": i32(0),
        "SF_SFCLAY_PHYSICS": i32(config.sf_sfclay_physics),
        "SF_SURFACE_PHYSICS": i32(0),
        "BL_PBL_PHYSICS": i32(config.bl_pbl_physics),
        "CU_PHYSICS": i32(config.cu_physics),
        "DT": f32(config.dt),
        "CUDT": f32(config.cudt_min),
        "WEST-EAST_PATCH_START_UNSTAG": i32(1),
        "WEST-EAST_PATCH_END_UNSTAG": i32(nx),
        "WEST-EAST_PATCH_START_STAG": i32(1),
        "WEST-EAST_PATCH_END_STAG": i32(nx + 1),
        "SOUTH-NORTH_PATCH_START_UNSTAG": i32(1),
        "SOUTH-NORTH_PATCH_END_UNSTAG": i32(ny),
        "SOUTH-NORTH_PATCH_START_STAG": i32(1),
        "SOUTH-NORTH_PATCH_END_STAG": i32(ny + 1),
        "BOTTOM-TOP_PATCH_START_UNSTAG": i32(1),
        "BOTTOM-TOP_PATCH_END_UNSTAG": i32(nz),
        "BOTTOM-TOP_PATCH_START_STAG": i32(1),
        "BOTTOM-TOP_PATCH_END_STAG": i32(nz + 1),
        "GRID_ID": i32(1),
        "PARENT_ID": i32(0),
        "MAP_PROJ": i32(0),
        "MAP_PROJ_CHAR": "Cartesian",
        "HYBRID_OPT": i32(0),
        "DATASET_CASE": config.case,
        "DATASET_NOTE": (
            "Synthetic data in WRF history format from the paramlib testbed, not produced by "
            f"the WRF model. Cumulus fields (R*CUTEN, PRATEC, RAINCV, NCA, CUTOP, CUBOT) were "
            f"computed by {config.scheme} and held between cumulus calls with WRF's NCA "
            f"countdown, in the layout of MSKF (cu_physics = 11) output; CU_PHYSICS = "
            f"{config.cu_physics} names that layout, not the scheme. MU + MUB is the moist "
            "column mass p_sfc - P_TOP; P + PB = P_HYD is hydrostatic. " + config.note
        ).strip(),
    }

"""WRF's idealized ``input_sounding`` and the soundings of the real-WRF check.

Format (``module_initialize_ideal``'s ``read_sounding``): a first line with surface pressure
(hPa), potential temperature (K) and water vapour mixing ratio (g/kg); then one line per height:
z (m), theta (K), qv (g/kg), u, v (m/s). WRF reads it list-directed, so any number format works.

The variants (the shared data's README, ``../shared/data/wrf_mskf/README.md``, defines qv110):

- ``qv110``: qv x 1.1 below 3 km, the factor back to 1.0 linearly at 4 km, never above 98 %
  relative humidity (a level already moister keeps its qv);
- ``plus2k``, ``plus4k``: temperature + 2 K / + 4 K at every height with relative humidity held
  and pressure hydrostatic from the same 1000 hPa surface pressure. These are test sets only.

Pressure comes from the hydrostatic Exner equation d(pi)/dz = -g / (cp theta_v), integrated
from the surface (trapezoids between the sounding's heights), with the virtual potential
temperature of moist air theta (1 + qv / eps) / (1 + qv). Relative humidity is over liquid water
(Bolton 1980), as in paramlib's models.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from paramlib.atomic import write_atomic
from paramlib.constants import CP, EPSILON, GRAVITY, KAPPA, P0

VARIANTS = ("ctl", "qv110", "plus2k", "plus4k")
WARMING_K = {"plus2k": 2.0, "plus4k": 4.0}
MOIST_FACTOR, MOIST_BELOW_M, MOIST_TO_M, RH_CAP = 1.1, 3000.0, 4000.0, 0.98


@dataclass(frozen=True)
class Sounding:
    """Heights from the surface (index 0: the surface line, z = 0), SI units except qv_gkg."""

    p_surface_hpa: float
    z: np.ndarray  # m
    theta: np.ndarray  # K
    qv_gkg: np.ndarray  # g/kg
    u: np.ndarray  # m/s (the surface line has none: WRF does not read it; copied from level 1)
    v: np.ndarray


def read_sounding(path: str | os.PathLike[str]) -> Sounding:
    rows = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    if len(rows) < 3 or len(rows[0]) != 3 or any(len(r) != 5 for r in rows[1:]):
        raise ValueError(
            f"{path}: not an input_sounding (a line 'p theta qv', then lines 'z theta qv u v')"
        )
    surface = [float(x) for x in rows[0]]
    levels = np.array(rows[1:], dtype=float)
    return Sounding(
        p_surface_hpa=surface[0],
        z=np.concatenate([[0.0], levels[:, 0]]),
        theta=np.concatenate([[surface[1]], levels[:, 1]]),
        qv_gkg=np.concatenate([[surface[2]], levels[:, 2]]),
        u=np.concatenate([levels[:1, 3], levels[:, 3]]),
        v=np.concatenate([levels[:1, 4], levels[:, 4]]),
    )


def sounding_text(s: Sounding) -> str:
    # Nine significant digits: the transforms survive the text (float64 -> text -> float64).
    lines = [f"{s.p_surface_hpa:.9g} {s.theta[0]:.9g} {s.qv_gkg[0]:.9g}"]
    lines += [
        f"{z:.9g} {th:.9g} {q:.9g} {u:.9g} {v:.9g}"
        for z, th, q, u, v in zip(s.z[1:], s.theta[1:], s.qv_gkg[1:], s.u[1:], s.v[1:], strict=True)
    ]
    return "\n".join(lines) + "\n"


def write_sounding(s: Sounding, path: str | os.PathLike[str]) -> Path:
    text = sounding_text(s)
    return write_atomic(path, lambda handle: handle.write(text.encode()))


def saturation_mixing_ratio(t: np.ndarray, p: np.ndarray) -> np.ndarray:
    """kg/kg over liquid water at temperature t (K) and pressure p (Pa) (Bolton 1980)."""
    es = np.minimum(611.2 * np.exp(17.67 * (t - 273.15) / (t - 29.65)), 0.5 * p)
    return EPSILON * es / (p - es)


def exner(s: Sounding) -> np.ndarray:
    """pi = (p / p0)^kappa at every height, hydrostatic from the surface pressure."""
    qv = s.qv_gkg * 1e-3
    inverse_theta_v = (1.0 + qv) / (s.theta * (1.0 + qv / EPSILON))
    layers = 0.5 * (inverse_theta_v[1:] + inverse_theta_v[:-1]) * np.diff(s.z)
    pi_surface = (s.p_surface_hpa * 100.0 / P0) ** KAPPA
    return pi_surface - GRAVITY / CP * np.concatenate([[0.0], np.cumsum(layers)])


def pressure(s: Sounding) -> np.ndarray:
    """Pa at every height."""
    return P0 * exner(s) ** (1.0 / KAPPA)


def temperature(s: Sounding) -> np.ndarray:
    return s.theta * exner(s)


def relative_humidity(s: Sounding) -> np.ndarray:
    return s.qv_gkg * 1e-3 / saturation_mixing_ratio(temperature(s), pressure(s))


def moistened(s: Sounding, iterations: int = 50) -> Sounding:
    """qv110: see the module's docstring; theta and wind unchanged. The cap is on the moist
    sounding's own relative humidity (its pressure, and so its temperature, depends on qv):
    iterated to a fixed point."""
    ramp = np.clip((MOIST_TO_M - s.z) / (MOIST_TO_M - MOIST_BELOW_M), 0.0, 1.0)
    wanted = s.qv_gkg * (1.0 + (MOIST_FACTOR - 1.0) * ramp)
    new = s
    for _ in range(iterations):
        cap = RH_CAP * saturation_mixing_ratio(temperature(new), pressure(new)) * 1e3
        qv_gkg = np.minimum(wanted, np.maximum(s.qv_gkg, cap))
        if np.array_equal(qv_gkg, new.qv_gkg):
            return new
        new = replace(s, qv_gkg=qv_gkg)
    raise RuntimeError("the moistened sounding's humidity cap did not converge")


def warmed(s: Sounding, kelvin: float, iterations: int = 50) -> Sounding:
    """T + kelvin at every height, relative humidity held, pressure hydrostatic from the same
    surface pressure. Theta and qv depend on the new pressure and the pressure on them: a fixed
    point, iterated until the Exner function no longer changes (about 10 iterations)."""
    t_new, rh = temperature(s) + kelvin, relative_humidity(s)
    pi = exner(s)
    for _ in range(iterations):
        p = P0 * pi ** (1.0 / KAPPA)
        qv_gkg = rh * saturation_mixing_ratio(t_new, p) * 1e3
        new = replace(s, theta=t_new / pi, qv_gkg=qv_gkg)
        pi_new = exner(new)
        if np.max(np.abs(pi_new - pi)) < 1e-13:
            return new
        pi = pi_new
    raise RuntimeError(f"the +{kelvin} K sounding's pressure did not converge")


def variant(s: Sounding, name: str) -> Sounding:
    """The sounding ``name`` (one of VARIANTS) made from the control sounding ``s``."""
    if name == "ctl":
        return s
    if name == "qv110":
        return moistened(s)
    if name in WARMING_K:
        return warmed(s, WARMING_K[name])
    raise ValueError(f"unknown sounding {name!r}; expected one of {', '.join(VARIANTS)}")

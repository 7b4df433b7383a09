"""The Emanuel convection scheme from climt on many columns at once (the testbed's high fidelity).

``EmanuelColumns`` wraps ``climt.EmanuelConvection`` (Emanuel's CONVECT 4.3c, Fortran) and carries
the scheme's cloud-base mass flux from step to step, as the scheme requires: its closure relaxes
the mass flux towards sub-cloud quasi-equilibrium, ``M_new = (1 - damp*dt/300 s) M_old +
0.1 alpha dT_lcl``, so a column convects only after the flux has built up over a few calls and
keeps convecting while it decays.

Conventions of this wrapper (what callers pass and get):
    arrays are numpy ``(ncol, nlev)``, levels surface-to-top (index 0 = lowest), pressures in Pa,
    interface pressures ``(ncol, nlev + 1)`` with ``p_int[:, 0]`` the surface, temperature in K,
    ``q`` is *specific humidity* in kg kg-1 (convert a mixing ratio r first: q = r / (1 + r)).
    Outputs are SI: K s-1, kg kg-1 s-1, m s-2, precipitation in kg m-2 s-1 (= mm s-1).

What climt wants, found in climt 0.31.0 (``climt/_components/emanuel/component.py`` and the
Fortran ``convect43c.f90`` it wraps), and how this wrapper converts:
    * a sympl state of ``sympl.DataArray`` with a ``units`` attribute and dims ``(*, mid_levels)``
      or ``(*, interface_levels)``; sympl converts units, so pressures go in as Pa (the Fortran
      works in mbar) and ``cloud_base_mass_flux`` as ``(*,)`` in kg m-2 s-1. A ``time`` entry is
      required by sympl but unused.
    * level order: index 0 is the lowest level for both mid and interface levels (same as ours,
      no flip); the first interface pressure must exceed the first mid-level pressure.
    * humidity is specific humidity (the Fortran computes saturation *specific* humidity with
      Bolton's formula and uses cp = cpd (1 - q) + cpv q).
    * eastward/northward wind are required; they only feed the momentum tendencies, so they
      default to zero here.
    * outputs: temperature tendency degK s-1, specific humidity tendency kg/kg s-1, wind
      tendencies m s-2, ``convective_precipitation_rate`` in **mm day-1** (converted here to
      mm s-1 = kg m-2 s-1), the new ``cloud_base_mass_flux`` as a diagnostic (the input is not
      changed), ``convective_state`` (CONVECT's IFLAG: 0 stable, 1 convection, 2 LCL above
      200 hPa, 3 cloud base too high, 4 convection with a CFL warning).
    * ``atmosphere_convective_available_potential_energy`` is labelled J kg-1 by climt but the
      Fortran returns sum((Tv_parcel - Tv) dp / p) in K; multiplied by climt's Rd here gives J kg-1.
    * convection is confined to the lowest ``nlev - 3`` levels (climt sets NL = nlev - 3), and
      CONVECT's work arrays hold 70 levels (NA = 70, needs NA >= nlev + 1): at most 69 levels.
    * the scheme's parameters live in Fortran module variables shared by every climt instance
      in the process; this wrapper re-initialises them whenever another instance with other
      parameters ran in between.
    * climt 0.31.0's Fortran initialiser assigns ``alpha``, ``beta``, ``Cpd``, ``Cpv`` and ``Cl``
      to themselves (Fortran is case-insensitive, so each dummy argument shadows the module
      variable of the same name). ``mass_flux_relaxation_rate`` and
      ``downdraft_surface_velocity_coefficient`` therefore have no effect (this wrapper refuses
      values other than the defaults), and CONVECT keeps its built-in cpd = 1005.7,
      cpv = 1870 and cl = 2500 J kg-1 K-1 while Rd = 287.0, Rv = 461.5, Lv = 2.5e6 and
      g = 9.80665 come from sympl. tests/test_emanuel.py reads these back from the library.
    * climt does not return the cloud base and top; ``cloud_top_level`` is the highest level
      with a non-zero heating (CONVECT's INB: its enthalpy correction touches every level up to
      INB) and ``cloud_base_level`` repeats CONVECT's own search for ICB, the first level above
      the lifted condensation level of the parcel of highest moist static energy below the
      level of minimum moist static energy.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

import climt
import numpy as np
from sympl import DataArray, get_constant

# CONVECT's work arrays have NA = 70 levels and need NA >= nlev + 1.
MAX_LEVELS = 69
_SECONDS_PER_DAY = 86400.0
# climt convects only below the top three levels (component.py: max_conv_level = nlev - 3).
_TOP_LEVELS_EXCLUDED = 3
# What CONVECT really uses in climt 0.31.0 (see the module docstring): its built-in heat
# capacities, because the initialiser's assignments to them are no-ops.
CONVECT_CPD = 1005.7
CONVECT_CPV = 1870.0
CONVECT_CL = 2500.0
# Parameters the initialiser drops (same bug), with the values CONVECT keeps.
_IGNORED_BY_CLIMT = {
    "mass_flux_relaxation_rate": 0.1,
    "downdraft_surface_velocity_coefficient": 10.0,
}

# The Fortran scheme keeps its parameters in module variables shared by all climt instances;
# remember which parameter set was loaded last so another set is re-loaded before it runs.
_loaded_params: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class EmanuelResult:
    """One Emanuel call for ``ncol`` columns; arrays are ``(ncol, nlev)`` or ``(ncol,)``."""

    dTdt: np.ndarray  # K s-1
    dqdt: np.ndarray  # kg kg-1 s-1, specific humidity
    dudt: np.ndarray  # m s-2
    dvdt: np.ndarray  # m s-2
    precip: np.ndarray  # kg m-2 s-1 (= mm s-1)
    cloud_base_mass_flux: np.ndarray  # kg m-2 s-1, after this call
    triggered: np.ndarray  # bool: the column convects (positive cloud-base mass flux)
    cloud_base_level: np.ndarray  # int, 0-based level index, -1 where not triggered
    cloud_top_level: np.ndarray  # int, 0-based level index, -1 where not triggered
    cape: np.ndarray  # J kg-1, CONVECT's CAPE of its parcel (0 where it stopped before)
    convective_state: np.ndarray  # int32, CONVECT's IFLAG (see the module docstring)


class EmanuelColumns:
    """``ncol`` columns of the Emanuel scheme with the cloud-base mass flux carried between steps.

    Args:
        ncol: number of columns.
        nlev: number of mass levels (at most ``MAX_LEVELS``).
        dt_s: time between calls in seconds (the scheme's DELT: it scales the mass-flux damping).
        **scheme_params: keyword arguments of ``climt.EmanuelConvection`` (e.g.
            ``mass_flux_damping_rate``, ``entrainment_mixing_coefficient``).
    """

    def __init__(self, ncol: int, nlev: int, dt_s: float, **scheme_params: Any) -> None:
        if ncol < 1:
            raise ValueError(f"EmanuelColumns: ncol must be >= 1, got {ncol}")
        if not 5 <= nlev <= MAX_LEVELS:
            raise ValueError(
                f"EmanuelColumns: nlev must be in 5..{MAX_LEVELS} (CONVECT's work arrays hold "
                f"{MAX_LEVELS + 1} levels), got {nlev}"
            )
        if dt_s <= 0:
            raise ValueError(f"EmanuelColumns: dt_s must be > 0 s, got {dt_s}")
        self.ncol = ncol
        self.nlev = nlev
        self.dt_s = float(dt_s)
        for name, kept in _IGNORED_BY_CLIMT.items():
            if name in scheme_params and scheme_params[name] != kept:
                raise ValueError(
                    f"EmanuelColumns: climt 0.31.0 ignores {name} (its Fortran initialiser drops "
                    f"it) and always uses {kept}; got {scheme_params[name]}"
                )
        self._params = dict(scheme_params)
        self._component = self._load()
        self._min_conv_layer = int(scheme_params.get("minimum_convecting_layer", 1))
        self.cloud_base_mass_flux = np.zeros(ncol)

    def step(
        self,
        p: np.ndarray,
        p_int: np.ndarray,
        T: np.ndarray,
        q: np.ndarray,
        u: np.ndarray | None = None,
        v: np.ndarray | None = None,
    ) -> EmanuelResult:
        """Run the scheme on the state and keep its new cloud-base mass flux for the next step."""
        result = self.diagnose(p, p_int, T, q, u, v)
        self.cloud_base_mass_flux = result.cloud_base_mass_flux.copy()
        return result

    def diagnose(
        self,
        p: np.ndarray,
        p_int: np.ndarray,
        T: np.ndarray,
        q: np.ndarray,
        u: np.ndarray | None = None,
        v: np.ndarray | None = None,
        cloud_base_mass_flux: np.ndarray | None = None,
    ) -> EmanuelResult:
        """Run the scheme without changing the carried mass flux.

        ``cloud_base_mass_flux`` (``(ncol,)``, kg m-2 s-1) is the flux to start from; by default a
        copy of the carried one. The result's ``cloud_base_mass_flux`` is what a step would carry.
        """
        self._check_inputs(p, p_int, T, q)
        zeros = np.zeros((self.ncol, self.nlev))
        cbmf = self.cloud_base_mass_flux if cloud_base_mass_flux is None else cloud_base_mass_flux
        cbmf = np.array(cbmf, dtype=float)  # a copy: never let climt touch the carried state
        if cbmf.shape != (self.ncol,):
            raise ValueError(
                f"EmanuelColumns.diagnose: cloud_base_mass_flux must have shape ({self.ncol},), "
                f"got {cbmf.shape}"
            )
        state = _sympl_state(
            p, p_int, T, q, zeros if u is None else u, zeros if v is None else v, cbmf
        )
        if _loaded_params != self._params:
            self._component = self._load()
        tendencies, diagnostics = self._component(state, timedelta(seconds=self.dt_s))
        return self._result(tendencies, diagnostics, p, p_int, T, q)

    def _load(self) -> climt.EmanuelConvection:
        """Create the climt component, which loads this instance's parameters into Fortran."""
        global _loaded_params
        component = climt.EmanuelConvection(**self._params)
        _loaded_params = dict(self._params)
        return component

    def _check_inputs(self, p: np.ndarray, p_int: np.ndarray, T: np.ndarray, q: np.ndarray) -> None:
        for name, arr, shape in (
            ("p", p, (self.ncol, self.nlev)),
            ("p_int", p_int, (self.ncol, self.nlev + 1)),
            ("T", T, (self.ncol, self.nlev)),
            ("q", q, (self.ncol, self.nlev)),
        ):
            if np.shape(arr) != shape:
                raise ValueError(
                    f"EmanuelColumns: {name} must have shape {shape}, got {np.shape(arr)}"
                )
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"EmanuelColumns: {name} has non-finite values")
        bracketed = (p_int[:, :-1] > p) & (p > p_int[:, 1:])
        if np.any(np.diff(p_int, axis=1) >= 0) or not bracketed.all():
            raise ValueError(
                "EmanuelColumns: pressures must decrease upward (index 0 = surface) with each "
                "mass level between its interfaces: p_int[:, k] > p[:, k] > p_int[:, k + 1] (Pa)"
            )
        if np.nanmax(p_int) < 2000.0:
            raise ValueError("EmanuelColumns: pressures look like hPa; pass Pa")

    def _result(
        self,
        tendencies: dict[str, DataArray],
        diagnostics: dict[str, DataArray],
        p: np.ndarray,
        p_int: np.ndarray,
        T: np.ndarray,
        q: np.ndarray,
    ) -> EmanuelResult:
        dTdt = np.asarray(tendencies["air_temperature"].to_units("K s^-1").values, dtype=float)
        cbmf = np.asarray(
            diagnostics["cloud_base_mass_flux"].to_units("kg m^-2 s^-1").values, dtype=float
        )
        triggered = cbmf > 0.0
        heated = dTdt != 0.0
        top = np.where(heated.any(axis=1), self.nlev - 1 - np.argmax(heated[:, ::-1], axis=1), -1)
        base = _cloud_base_level(p, p_int, T, q, self._min_conv_layer)
        rd = get_constant("gas_constant_of_dry_air", "J/kg/degK")
        return EmanuelResult(
            dTdt=dTdt,
            dqdt=np.asarray(tendencies["specific_humidity"].to_units("kg/kg s^-1").values, float),
            dudt=np.asarray(tendencies["eastward_wind"].to_units("m s^-2").values, dtype=float),
            dvdt=np.asarray(tendencies["northward_wind"].to_units("m s^-2").values, dtype=float),
            precip=np.asarray(diagnostics["convective_precipitation_rate"].values, dtype=float)
            / _SECONDS_PER_DAY,
            cloud_base_mass_flux=cbmf,
            triggered=triggered,
            cloud_base_level=np.where(triggered, base, -1),
            cloud_top_level=np.where(triggered, top, -1),
            cape=rd
            * np.asarray(
                diagnostics["atmosphere_convective_available_potential_energy"].values, float
            ),
            convective_state=np.asarray(diagnostics["convective_state"].values, dtype=np.int32),
        )


def _sympl_state(
    p: np.ndarray,
    p_int: np.ndarray,
    T: np.ndarray,
    q: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    cbmf: np.ndarray,
) -> dict[str, Any]:
    mid = ["column", "mid_levels"]

    def arr(x: np.ndarray, dims: list[str], units: str) -> DataArray:
        return DataArray(np.array(x, dtype=float), dims=dims, attrs={"units": units})

    return {
        "time": datetime(2000, 1, 1),  # required by sympl, unused by the scheme
        "air_temperature": arr(T, mid, "K"),
        "specific_humidity": arr(q, mid, "kg/kg"),
        "eastward_wind": arr(u, mid, "m s^-1"),
        "northward_wind": arr(v, mid, "m s^-1"),
        "air_pressure": arr(p, mid, "Pa"),
        "air_pressure_on_interface_levels": arr(p_int, ["column", "interface_levels"], "Pa"),
        "cloud_base_mass_flux": arr(cbmf, ["column"], "kg m^-2 s^-1"),
    }


def _cloud_base_level(
    p: np.ndarray, p_int: np.ndarray, T: np.ndarray, q: np.ndarray, min_conv_layer: int
) -> np.ndarray:
    """CONVECT's cloud-base level ICB (0-based), vectorised over columns.

    Follows convect43c.f90 loops 40-50 with climt's constants: moist static energy HM above the
    lowest level, IHMIN (lowest HM among levels where HM decreases), NK (highest HM at or below
    IHMIN), the LCL pressure of the NK parcel (Bolton), and the first level above it.
    """
    rd = get_constant("gas_constant_of_dry_air", "J/kg/degK")
    rv = get_constant("gas_constant_of_vapor_phase", "J/kg/degK")
    cpd, cpv, cl = CONVECT_CPD, CONVECT_CPV, CONVECT_CL
    lv0 = get_constant("latent_heat_of_condensation", "J/kg")
    ncol, nlev = T.shape
    nl = nlev - _TOP_LEVELS_EXCLUDED  # CONVECT's NL (1-based count)
    eps = rd / rv
    tv = T * (1.0 + q / eps - q)
    gz = np.zeros_like(T)
    dgz = 0.5 * rd * (tv[:, 1:] + tv[:, :-1]) * (p[:, :-1] - p[:, 1:]) / p_int[:, 1:-1]
    gz[:, 1:] = np.cumsum(dgz, axis=1)
    lv = lv0 - (cl - cpv) * (T - 273.15)
    hm = (cpd * (1.0 - q) + cl * q) * (T - T[:, :1]) + lv * q + gz
    hm[:, 0] = lv[:, 0] * q[:, 0]
    levels = np.arange(nlev)
    # IHMIN over 0-based levels 1..nl where HM drops below the level beneath; default nl - 1.
    candidate = np.zeros_like(hm, dtype=bool)
    candidate[:, 1:] = hm[:, 1:] < hm[:, :-1]
    candidate &= (levels >= max(min_conv_layer - 1, 1)) & (levels <= nl)
    ihmin = np.where(
        candidate.any(axis=1), np.argmin(np.where(candidate, hm, np.inf), axis=1), nl - 1
    )
    ihmin = np.minimum(ihmin, nl - 2)
    below = (levels[None, :] >= min_conv_layer - 1) & (levels[None, :] <= ihmin[:, None])
    nk = np.argmax(np.where(below, hm, -np.inf), axis=1)
    cols = np.arange(ncol)
    es = 611.2 * np.exp(17.67 * (T[cols, nk] - 273.15) / (T[cols, nk] - 29.65))
    qs = eps * es / (p[cols, nk] - (1.0 - eps) * es)
    rh = q[cols, nk] / qs
    chi = T[cols, nk] / (1669.0 - 122.0 * rh - T[cols, nk])
    plcl = p[cols, nk] * rh**chi
    above = (levels[None, :] > nk[:, None]) & (levels[None, :] < nl) & (p < plcl[:, None])
    return np.where(above.any(axis=1), np.argmax(above, axis=1), nl - 2)

"""The Fortran column host model (``fortran_bridge/host``) stepped from Python.

``ColumnModel`` runs N independent columns of temperature and specific humidity with the
forcings of the testbed (radiation, large-scale vertical motion, bulk surface fluxes,
large-scale condensation, optional weak-temperature-gradient relaxation) and a convection slot:
the Fortran simplified Betts-Miller scheme (``step``), or tendencies computed in Python
(``step_supplied``, e.g. the Emanuel scheme). The equations and their parameters are written
in the Fortran module headers (``column_forcings.f90``, ``betts_miller.f90``,
``column_host.f90``); ``ColumnConfig`` lists the parameters with their defaults.

Calls go Python -> f90wrap/f2py -> the facade ``paramlib_column_py``
(``fortran_bridge/host/python/paramlib_column_py.f90``) -> the same Fortran modules the
pure-Fortran driver ``column_run`` uses, so both give the same numbers bit for bit.

Layout: arrays here are numpy ``(ncol, nlev)`` in C order, levels surface-to-top (index 0 =
lowest), interface pressures ``(ncol, nlev + 1)`` with index 0 the surface. The Fortran model
stores ``(nlev, ncol)`` in column-major order, which is the same memory: ``a.T`` of a
C-contiguous ``(ncol, nlev)`` float64 array is handed to Fortran without a copy. Copies
happen where an input is not C-contiguous float64 (``np.ascontiguousarray`` converts it) and
once per output, from the model's memory into the array returned. Units are SI: K, kg kg-1,
Pa, K s-1, kg kg-1 s-1, W m-2, precipitation in kg m-2 s-1 (= mm s-1).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from enum import IntEnum
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from paramlib.fortran.support import FortranStatusError, FreedOnExit

BUILD_HINT = "the column model's Python bindings are not built: run `make build`"

# Names of the Fortran model's real parameters (column_host: column_parameters), which
# ColumnConfig carries as fields of the same names.
MODEL_PARAMETERS = (
    "dt",
    "cooling_rate",
    "t_strat",
    "tau_strat",
    "p_trop",
    "dp_trop",
    "p_omega_top",
    "exchange_coefficient",
    "surface_wind",
    "tau_wtg",
    "p_wtg_bl",
    "dp_wtg",
    "wtg_sst_offset",
    "wtg_rh",
)

# Betts-Miller branches (betts_miller: BM_NONE, BM_SHALLOW, BM_DEEP)
BM_NONE, BM_SHALLOW, BM_DEEP = 0, 1, 2


class Status(IntEnum):
    """Status codes of the column model (fortran_bridge/host/column_status.f90)."""

    OK = 0
    ERR_ARGUMENT = 1
    ERR_NOT_READY = 2
    ERR_STATE = 3
    ERR_HANDLE = 4


class ColumnError(FortranStatusError):
    """A column-model call failed: ``status`` is the Fortran status code."""

    statuses = Status


@dataclasses.dataclass(frozen=True)
class ColumnConfig:
    """Columns, grid and parameters of a column model (SI units).

    ``sst`` sets the number of columns; ``ps`` and ``omega0`` are one value per column or one
    value for all. ``omega0`` is the amplitude of omega(p) = omega0 sin(pi (ps - p) /
    (ps - p_omega_top)), negative for ascent. ``sst_ref`` (the domain-mean SST the WTG
    reference profile is built from) defaults to the mean of ``sst``. The defaults of the
    remaining fields are those of the Fortran model (a test checks that they agree).
    """

    sst: ArrayLike  # K, one per column
    ps: ArrayLike = 1.01e5  # Pa
    omega0: ArrayLike = 0.0  # Pa s-1
    nlev: int = 26
    wtg: bool = False
    sst_ref: float | None = None  # K
    bm_tau: float = 7200.0  # s, Betts-Miller relaxation time
    bm_rh: float = 0.8  # Betts-Miller reference relative humidity
    dt: float = 600.0  # s
    cooling_rate: float = 1.5 / 86400.0  # K s-1, tropospheric radiative cooling
    t_strat: float = 200.0  # K, stratospheric relaxation temperature
    tau_strat: float = 5.0 * 86400.0  # s
    p_trop: float = 2.0e4  # Pa, centre of the troposphere-stratosphere transition
    dp_trop: float = 2.5e3  # Pa, its width
    p_omega_top: float = 1.0e4  # Pa, omega is zero above
    exchange_coefficient: float = 1.2e-3  # bulk transfer coefficient
    surface_wind: float = 7.0  # m s-1
    tau_wtg: float = 3.0 * 3600.0  # s
    p_wtg_bl: float = 8.5e4  # Pa, WTG leaves the boundary layer below alone
    dp_wtg: float = 2.5e3  # Pa, width of that transition
    wtg_sst_offset: float = 1.0  # K, the reference parcel starts at sst_ref - offset
    wtg_rh: float = 0.8  # relative humidity of the reference parcel

    @property
    def ncol(self) -> int:
        return int(np.size(self.sst))

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ps, sst, omega0)``, each a float64 array of ``ncol`` values."""
        return tuple(  # type: ignore[return-value]
            np.ascontiguousarray(np.broadcast_to(np.asarray(a, dtype=np.float64), (self.ncol,)))
            for a in (self.ps, self.sst, self.omega0)
        )

    def reference_sst(self) -> float:
        return float(np.mean(self.sst)) if self.sst_ref is None else float(self.sst_ref)


@dataclasses.dataclass(frozen=True)
class BettsMillerOutput:
    """Betts-Miller on a set of columns: tendencies ``(ncol, nlev)``, precipitation, CAPE
    (J kg-1), the branch taken (``BM_NONE``, ``BM_SHALLOW``, ``BM_DEEP``) and the highest
    level relaxed (1-based, 0 where none), per column."""

    dtdt: np.ndarray
    dqdt: np.ndarray
    precip: np.ndarray
    cape: np.ndarray
    kind: np.ndarray
    top: np.ndarray


@dataclasses.dataclass(frozen=True)
class Budgets:
    """Column budgets of the last step, per column: ``energy[term]`` in W m-2 (moist
    enthalpy cp T + L q), ``water[term]`` in kg m-2 s-1. ``residual`` is storage minus the sum
    of the other terms (round-off); see column_host.f90 for each term."""

    energy: dict[str, np.ndarray]
    water: dict[str, np.ndarray]


@functools.cache
def _api() -> Any:
    """The facade module, imported on first use so this module imports without the build."""
    try:
        bindings = importlib.import_module("paramlib._ext.paramlib_column")
    except ImportError as error:
        raise ImportError(BUILD_HINT) from error
    return bindings.paramlib_column_py


def _last_error() -> str:
    return str(_api().last_error()).strip()


def _check(status: int) -> None:
    if status != Status.OK:
        raise ColumnError(status, _last_error())


def _c_float64(a: ArrayLike) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def fortran_constants() -> dict[str, float]:
    """The physical constants compiled into the Fortran model, by paramlib.constants name."""
    names = ("GRAVITY", "RD", "RV", "CP", "LV", "KAPPA", "EPSILON", "P0", "T0", "RHO_WATER")
    return dict(zip(names, (float(v) for v in _api().constants()), strict=True))


class ColumnModel(FreedOnExit):
    """N columns of the Fortran column model.

    with ColumnModel(ColumnConfig(sst=np.full(100, 300.0), omega0=-0.05, wtg=True)) as m:
        m.step(144)                    # one day with Betts-Miller
        t, q = m.t, m.q                # (ncol, nlev)
        bm = m.diagnose_bm(t, q)       # Betts-Miller on any state, without stepping
        m.step_supplied(dtdt, dqdt, precip)   # one step with tendencies from elsewhere

    Set-up: the columns and every parameter of ``config`` are applied, then the initial
    state is computed from them (``reset_state``); ``column_run`` does the same in Fortran.
    """

    def __init__(self, config: ColumnConfig) -> None:
        self.config = config
        ps, sst, omega0 = config.columns()
        handle, status = _api().create(config.nlev, ps, sst, omega0)
        _check(status)
        self.handle: int = handle
        self._freed = False
        try:
            for name in MODEL_PARAMETERS:
                self.set_parameter(name, getattr(config, name))
            self.set_parameter("sst_ref", config.reference_sst())
            _check(_api().set_wtg(self.handle, int(config.wtg)))
            self.set_bm(config.bm_tau, config.bm_rh)
            self.reset_state()
        except ColumnError:
            self.free()
            raise
        ncol, nlev, _, nproc, nenergy, nwater, status = _api().sizes(self.handle)
        _check(status)
        self.ncol: int = ncol
        self.nlev: int = nlev
        self.processes = self._names(0, nproc)
        self.energy_terms = self._names(1, nenergy)
        self.water_terms = self._names(2, nwater)

    @staticmethod
    def _names(kind: int, n: int) -> tuple[str, ...]:
        def name(i: int) -> str:
            text, status = _api().names(kind, i)
            _check(status)
            return str(text).strip()

        return tuple(name(i) for i in range(1, n + 1))

    # -- lifetime ---------------------------------------------------------------------------

    def free(self) -> None:
        """Release the Fortran model; later calls raise ``ColumnError`` (ERR_HANDLE)."""
        self._freed = True
        _check(_api().free(self.handle))

    # -- parameters and columns ----------------------------------------------------------------

    def set_parameter(self, name: str, value: float) -> None:
        """A model parameter by its ``ColumnConfig`` name (or ``sst_ref``), SI units."""
        _check(_api().set_parameter(self.handle, name, float(value)))

    def get_parameter(self, name: str) -> float:
        value, status = _api().get_parameter(self.handle, name)
        _check(status)
        return float(value)

    def set_wtg(self, on: bool) -> None:
        _check(_api().set_wtg(self.handle, int(on)))

    def set_bm(self, tau: float, rh: float) -> None:
        """Betts-Miller relaxation time (s) and reference relative humidity."""
        _check(_api().set_bm(self.handle, float(tau), float(rh)))

    def get_bm(self) -> tuple[float, float]:
        tau, rh, status = _api().get_bm(self.handle)
        _check(status)
        return float(tau), float(rh)

    def set_columns(
        self,
        ps: ArrayLike | None = None,
        sst: ArrayLike | None = None,
        omega0: ArrayLike | None = None,
    ) -> None:
        """New surface pressure, SST or omega amplitude per column (the others are kept)."""
        current = self.columns()
        new = [
            np.broadcast_to(_c_float64(old if a is None else a), (self.ncol,)).copy()
            for a, old in zip((ps, sst, omega0), current, strict=True)
        ]
        _check(_api().set_columns(self.handle, *new))

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ps, sst, omega0)`` per column."""
        out = tuple(np.empty(self.ncol) for _ in range(3))
        _check(_api().get_columns(self.handle, *out))
        return out  # type: ignore[return-value]

    # -- state -------------------------------------------------------------------------------

    @property
    def nstep(self) -> int:
        """Steps taken since the last ``reset_state``."""
        _, _, nstep, _, _, _, status = _api().sizes(self.handle)
        _check(status)
        return int(nstep)

    def _fields(self, n: int = 2, nlev: int | None = None) -> list[np.ndarray]:
        return [np.empty((self.ncol, nlev or self.nlev)) for _ in range(n)]

    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """``(t, q)``, each ``(ncol, nlev)``: temperature (K), specific humidity (kg kg-1)."""
        t, q = self._fields()
        _check(_api().get_state(self.handle, t.T, q.T))
        return t, q

    @property
    def t(self) -> np.ndarray:
        return self.state()[0]

    @property
    def q(self) -> np.ndarray:
        return self.state()[1]

    def set_state(self, t: ArrayLike, q: ArrayLike) -> None:
        """New temperature and humidity, ``(ncol, nlev)``; refused outside the physical range
        (100 K < T < 400 K, 0 <= q < 0.1)."""
        _check(_api().set_state(self.handle, _c_float64(t).T, _c_float64(q).T))

    def reset_state(self) -> None:
        """The initial state: each column's moist adiabat from its own SST below the
        tropopause, ``t_strat`` above, relative humidity 0.2 + 0.6 sigma."""
        _check(_api().reset_state(self.handle))

    def pressure(self) -> tuple[np.ndarray, np.ndarray]:
        """``(p, p_int)``: full levels ``(ncol, nlev)`` and interfaces ``(ncol, nlev + 1)``, Pa."""
        (p,) = self._fields(1)
        (p_int,) = self._fields(1, self.nlev + 1)
        _check(_api().get_pressure(self.handle, p.T, p_int.T))
        return p, p_int

    # -- stepping ----------------------------------------------------------------------------

    def step(self, nsteps: int = 1) -> None:
        """``nsteps`` steps with the Fortran Betts-Miller scheme."""
        _check(_api().step_bm(self.handle, int(nsteps)))

    def step_supplied(self, dtdt: ArrayLike, dqdt: ArrayLike, precip: ArrayLike) -> None:
        """One step whose convection is ``dtdt`` (K s-1) and ``dqdt`` (kg kg-1 s-1), both
        ``(ncol, nlev)``, and ``precip`` (kg m-2 s-1, >= 0, ``(ncol,)``) computed outside."""
        _check(
            _api().step_supplied(
                self.handle, _c_float64(dtdt).T, _c_float64(dqdt).T, _c_float64(precip)
            )
        )

    def diagnose_bm(self, t: ArrayLike, q: ArrayLike) -> BettsMillerOutput:
        """Betts-Miller on the state ``(t, q)`` at this model's pressures, without stepping."""
        dtdt, dqdt = self._fields()
        precip, cape = np.empty(self.ncol), np.empty(self.ncol)
        kind, top = np.empty(self.ncol, dtype=np.int32), np.empty(self.ncol, dtype=np.int32)
        _check(
            _api().diagnose_bm(
                self.handle,
                _c_float64(t).T,
                _c_float64(q).T,
                dtdt.T,
                dqdt.T,
                precip,
                cape,
                kind,
                top,
            )
        )
        return BettsMillerOutput(dtdt, dqdt, precip, cape, kind, top)

    # -- diagnostics of the last step --------------------------------------------------------

    def surface_fluxes(self) -> tuple[np.ndarray, np.ndarray]:
        """``(shflx, lhflx)`` in W m-2, upward, computed from the state the step started from."""
        shflx, lhflx = np.empty(self.ncol), np.empty(self.ncol)
        _check(_api().get_surface_fluxes(self.handle, shflx, lhflx))
        return shflx, lhflx

    def tendencies(self, process: str) -> tuple[np.ndarray, np.ndarray]:
        """``(dtdt, dqdt)`` of one process (a name in ``processes``), ``(ncol, nlev)``."""
        if process not in self.processes:
            known = ", ".join(self.processes)
            raise ValueError(f"process: expected one of {known}, got {process!r}")
        dtdt, dqdt = self._fields()
        _check(_api().get_tendency(self.handle, self.processes.index(process) + 1, dtdt.T, dqdt.T))
        return dtdt, dqdt

    def precipitation(self) -> tuple[np.ndarray, np.ndarray]:
        """``(convective, large_scale)`` precipitation in kg m-2 s-1."""
        convective, large_scale = np.empty(self.ncol), np.empty(self.ncol)
        _check(_api().get_precipitation(self.handle, convective, large_scale))
        return convective, large_scale

    def budgets(self) -> Budgets:
        energy = np.empty((self.ncol, len(self.energy_terms)))
        water = np.empty((self.ncol, len(self.water_terms)))
        _check(_api().get_budgets(self.handle, energy.T, water.T))
        return Budgets(
            energy=dict(zip(self.energy_terms, energy.T, strict=True)),
            water=dict(zip(self.water_terms, water.T, strict=True)),
        )

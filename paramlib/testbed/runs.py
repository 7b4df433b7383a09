"""Column runs of the testbed: the columns, their large-scale forcing, and the two model runs.

A *column set* is ``n`` ocean cells drawn from the SST climatology (``sst.sample_sst``) with a
surface pressure and a large-scale vertical motion each. The same set serves both climates:
historical as drawn, +4K with every SST and the WTG reference SST raised by 4 K.

Vertical motion: the column model's omega(p) = omega0 sin(pi (ps - p) / (ps - p_omega_top))
with, per column,
    omega0 = clip(-OMEGA_PER_K (SST - SST_ref) + noise, OMEGA_MIN, OMEGA_MAX) - domain mean,
so warm columns ascend and convect, cold ones subside and dry out, and the domain has no net
vertical mass flux (what a weak-temperature-gradient circulation implies). SST_ref is the
domain-mean SST of the set. The coupling is strong (0.07 Pa s-1 K-1, about -60 hPa day-1 per
kelvin) so that the ensemble spans suppressed to deep-convecting regimes rather than sitting
mostly in the marginal regime between them, where the two schemes disagree most (see
``tuning``).

A *run* steps the Fortran column model (``column.ColumnModel``) from its initial state (each
column's moist adiabat from its own SST) through a spin-up, then saves the state every
``save_every`` steps. Two schemes drive runs:
    * low fidelity, ``BETTS_MILLER``: the model's own simplified Betts-Miller scheme. A second,
      diagnostic Emanuel scheme (``emanuel.EmanuelColumns``, its own carried mass flux) is
      stepped along on the same states from ``emanuel_lead_days`` before the first save, long
      enough for its mass flux to forget its zero start (it relaxes within hours);
    * high fidelity, ``EMANUEL``: the Emanuel scheme's tendencies supplied to the model every
      step, its cloud-base mass flux carried from step to step.
A saved sample is the state at the start of a step with everything that step computed from
it: the convection of the run's scheme, the large-scale precipitation, the surface fluxes
and, for low fidelity, the diagnostic Emanuel output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from enum import Enum

import numpy as np

from paramlib.testbed.column import ColumnConfig, ColumnModel
from paramlib.testbed.emanuel import EmanuelColumns
from paramlib.testbed.sst import PLUS4K_K, daily_mean_insolation, sample_sst

SECONDS_PER_DAY = 86400.0
NLEV = 26  # the MF-RPN layout: T on 26 levels

# omega0 from the SST anomaly (module docstring), Pa s-1
OMEGA_PER_K = 0.07  # Pa s-1 K-1
OMEGA_NOISE = 0.01
OMEGA_MIN = -0.25
OMEGA_MAX = 0.10
# Surface pressure per column: tropical ocean values, Pa
PS_MEAN = 101100.0
PS_STD = 300.0
# Centre of the troposphere-stratosphere transition, Pa: the tropical tropopause. At the model's
# default, 200 hPa, the +4K troposphere runs into the 200 K stratosphere below the top level
# Emanuel may convect to (126 hPa with 26 levels), the moist static energy minimum lands there,
# CONVECT switches itself off (IFLAG 0) and the warmest +4K columns rain by large-scale
# condensation instead.
P_TROPOPAUSE = 1.5e4


class Scheme(Enum):
    """The convection scheme that drives a run; ``value`` is its description."""

    BETTS_MILLER = "simplified Betts-Miller (Frierson 2007), Fortran column model"
    EMANUEL = "Emanuel (climt 0.31.0, CONVECT 4.3c), cloud-base mass flux carried"


@dataclasses.dataclass(frozen=True)
class ColumnSet:
    """Per-column surface conditions and forcing, arrays of ``n`` values."""

    sst: np.ndarray  # K
    ps: np.ndarray  # Pa
    omega0: np.ndarray  # Pa s-1, < 0 ascent
    lat: np.ndarray  # degrees north
    lon: np.ndarray  # degrees east
    month: np.ndarray  # 1..12, the month the SST was taken from
    sst_ref: float  # K, the WTG reference SST (domain mean of the climate)

    @property
    def ncol(self) -> int:
        return int(self.sst.size)

    @property
    def solin(self) -> np.ndarray:
        """Daily-mean top-of-atmosphere insolation of each column's latitude and month, W m-2."""
        return daily_mean_insolation(self.lat, self.month)

    def first(self, n: int) -> ColumnSet:
        """The first ``n`` columns (a random subset: the columns are drawn independently),
        keeping the reference SST of the whole set."""
        return dataclasses.replace(
            self,
            **{
                f.name: getattr(self, f.name)[:n]
                for f in dataclasses.fields(self)
                if f.name != "sst_ref"
            },
        )

    def plus4k(self) -> ColumnSet:
        """The same columns in the +4K climate: SST and reference SST 4 K warmer."""
        return dataclasses.replace(self, sst=self.sst + PLUS4K_K, sst_ref=self.sst_ref + PLUS4K_K)


def omega_amplitude(
    sst_anomaly: np.ndarray, noise: np.ndarray, per_kelvin: float = OMEGA_PER_K
) -> np.ndarray:
    """omega0 (Pa s-1) from SST anomalies (K) and noise (Pa s-1): warm ascends, cold subsides,
    clipped to [OMEGA_MIN, OMEGA_MAX], then the domain mean removed."""
    omega0 = np.clip(-per_kelvin * sst_anomaly + noise, OMEGA_MIN, OMEGA_MAX)
    return omega0 - omega0.mean()


def sample_columns(n: int, rng: np.random.Generator) -> ColumnSet:
    """``n`` tropical ocean columns of the historical climate."""
    cells = sample_sst(n, rng)
    sst = cells.sst.astype(np.float64)
    sst_ref = float(sst.mean())
    return ColumnSet(
        sst=sst,
        ps=PS_MEAN + PS_STD * rng.standard_normal(n),
        omega0=omega_amplitude(sst - sst_ref, OMEGA_NOISE * rng.standard_normal(n)),
        lat=cells.lat,
        lon=cells.lon,
        month=cells.month,
        sst_ref=sst_ref,
    )


def omega_profile(
    p: np.ndarray, ps: np.ndarray, omega0: np.ndarray, p_omega_top: float
) -> np.ndarray:
    """The column model's omega(p) (column_forcings.f90: omega_profile) at pressures ``p``
    ``(..., ncol, nlev)`` for columns with ``ps`` and ``omega0`` ``(ncol,)``; zero above
    ``p_omega_top``."""
    ps = np.asarray(ps)[..., None]
    shape = np.sin(np.pi * (ps - p) / (ps - p_omega_top))
    return np.where(p > p_omega_top, np.asarray(omega0)[..., None] * shape, 0.0)


@dataclasses.dataclass(frozen=True)
class Timing:
    """Step, spin-up and saving of a run."""

    spin_up_days: float
    save_days: float
    save_every: int  # steps between saved samples
    dt_s: float = 600.0
    emanuel_lead_days: float = 1.0  # the diagnostic Emanuel scheme starts this long before saving

    def steps(self, days: float) -> int:
        return round(days * SECONDS_PER_DAY / self.dt_s)

    @property
    def spin_up_steps(self) -> int:
        return self.steps(self.spin_up_days)

    @property
    def total_steps(self) -> int:
        return self.spin_up_steps + self.steps(self.save_days)

    @property
    def nsave(self) -> int:
        return len(range(self.spin_up_steps, self.total_steps, self.save_every))

    def saves(self, step: int) -> bool:
        """Whether the state at the start of ``step`` is saved."""
        return step >= self.spin_up_steps and (step - self.spin_up_steps) % self.save_every == 0


@dataclasses.dataclass(frozen=True)
class SchemeOutput:
    """A convection scheme's output on ``nt`` saved states: ``(nt, ncol, nlev)``, ``(nt, ncol)``."""

    dtdt: np.ndarray  # K s-1
    dqdt: np.ndarray  # kg kg-1 s-1
    precip: np.ndarray  # kg m-2 s-1


@dataclasses.dataclass(frozen=True)
class ColumnRun:
    """The saved samples of one run. Levels surface-to-top."""

    columns: ColumnSet
    scheme: Scheme
    wtg: bool
    timing: Timing
    time_s: np.ndarray  # (nt,) seconds since the start of the run
    p: np.ndarray  # (ncol, nlev) Pa, the same at every time (ps is fixed)
    p_int: np.ndarray  # (ncol, nlev + 1) Pa
    p_omega_top: float  # Pa
    t: np.ndarray  # (nt, ncol, nlev) K
    q: np.ndarray  # (nt, ncol, nlev) kg kg-1
    convection: SchemeOutput  # the run's own scheme
    precl: np.ndarray  # (nt, ncol) kg m-2 s-1, large-scale condensation
    shflx: np.ndarray  # (nt, ncol) W m-2, upward
    lhflx: np.ndarray  # (nt, ncol) W m-2, upward
    diagnostic: SchemeOutput | None = None  # Emanuel on low-fidelity states

    @property
    def omega(self) -> np.ndarray:
        """omega at the full levels, ``(ncol, nlev)`` Pa s-1."""
        return omega_profile(self.p, self.columns.ps, self.columns.omega0, self.p_omega_top)


@dataclasses.dataclass(frozen=True)
class _Sample:
    time_s: float
    t: np.ndarray
    q: np.ndarray
    dtdt: np.ndarray
    dqdt: np.ndarray
    precc: np.ndarray
    precl: np.ndarray
    shflx: np.ndarray
    lhflx: np.ndarray
    diagnostic: tuple[np.ndarray, np.ndarray, np.ndarray] | None


def model_config(
    columns: ColumnSet,
    wtg: bool,
    dt_s: float,
    nlev: int = NLEV,
    bm_tau: float = ColumnConfig.bm_tau,
    bm_rh: float = ColumnConfig.bm_rh,
) -> ColumnConfig:
    """The column model for ``columns`` with the testbed's settings."""
    return ColumnConfig(
        sst=columns.sst,
        ps=columns.ps,
        omega0=columns.omega0,
        nlev=nlev,
        wtg=wtg,
        sst_ref=columns.sst_ref,
        bm_tau=bm_tau,
        bm_rh=bm_rh,
        dt=dt_s,
        p_trop=P_TROPOPAUSE,
    )


def run_columns(
    columns: ColumnSet,
    scheme: Scheme,
    timing: Timing,
    wtg: bool = True,
    bm_tau: float = ColumnConfig.bm_tau,
    bm_rh: float = ColumnConfig.bm_rh,
) -> ColumnRun:
    """Run ``columns`` with ``scheme`` and return the saved samples (see the module docstring).
    ``bm_tau`` and ``bm_rh`` are the Betts-Miller parameters (used when it drives the run)."""
    config = model_config(columns, wtg, timing.dt_s, bm_tau=bm_tau, bm_rh=bm_rh)
    with ColumnModel(config) as model:
        p, p_int = model.pressure()
        samples = list(_samples(model, scheme, timing, p, p_int))
        p_omega_top = model.get_parameter("p_omega_top")

    def stack(name: str) -> np.ndarray:
        return np.stack([getattr(s, name) for s in samples])

    diagnostic = None
    if scheme is Scheme.BETTS_MILLER:
        diagnostic = SchemeOutput(
            *(np.stack(parts) for parts in zip(*(s.diagnostic for s in samples), strict=True))
        )
    return ColumnRun(
        columns=columns,
        scheme=scheme,
        wtg=wtg,
        timing=timing,
        time_s=stack("time_s"),
        p=p,
        p_int=p_int,
        p_omega_top=p_omega_top,
        t=stack("t"),
        q=stack("q"),
        convection=SchemeOutput(stack("dtdt"), stack("dqdt"), stack("precc")),
        precl=stack("precl"),
        shflx=stack("shflx"),
        lhflx=stack("lhflx"),
        diagnostic=diagnostic,
    )


def _samples(
    model: ColumnModel, scheme: Scheme, timing: Timing, p: np.ndarray, p_int: np.ndarray
) -> Iterator[_Sample]:
    """Step ``model`` through ``timing`` and yield the saved samples."""
    emanuel = EmanuelColumns(model.ncol, model.nlev, timing.dt_s)
    first = 0
    if scheme is Scheme.BETTS_MILLER:
        # Betts-Miller alone until the diagnostic Emanuel scheme needs the states.
        first = max(timing.spin_up_steps - timing.steps(timing.emanuel_lead_days), 0)
        if first:
            model.step(first)
    for step in range(first, timing.total_steps):
        t, q = model.state()
        result = emanuel.step(p, p_int, t, q)
        if scheme is Scheme.EMANUEL:
            model.step_supplied(result.dTdt, result.dqdt, result.precip)
            own = result.dTdt, result.dqdt, result.precip
            diagnostic = None
        else:
            model.step()
            own = (*model.tendencies("convection"), model.precipitation()[0])
            diagnostic = result.dTdt, result.dqdt, result.precip
        if timing.saves(step):
            yield _Sample(
                step * timing.dt_s,
                t,
                q,
                *own,
                model.precipitation()[1],
                *model.surface_fluxes(),
                diagnostic=diagnostic,
            )

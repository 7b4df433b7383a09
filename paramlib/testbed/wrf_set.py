"""The testbed's WRF-format set: the high-fidelity column model on the columns of a WRF grid.

The grid is ``nx`` x ``ny`` columns 5 km apart with 44 levels over the ocean. Neighbouring columns
must look alike, so the column forcings are smooth random fields on the grid (Gaussian-filtered
noise, periodic, correlation length ``correlation_cells``): the SST (a tropical SST drawn from the
climatology plus an anomaly field) and the vertical motion omega0, which follows the SST anomaly
(``runs.omega_amplitude``) plus a second field that travels with the steering wind, so
convection moves across the grid and the state evolves in time. Winds are prescribed: a sheared
profile plus smooth travelling perturbations; W is omega converted at each interface.

Every column runs the column model with WTG (reference: the domain-mean SST) and the Emanuel
scheme, at the cumulus interval ``dt_s`` = CUDT = 5 min; after the spin-up every step is a frame
right after a cumulus call, as in the real MSKF files. The state moves with Emanuel's output of
every call; the written cumulus fields apply WRF's NCA holding (``wrf_format.nca_hold``) to that
sequence, i.e. what WRF with DT = 30 s would show after each call: a triggered column keeps its
tendencies for its convective time scale, here the time an updraft of ``updraft_speed`` takes
to cross the cloud (base to top, hypsometric depth), at least one cumulus interval and at most an
hour (Kain-Fritsch's upper bound). Emanuel has no condensate tendencies (it rains out or
evaporates its condensate): RQC/RQR/RQI/RQSCUTEN are zero.

Surface and boundary-layer fields the column model has no scheme for are diagnosed: HFX and QFX
from the model's bulk fluxes, UST = sqrt(C) U from the same bulk formula (one value: the model's
surface wind is one constant), PBLH = the height of the lowest level's lifting condensation
level, XLAND = 2 (water). W0AVG is WRF's running mean of w, updated every WRF step (w held
between frames). SST is written too (WRF's history field of that name).

``GridForcing.draw`` makes a set's random draws; ``GridForcing.plus4k`` gives its +4K twin: the
same draws with SST and WTG reference SST 4 K warmer (``ColumnSet.plus4k``), so omega, winds,
surface pressure and hence the eta levels and P_TOP are the historical set's.
"""

from __future__ import annotations

import dataclasses
import os
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from paramlib.constants import CP, EPSILON, GRAVITY, LV, RD
from paramlib.testbed.column import ColumnModel
from paramlib.testbed.emanuel import EmanuelColumns, EmanuelResult
from paramlib.testbed.runs import (
    PS_MEAN,
    SECONDS_PER_DAY,
    ColumnSet,
    Scheme,
    model_config,
    omega_amplitude,
    omega_profile,
)
from paramlib.testbed.sst import sample_sst
from paramlib.testbed.wrf_format import (
    WrfConfig,
    WrfFrames,
    cumulus_to_wrf,
    eta_levels,
    mixing_ratio,
    nca_hold,
    w0avg_update,
    write_wrfout,
)

MAX_TIMESCALE_S = 3600.0  # Kain-Fritsch's longest convective time scale
HELD = ("RTHCUTEN", "RQVCUTEN")  # the non-zero tendencies WRF holds while NCA counts down
CARRIED = ("PRATEC", "CUTOP", "CUBOT", "RUCUTEN", "RVCUTEN")
CONDENSATE = ("RQCCUTEN", "RQRCUTEN", "RQICUTEN", "RQSCUTEN")


@dataclasses.dataclass(frozen=True)
class WrfSetConfig:
    """Grid, duration and forcing of the WRF-format set."""

    nx: int = 40
    ny: int = 40
    nlev: int = 44
    spin_up_days: float = 1.0
    hours: float = 3.0  # of 5-minute frames after the spin-up
    frames_per_file: int = 12  # one file per hour, as WRF's frames_per_outfile would give
    dt_s: float = 300.0  # column-model step = cumulus interval CUDT
    wrf_dt_s: float = 30.0  # WRF's time step DT, in which NCA counts down
    dx_m: float = 5000.0
    sst_std_k: float = 1.5  # standard deviation of the SST anomaly field
    correlation_cells: float = 5.0  # length scale of the random fields, grid cells
    omega_travelling: float = 0.03  # Pa s-1, standard deviation of the travelling omega0 part
    steering_wind: tuple[float, float] = (6.0, 2.0)  # m s-1: what the patterns move with
    wind_shear: float = 10.0  # m s-1 of u from the surface to the top (per unit sigma)
    wind_perturbation: float = 2.0  # m s-1, standard deviation of the smooth u, v perturbations
    updraft_speed: float = 10.0  # m s-1: convective time scale = cloud depth / updraft_speed

    @property
    def spin_up_steps(self) -> int:
        return round(self.spin_up_days * SECONDS_PER_DAY / self.dt_s)

    @property
    def nframes(self) -> int:
        return round(self.hours * 3600.0 / self.dt_s)


@dataclasses.dataclass(frozen=True)
class PeriodicField:
    """A smooth random field on a periodic ``ny`` x ``nx`` grid, unit standard deviation,
    that can be translated by any distance (a phase shift of its Fourier coefficients)."""

    spectrum: np.ndarray  # (ny, nx) complex

    @classmethod
    def draw(cls, rng: np.random.Generator, ny: int, nx: int, length_cells: float) -> PeriodicField:
        ky, kx = np.meshgrid(np.fft.fftfreq(ny), np.fft.fftfreq(nx), indexing="ij")
        gaussian = np.exp(-0.5 * (2.0 * np.pi * length_cells) ** 2 * (kx**2 + ky**2))
        spectrum = np.fft.fft2(rng.standard_normal((ny, nx))) * gaussian
        spectrum[0, 0] = 0.0
        field = np.fft.ifft2(spectrum).real
        return cls(spectrum / field.std())

    def at(self, shift_x: float = 0.0, shift_y: float = 0.0) -> np.ndarray:
        """The field moved by ``(shift_x, shift_y)`` grid cells."""
        ny, nx = self.spectrum.shape
        ky, kx = np.meshgrid(np.fft.fftfreq(ny), np.fft.fftfreq(nx), indexing="ij")
        phase = np.exp(-2j * np.pi * (kx * shift_x + ky * shift_y))
        return np.fft.ifft2(self.spectrum * phase).real


@dataclasses.dataclass(frozen=True)
class GridForcing:
    """The random draws of one WRF-format set: the grid's columns (SST, the WTG reference SST,
    where and when the SST was taken; row-major over (y, x)) and the fields that travel."""

    columns: ColumnSet
    omega_travelling: PeriodicField
    u: PeriodicField
    v: PeriodicField
    config: WrfSetConfig

    @classmethod
    def draw(cls, config: WrfSetConfig, rng: np.random.Generator) -> GridForcing:
        """A tropical SST from the climatology plus a smooth anomaly; omega, u, v fields."""
        ny, nx = config.ny, config.nx
        centre = sample_sst(1, rng)
        sst = (
            centre.sst[0]
            + config.sst_std_k * PeriodicField.draw(rng, ny, nx, config.correlation_cells).at()
        ).ravel()
        omega, u, v = (PeriodicField.draw(rng, ny, nx, config.correlation_cells) for _ in range(3))
        ncol = nx * ny
        columns = ColumnSet(
            sst=sst,
            ps=np.full(ncol, PS_MEAN),  # one surface pressure: WRF's eta levels need one P_TOP
            omega0=np.zeros(ncol),  # set below: it needs the reference SST
            lat=np.full(ncol, centre.lat[0]),
            lon=np.full(ncol, centre.lon[0]),
            month=np.full(ncol, centre.month[0]),
            sst_ref=float(sst.mean()),
        )
        forcing = cls(columns, omega, u, v, config)
        return dataclasses.replace(
            forcing, columns=dataclasses.replace(columns, omega0=forcing.omega0(0.0))
        )

    def plus4k(self) -> GridForcing:
        """The same grid and draws in the +4K climate (``ColumnSet.plus4k``: SST and WTG
        reference SST 4 K warmer; omega follows the unchanged SST anomaly)."""
        return dataclasses.replace(self, columns=self.columns.plus4k())

    def shift(self, time_s: float) -> tuple[float, float]:
        u, v = self.config.steering_wind
        return u * time_s / self.config.dx_m, v * time_s / self.config.dx_m

    def omega0(self, time_s: float) -> np.ndarray:
        noise = self.config.omega_travelling * self.omega_travelling.at(*self.shift(time_s))
        return omega_amplitude(self.columns.sst - self.columns.sst_ref, noise.ravel())

    def winds(self, time_s: float, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """u, v at mass points, ``(ncol, nlev)``: a sheared profile (the steering wind near
        700 hPa) plus the travelling perturbations."""
        c = self.config
        shift = self.shift(time_s)
        profile_u = c.steering_wind[0] + c.wind_shear * (0.7 - sigma)
        du = c.wind_perturbation * self.u.at(*shift).ravel()
        dv = c.wind_perturbation * self.v.at(*shift).ravel()
        u = profile_u[None, :] + du[:, None]
        return u, np.broadcast_to(c.steering_wind[1] + dv[:, None], u.shape)


def convective_timescale(
    p: np.ndarray,
    t: np.ndarray,
    base: np.ndarray,
    top: np.ndarray,
    updraft_speed: float,
    shortest_s: float,
) -> np.ndarray:
    """Cloud depth / updraft speed, in [shortest_s, MAX_TIMESCALE_S]; ``p``, ``t`` are
    ``(..., nlev)``, ``base``, ``top`` 0-based levels ``(...)`` (negative: no cloud)."""

    def take(a: np.ndarray, level: np.ndarray) -> np.ndarray:
        return np.take_along_axis(a, np.maximum(level, 0)[..., None], axis=-1)[..., 0]

    depth = (
        RD * 0.5 * (take(t, base) + take(t, top)) / GRAVITY * np.log(take(p, base) / take(p, top))
    )
    return np.clip(np.where(top > base, depth, 0.0) / updraft_speed, shortest_s, MAX_TIMESCALE_S)


def lcl_height(t: np.ndarray, q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Height (m) above its level at which air (t, q, p) saturates when lifted dry: Bolton's
    (1980) LCL temperature, the column model's formula, on the dry adiabat."""
    e = q * p / (EPSILON + (1.0 - EPSILON) * q)
    rh = np.minimum(e / (611.2 * np.exp(17.67 * (t - 273.15) / (t - 29.65))), 1.0)
    t_lcl = 55.0 + 1.0 / (1.0 / (t - 55.0) - np.log(rh) / 2840.0)
    return CP / GRAVITY * (t - t_lcl)


@dataclasses.dataclass(frozen=True)
class WrfSet:
    """The files written, how much of the grid convects (over all frames) and the state the
    files hold (for the out-of-range figures of a warmer twin)."""

    paths: list[Path]
    triggered_fraction: float  # the scheme triggered at the frame's call (shallow included)
    raining_fraction: float  # PRATEC > 0 in the frame
    fresh_fraction: float  # of the columns with NCA > 0, those the frame's call recomputed
    eta: np.ndarray  # (nlev,) ZNU, surface first
    state: dict[str, np.ndarray]  # t (K), qv (kg kg-1): (frames, ncol, nlev) float32


def make_wrf_set(
    out_dir: str | os.PathLike,
    config: WrfSetConfig,
    forcing: GridForcing,
    scenario: str = "historical",
    usage: str = "training",
) -> WrfSet:
    """Run the grid's columns under ``forcing`` and write the ``wrfout_d01_*`` files;
    ``scenario`` and ``usage`` go into DATASET_NOTE."""
    grid = forcing.columns
    model_settings = model_config(grid, wtg=True, dt_s=config.dt_s, nlev=config.nlev)
    with ColumnModel(model_settings) as model:
        frames = _run(model, forcing, config)
        p, p_int = model.pressure()
        p_omega_top = model.get_parameter("p_omega_top")
        ustar = np.sqrt(model_settings.exchange_coefficient) * model_settings.surface_wind
    start = datetime(2000, int(grid.month[0]), 1)
    times = [start + timedelta(seconds=float(s)) for s in frames["time_s"]]
    wrf_frames, fresh = _wrf_frames(frames, p, p_int, p_omega_top, ustar, grid.sst, times, config)
    wrf_config = WrfConfig(
        simulation_start=start,
        scheme=Scheme.EMANUEL.value,
        dx=config.dx_m,
        dy=config.dx_m,
        dt=config.wrf_dt_s,
        cudt_min=config.dt_s / 60.0,
        frames_per_file=config.frames_per_file,
        note=(
            "Columns of the paramlib column model (WTG, prescribed omega and winds as smooth "
            "random fields, SST from the NOAA OI SST climatology plus a smooth anomaly); the "
            "state evolves with the scheme's output of every call. Scenario: "
            f"{scenario}, WTG reference SST {grid.sst_ref:.2f} K; usage: {usage}."
        ),
    )
    active = wrf_frames.fields["NCA"].reshape(fresh.shape) > 0
    return WrfSet(
        paths=write_wrfout(out_dir, wrf_frames, wrf_config),
        triggered_fraction=float(np.mean(frames["triggered"])),
        raining_fraction=float(np.mean(wrf_frames.fields["PRATEC"] > 0)),
        fresh_fraction=float(np.mean(fresh[active])),
        eta=eta_levels(wrf_frames.p_w)[2],
        state={
            "t": frames["t"].astype(np.float32),
            "qv": mixing_ratio(frames["q"]).astype(np.float32),
        },
    )


def _run(model: ColumnModel, forcing: GridForcing, config: WrfSetConfig) -> dict[str, np.ndarray]:
    """Spin up, then one frame per step: the state, the winds and omega0 it saw, the Emanuel
    call on it and the surface fluxes of the step."""
    p, p_int = model.pressure()
    sigma = p[0] / p_int[0, 0]
    emanuel = EmanuelColumns(model.ncol, model.nlev, config.dt_s)
    saved: dict[str, list[np.ndarray]] = {}
    keep = (
        "dTdt",
        "dqdt",
        "dudt",
        "dvdt",
        "precip",
        "triggered",
        "cloud_base_level",
        "cloud_top_level",
    )
    for step in range(config.spin_up_steps + config.nframes):
        time_s = step * config.dt_s
        omega0 = forcing.omega0(time_s)
        model.set_columns(omega0=omega0)
        u, v = forcing.winds(time_s, sigma)
        t, q = model.state()
        result: EmanuelResult = emanuel.step(p, p_int, t, q, u, v)
        model.step_supplied(result.dTdt, result.dqdt, result.precip)
        if step >= config.spin_up_steps:
            shflx, lhflx = model.surface_fluxes()
            values = {"time_s": np.array(time_s), "t": t, "q": q, "u": u, "v": v, "omega0": omega0}
            values |= {"shflx": shflx, "lhflx": lhflx}
            values |= {name: getattr(result, name) for name in keep}
            for name, value in values.items():
                saved.setdefault(name, []).append(value)
    return {name: np.stack(values) for name, values in saved.items()}


def _wrf_frames(
    f: dict[str, np.ndarray],
    p: np.ndarray,
    p_int: np.ndarray,
    p_omega_top: float,
    ustar: float,
    sst: np.ndarray,
    times: list[datetime],
    config: WrfSetConfig,
) -> tuple[WrfFrames, np.ndarray]:
    """The saved frames in WRF's form and layout, and which columns each call recomputed
    (``(nt, ncol)``, see ``nca_hold``)."""
    nt, ncol, nz = f["t"].shape
    ny, nx = config.ny, config.nx
    p_t = np.broadcast_to(p, (nt, ncol, nz))
    cumulus = cumulus_to_wrf(
        p_t,
        f["q"],
        f["dTdt"],
        f["dqdt"],
        f["precip"],
        f["triggered"],
        f["cloud_base_level"],
        f["cloud_top_level"],
        nz,
    )
    timescale = convective_timescale(
        p_t, f["t"], f["cloud_base_level"], f["cloud_top_level"], config.updraft_speed, config.dt_s
    )
    carried = {name: cumulus[name] for name in CARRIED[:3]}
    carried |= {"RUCUTEN": f["dudt"], "RVCUTEN": f["dvdt"]}
    held = nca_hold(
        f["triggered"],
        timescale,
        {name: cumulus[name] for name in HELD},
        carried,
        dt_s=config.wrf_dt_s,
        cudt_s=config.dt_s,
    )
    w = _vertical_velocity(f["t"], f["q"], p_int, f["omega0"], p_omega_top)
    w_mass = 0.5 * (w[..., :-1] + w[..., 1:])
    w0avg = _w0avg(w_mass, round(config.dt_s / config.wrf_dt_s))
    t1, q1, p1 = f["t"][..., 0], f["q"][..., 0], p[:, 0]
    level1 = RD * t1 / GRAVITY * np.log(p_int[:, 0] / p1)

    def grid3(a: np.ndarray) -> np.ndarray:  # (nt, ncol, nlev) -> (nt, nlev, ny, nx)
        a = np.broadcast_to(a, (nt, ncol, a.shape[-1]))
        return a.reshape(nt, ny, nx, -1).transpose(0, 3, 1, 2)

    def grid2(a: np.ndarray) -> np.ndarray:  # (nt, ncol) -> (nt, ny, nx)
        return np.broadcast_to(a, (nt, ncol)).reshape(nt, ny, nx)

    zeros = np.zeros((nt, nz, ny, nx))
    fields = {name: grid3(held.tendencies[name]) for name in HELD}
    fields |= {name: zeros for name in CONDENSATE}
    fields |= {name: grid2(held.carried[name]) for name in CARRIED[:3]}
    fields |= {name: grid3(held.carried[name]) for name in CARRIED[3:]}
    fields |= {
        "NCA": grid2(held.nca),
        "W0AVG": grid3(w0avg),
        "HFX": grid2(f["shflx"]),
        "QFX": grid2(f["lhflx"] / LV),
        "UST": np.full((nt, ny, nx), ustar),
        "PBLH": grid2(level1 + lcl_height(t1, q1, p1)),
        "XLAND": np.full((nt, ny, nx), 2.0),
        "SST": grid2(sst),
    }
    frames = WrfFrames(
        times=times,
        T=grid3(f["t"]),
        q=grid3(f["q"]),
        p=grid3(p),
        p_w=grid3(p_int),
        u=grid3(f["u"]),
        v=grid3(f["v"]),
        w=grid3(w),
        fields=fields,
    )
    return frames, held.fresh


def _vertical_velocity(
    t: np.ndarray, q: np.ndarray, p_int: np.ndarray, omega0: np.ndarray, p_omega_top: float
) -> np.ndarray:
    """w = -omega / (rho g) at the interfaces ``(nt, ncol, nlev + 1)``, rho from the mean
    virtual temperature of the layers either side (the nearest layer at the ends)."""
    tv = t * (1.0 + q * (1.0 / EPSILON - 1.0))
    tv_int = np.concatenate(
        [tv[..., :1], 0.5 * (tv[..., 1:] + tv[..., :-1]), tv[..., -1:]], axis=-1
    )
    omega = omega_profile(p_int, p_int[:, 0], omega0, p_omega_top)
    return -omega * RD * tv_int / (p_int * GRAVITY)


def _w0avg(w_mass: np.ndarray, stepcu: int) -> np.ndarray:
    """W0AVG at each frame: starting from the first frame's w, ``stepcu`` WRF steps of the
    running mean per cumulus interval with w held at the frame's value."""
    out = np.empty_like(w_mass)
    current = w_mass[0]
    for k, w in enumerate(w_mass):
        for _ in range(stepcu if k else 0):
            current = w0avg_update(current, w, stepcu)
        out[k] = current
    return out

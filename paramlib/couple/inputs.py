"""What ``paramlib_scm`` reads: a columns file (netCDF) and a namelist.

The columns are tropical ocean cells drawn from the testbed's SST climatology
(`paramlib.testbed.runs.sample_columns`) with the large-scale ascent that follows their
SST; the WTG reference SST and the Betts-Miller parameters come from the testbed the model was
trained on (its ``summary.json``), so the host runs the climate of the training data and the
Betts-Miller inputs of an HF([BM, x]) model are the ones it was trained with. Every column-model
parameter is written to the namelist from `runs.model_config`, the testbed's own settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr

from paramlib.paths import TESTBED_ENV
from paramlib.testbed import runs
from paramlib.testbed.column import MODEL_PARAMETERS
from paramlib.testbed.generate import SUMMARY
from paramlib.testbed.sst import PLUS4K_K

SCENARIOS = {"historical": 0.0, "plus4k": PLUS4K_K}  # name: SST shift, K
MODES = ("physics", "ml", "hybrid", "stochastic")


class CoupleError(RuntimeError):
    """A coupled run could not be prepared, run or read; the message says what and where."""


@dataclasses.dataclass(frozen=True)
class TestbedClimate:
    """What the host takes from the testbed: the Betts-Miller parameters tuned on it, the WTG
    reference SST of its historical climate and its spin-up (the training states come after it;
    the reference spins up as long)."""

    bm_tau: float  # s
    bm_rh: float
    sst_ref: float  # K, historical
    spin_up_days: float

    @classmethod
    def read(cls, testbed: str | os.PathLike[str]) -> TestbedClimate:
        path = Path(testbed) / SUMMARY
        try:
            summary = json.loads(path.read_text())
            return cls(
                bm_tau=float(summary["bm_tau_s"]),
                bm_rh=float(summary["bm_rh"]),
                sst_ref=float(summary["wtg_sst_ref_K"]["historical"]),
                spin_up_days=float(summary["spin_up_days"]),
            )
        except FileNotFoundError:
            raise CoupleError(
                f"{path}: no testbed summary; generate one with `paramlib data testbed --out "
                f"{Path(testbed)}` or point --testbed / ${TESTBED_ENV} at the model's testbed"
            ) from None
        except (KeyError, TypeError, ValueError) as error:
            raise CoupleError(f"{path}: not a testbed summary ({error})") from None


@dataclasses.dataclass(frozen=True)
class RunSetup:
    """Columns, length and step of a run. ``output_every`` steps make one output record."""

    ncol: int = 64
    days: float = 30.0
    dt_s: float = 1200.0
    output_every: int = 3
    seed: int = 0  # of the column draw
    wtg: bool = True

    @property
    def nsteps(self) -> int:
        return round(self.days * runs.SECONDS_PER_DAY / self.dt_s)

    def __post_init__(self) -> None:
        if self.ncol < 1 or self.days <= 0 or self.dt_s <= 0 or self.output_every < 1:
            raise CoupleError(f"run setup: ncol, days, dt_s, output_every must be positive: {self}")
        if self.nsteps % self.output_every:
            raise CoupleError(
                f"run setup: {self.nsteps} steps are not whole output intervals of "
                f"{self.output_every} steps"
            )


@dataclasses.dataclass(frozen=True)
class Coupling:
    """The column interface's settings (paramlib_column_physics: column_physics_config)."""

    mode: str = "physics"
    model: Path | None = None
    spread_max: float = 200.0  # W m-2
    ood_margin: float = 0.0
    seed: int = 0
    fix_water: bool = True
    fix_precip: bool = True
    p_zero_above: float = 0.0  # Pa
    allow_missing_model: bool = False  # hybrid: Betts-Miller alone when the model file is absent
    model_sha256: str = ""  # the model file's expected SHA-256 (hex), checked before loading

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise CoupleError(f"mode: expected one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode != "physics" and self.model is None:
            raise CoupleError(f"mode {self.mode} needs a model file")


def model_name(path: Path) -> str:
    """A model file's name in labels: its run directory for a trainer's RUN/model.pt."""
    return path.parent.name if path.stem == "model" else path.stem


def column_set(setup: RunSetup, climate: TestbedClimate) -> runs.ColumnSet:
    """``setup.ncol`` historical columns drawn with ``setup.seed``, on the testbed's WTG
    reference SST (the run's SST shift is applied by the host)."""
    columns = runs.sample_columns(setup.ncol, np.random.default_rng(setup.seed))
    return dataclasses.replace(columns, sst_ref=climate.sst_ref)


def write_columns(
    path: Path,
    columns: runs.ColumnSet,
    state: tuple[np.ndarray, np.ndarray] | None = None,
    attrs: Mapping[str, object] | None = None,
) -> Path:
    """The columns file: ps, sst, omega0, solin per column and, as the initial state, t and q
    ``(ncol, nlev)`` when given."""
    data = {
        "ps": ("col", columns.ps, {"units": "Pa", "standard_name": "surface_air_pressure"}),
        "sst": ("col", columns.sst, {"units": "K", "standard_name": "sea_surface_temperature"}),
        "omega0": ("col", columns.omega0, {"units": "Pa s-1"}),
        "solin": ("col", columns.solin, {"units": "W m-2"}),
    }
    if state is not None:
        data["t"] = (("col", "lev"), state[0], {"units": "K"})
        data["q"] = (("col", "lev"), state[1], {"units": "kg kg-1"})
    dataset = xr.Dataset(
        {
            name: xr.Variable(dims, np.asarray(v, dtype=np.float64), a)
            for name, (dims, v, a) in data.items()
        },
        attrs={"sst_ref": columns.sst_ref, **dict(attrs or {})},
    )
    dataset.to_netcdf(path)
    return path


def read_column_set(path: Path) -> tuple[runs.ColumnSet, xr.Dataset]:
    """The columns of a columns file (lat, lon, month are not kept there: zeros), and the file."""
    with xr.open_dataset(path) as opened:
        data = opened.load()
    n = data.sizes["col"]
    columns = runs.ColumnSet(
        sst=data["sst"].values,
        ps=data["ps"].values,
        omega0=data["omega0"].values,
        lat=np.zeros(n),
        lon=np.zeros(n),
        month=np.ones(n, dtype=int),
        sst_ref=float(data.attrs["sst_ref"]),
    )
    return columns, data


def _fortran(value: object) -> str:
    if isinstance(value, bool):
        return ".true." if value else ".false."
    if isinstance(value, str | Path):
        return "'" + str(value).replace("'", "''") + "'"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list | tuple):
        return ", ".join(_fortran(v) for v in value)
    return str(value)


def namelist_text(groups: Mapping[str, Mapping[str, object]]) -> str:
    lines = []
    for group, entries in groups.items():
        lines.append(f"&{group}")
        lines += [f"  {key} = {_fortran(value)}" for key, value in entries.items()]
        lines.append("/")
    return "\n".join(lines) + "\n"


def write_namelist(
    path: Path,
    columns_file: Path,
    output_file: Path,
    columns: runs.ColumnSet,
    setup: RunSetup,
    coupling: Coupling,
    climate: TestbedClimate,
    scenario: str,
    chunk_size: int = 16,
    device: str = "cpu",
) -> Path:
    """The namelist of one run (fortran_bridge/host/scm/scm_config.f90)."""
    if scenario not in SCENARIOS:
        raise CoupleError(f"scenario: expected one of {', '.join(SCENARIOS)}, got {scenario!r}")
    config = runs.model_config(columns, setup.wtg, setup.dt_s)
    parameters = {name: float(getattr(config, name)) for name in MODEL_PARAMETERS}
    parameters["sst_ref"] = config.reference_sst()
    groups = {
        "scm_run": {
            "columns_file": columns_file.resolve(),
            "output_file": output_file.resolve(),
            "nlev": config.nlev,
            "nsteps": setup.nsteps,
            "output_every": setup.output_every,
            "chunk_size": chunk_size,
            "sst_shift": SCENARIOS[scenario],
            "wtg": setup.wtg,
            "device": device,
        },
        "scm_column": {
            "parameter_names": list(parameters),
            "parameter_values": list(parameters.values()),
        },
        "scm_coupling": {
            "mode": coupling.mode,
            "model_path": coupling.model.resolve() if coupling.model else "",
            "allow_missing_model": coupling.allow_missing_model,
            "model_sha256": coupling.model_sha256,
            "spread_max": float(coupling.spread_max),
            "ood_margin": float(coupling.ood_margin),
            "seed": int(coupling.seed),
            "bm_tau": climate.bm_tau,
            "bm_rh": climate.bm_rh,
            "fix_water": coupling.fix_water,
            "fix_precip": coupling.fix_precip,
            "p_zero_above": float(coupling.p_zero_above),
        },
    }
    path.write_text(namelist_text(groups))
    return path

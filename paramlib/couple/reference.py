"""The high-fidelity reference of the online experiments: the same column model with the Emanuel
scheme, stepped from Python through the testbed tooling (`paramlib.testbed.runs`), on the
same columns, forcing and SSTs as the coupled runs, written in the layout of paramlib_scm's
output so that `report` compares the two directly.

The reference spins up from the model's initial state for ``spinup_days`` (by default as long
as the testbed did before its first training sample); the state it reaches
is the initial state of the coupled runs (their columns file, written next to the reference),
so every run starts from the high-fidelity model's own balanced state. Record k holds the state
after k * output_every steps and the means of convection, large-scale precipitation over those
steps, as paramlib_scm writes them.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import xarray as xr

from paramlib.constants import GRAVITY
from paramlib.couple.inputs import (
    SCENARIOS,
    CoupleError,
    RunSetup,
    TestbedClimate,
    column_set,
    write_columns,
)
from paramlib.testbed import runs

REFERENCE_FILE = "reference.nc"
COLUMNS_FILE = "columns.nc"
SETTINGS_FILE = "reference.json"
TIME_UNITS = "seconds since 2000-01-01 00:00:00"  # paramlib_scm's time axis


def reference(
    out: Path,
    scenario: str,
    setup: RunSetup,
    climate: TestbedClimate,
    spinup_days: float | None = None,
) -> Path:
    """Run (or find up to date in ``out``) the Emanuel reference; returns ``out``, which holds
    reference.nc, columns.nc (the coupled runs' columns and initial state) and reference.json.
    The spin-up defaults to the testbed's."""
    if spinup_days is None:
        spinup_days = climate.spin_up_days
    if scenario not in SCENARIOS:
        raise CoupleError(f"scenario: expected one of {', '.join(SCENARIOS)}, got {scenario!r}")
    settings = {
        "scenario": scenario,
        "setup": dataclasses.asdict(setup),
        "spinup_days": spinup_days,
        "climate": dataclasses.asdict(climate),
    }
    out.mkdir(parents=True, exist_ok=True)
    record = out / SETTINGS_FILE
    if (
        record.is_file()
        and (out / REFERENCE_FILE).is_file()
        and json.loads(record.read_text()) == settings
    ):
        return out
    columns = column_set(setup, climate)
    run = runs.run_columns(
        columns.plus4k() if scenario == "plus4k" else columns,
        runs.Scheme.EMANUEL,
        runs.Timing(
            spin_up_days=spinup_days,
            save_days=(setup.nsteps + 1) * setup.dt_s / runs.SECONDS_PER_DAY,
            save_every=1,
            dt_s=setup.dt_s,
        ),
        wtg=setup.wtg,
    )
    attrs = {"scenario": scenario, **{k: _attr(v) for k, v in dataclasses.asdict(setup).items()}}
    # The host shifts the SSTs itself: the columns file holds the historical ones.
    write_columns(out / COLUMNS_FILE, columns, (run.t[0], run.q[0]), attrs)
    as_scm_output(run, setup, scenario).to_netcdf(out / REFERENCE_FILE)
    record.write_text(json.dumps(settings, indent=2) + "\n")
    return out


def _attr(value: object) -> object:
    return int(value) if isinstance(value, bool) else value


def as_scm_output(run: runs.ColumnRun, setup: RunSetup, scenario: str) -> xr.Dataset:
    """A run saved every step (nsteps + 1 states) as paramlib_scm records."""
    every, nrec = setup.output_every, setup.nsteps // setup.output_every
    if run.t.shape[0] != setup.nsteps + 1:
        raise CoupleError(f"reference: {run.t.shape[0]} states for {setup.nsteps} steps")
    dp = run.p_int[:, :-1] - run.p_int[:, 1:]

    def interval_mean(a: np.ndarray) -> np.ndarray:
        """(nsteps + 1, ...) per-step values -> (nrec, ...) means of steps 0..every-1, ..."""
        return a[: nrec * every].reshape(nrec, every, *a.shape[1:]).mean(axis=1)

    ends = slice(every, nrec * every + 1, every)
    t, q = run.t[ends], run.q[ends]
    level, column = ("time", "col", "lev"), ("time", "col")
    data = {
        "t": (level, t, "K", "air_temperature"),
        "q": (level, q, "kg kg-1", "specific_humidity"),
        "pw": (
            column,
            (q * dp).sum(axis=-1) / GRAVITY,
            "kg m-2",
            "atmosphere_mass_content_of_water_vapor",
        ),
        "dtdt_conv": (
            level,
            interval_mean(run.convection.dtdt),
            "K s-1",
            "tendency_of_air_temperature_due_to_convection",
        ),
        "dqdt_conv": (
            level,
            interval_mean(run.convection.dqdt),
            "kg kg-1 s-1",
            "tendency_of_specific_humidity_due_to_convection",
        ),
        "precip": (
            column,
            interval_mean(run.convection.precip),
            "kg m-2 s-1",
            "convective_precipitation_flux",
        ),
        "precip_ls": (
            column,
            interval_mean(run.precl),
            "kg m-2 s-1",
            "large_scale_precipitation_flux",
        ),
        "p": (("col", "lev"), run.p, "Pa", "air_pressure"),
        "dp": (("col", "lev"), dp, "Pa", None),
        "ps": ("col", run.columns.ps, "Pa", "surface_air_pressure"),
        "sst": ("col", run.columns.sst, "K", "sea_surface_temperature"),
        "omega0": ("col", run.columns.omega0, "Pa s-1", None),
        "solin": ("col", run.columns.solin, "W m-2", "toa_incoming_shortwave_flux"),
    }
    variables = {
        name: xr.Variable(dims, np.asarray(values), _cf(units, standard))
        for name, (dims, values, units, standard) in data.items()
    }
    seconds = setup.dt_s * every * np.arange(1, nrec + 1)
    return xr.Dataset(
        variables,
        coords={
            "time": ("time", seconds, {"units": TIME_UNITS, "calendar": "standard"}),
            "col": ("col", np.arange(1, run.columns.ncol + 1, dtype=np.int32)),
        },
        attrs={
            "Conventions": "CF-1.8",
            "title": "high-fidelity reference: the testbed column model with Emanuel convection",
            "source": f"paramlib.couple.reference, {runs.Scheme.EMANUEL.value}",
            "mode": "reference",
            "scenario": scenario,
            "sst_shift": SCENARIOS[scenario],
            "dt": setup.dt_s,
            "output_every": every,
            "run_status": "completed",
        },
    )


def _cf(units: str, standard_name: str | None) -> dict[str, str]:
    return {"units": units, **({"standard_name": standard_name} if standard_name else {})}

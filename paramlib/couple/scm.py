"""Run ``paramlib_scm`` and open what it wrote.

``run_scm`` starts the executable (``$PARAMLIB_SCM``, else ``<build>/bin/paramlib_scm``) on a
namelist, through ``mpirun -n RANKS`` when ``ranks > 1``; ``threads`` sets OMP_NUM_THREADS, the
OpenMP threads over chunks of columns. Open MPI refuses to start as root unless told: as root
the run sets OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM), and allows more ranks than cores.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import xarray as xr

from paramlib.couple.inputs import (
    CoupleError,
    Coupling,
    RunSetup,
    TestbedClimate,
    column_set,
    read_column_set,
    write_columns,
    write_namelist,
)
from paramlib.couple.reference import COLUMNS_FILE
from paramlib.paths import SCM_ENV, build_dir, default_testbed


def executable() -> Path:
    path = Path(os.environ.get(SCM_ENV) or build_dir() / "bin" / "paramlib_scm")
    if not path.is_file():
        raise CoupleError(
            f"{path}: paramlib_scm is not built; run `make build` (or set ${SCM_ENV})"
        )
    return path


@dataclasses.dataclass(frozen=True)
class ScmResult:
    """A run: its output file, what it printed, its exit status and its timing line (seconds per
    step: step_s the whole host step, convection_s inside the column interface, bridge_s in
    bridge calls, physics_s in Betts-Miller; the slowest rank's; empty when it stopped)."""

    output: Path
    stdout: str
    stderr: str
    timing: dict[str, float]
    returncode: int = 0

    @property
    def completed(self) -> bool:
        return self.returncode == 0

    @property
    def error(self) -> str:
        return "" if self.completed else (self.stderr.strip() or self.stdout.strip())

    def open(self) -> xr.Dataset:
        return open_output(self.output)


def run_scm(
    namelist: Path,
    ranks: int = 1,
    threads: int = 1,
    timeout_s: float | None = None,
    check: bool = True,
) -> ScmResult:
    """Run paramlib_scm on ``namelist``; raise CoupleError with its messages when it fails. With
    ``check=False`` a run that stopped after it began writing (a column left the physical range,
    say) is returned instead: its output holds the records written and says why in run_status."""
    output = Path(_namelist_value(namelist, "output_file"))
    output.unlink(missing_ok=True)  # an earlier run's file must not pass for this one's
    command = [str(executable()), str(namelist)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    if ranks > 1:
        mpirun = shutil.which("mpirun")
        if mpirun is None:
            raise CoupleError("mpirun not found: install openmpi-bin or run with one rank")
        command = [mpirun, "-n", str(ranks), *command]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            env.update(
                OMPI_ALLOW_RUN_AS_ROOT="1",
                OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                OMPI_MCA_rmaps_base_oversubscribe="1",
            )
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout_s)
    if done.returncode != 0 and (check or not output.is_file()):
        raise CoupleError(
            f"paramlib_scm {namelist} failed (exit {done.returncode}):\n"
            f"{done.stderr.strip() or done.stdout.strip()}"
        )
    timing: dict[str, float] = {}
    for line in done.stdout.splitlines():
        if line.startswith("timing "):
            timing = json.loads(line.removeprefix("timing "))
    return ScmResult(output, done.stdout, done.stderr, timing, done.returncode)


def _namelist_value(namelist: Path, key: str) -> str:
    for line in namelist.read_text().splitlines():
        name, _, value = line.partition("=")
        if name.strip() == key:
            return value.strip().strip("'")
    raise CoupleError(f"{namelist}: no {key}")


def open_output(path: Path) -> xr.Dataset:
    """The output file, loaded (the file is closed again)."""
    try:
        with xr.open_dataset(path) as data:
            return data.load()
    except (OSError, ValueError) as error:
        raise CoupleError(f"{path}: cannot read the run's output ({error})") from None


NAMELIST_FILE = "scm.nml"
OUTPUT_FILE = "scm.nc"


def run_coupled(
    out: Path,
    scenario: str,
    coupling: Coupling,
    *,
    setup: RunSetup | None = None,
    reference: Path | None = None,
    testbed: Path | None = None,
    climate: TestbedClimate | None = None,
    ranks: int = 1,
    threads: int = 1,
    chunk_size: int = 16,
    device: str = "cpu",
    check: bool = True,
) -> ScmResult:
    """One coupled run into ``out`` (namelist, columns file, output). With ``reference`` (a
    directory `reference.reference` wrote for the same scenario) the run takes its columns,
    initial state, length and step; otherwise ``setup`` (default `RunSetup()`) and the model's
    initial state. ``climate`` (default: read from ``testbed``, $PARAMLIB_TESTBED or the demo's)
    gives the Betts-Miller parameters and the WTG reference SST. ``check``: as in `run_scm`."""
    climate = climate or TestbedClimate.read(testbed or default_testbed())
    out.mkdir(parents=True, exist_ok=True)
    if reference is not None:
        columns_file = reference / COLUMNS_FILE
        if not columns_file.is_file():
            raise CoupleError(
                f"{reference}: no {COLUMNS_FILE}; write it with `paramlib couple reference`"
            )
        columns, data = read_column_set(columns_file)
        if data.attrs.get("scenario") != scenario:
            raise CoupleError(
                f"{reference} is the {data.attrs.get('scenario')} reference, the run is {scenario}"
            )
        try:
            setup = RunSetup(**{f.name: data.attrs[f.name] for f in dataclasses.fields(RunSetup)})
        except KeyError as error:
            raise CoupleError(f"{columns_file}: no attribute {error}") from None
        setup = dataclasses.replace(setup, wtg=bool(setup.wtg))
    else:
        setup = setup or RunSetup()
        columns = column_set(setup, climate)
        columns_file = write_columns(out / COLUMNS_FILE, columns)
    namelist = write_namelist(
        out / NAMELIST_FILE,
        columns_file,
        out / OUTPUT_FILE,
        columns,
        setup,
        coupling,
        climate,
        scenario,
        chunk_size,
        device,
    )
    return run_scm(namelist, ranks=ranks, threads=threads, check=check)

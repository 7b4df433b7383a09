"""The WRF cumulus plugin's contract on the Python side: its fields and constants
(fortran_bridge/wrf/module_cu_paramlib.F), its namelist options, and the WRF-shaped test
driver (build/bin/wrf_plugin_driver, fortran_bridge/wrf/tests/wrf_plugin_driver.F90), which
calls module_cu_paramlib as WRF does on a real WRF state and, with ``output``, writes its first
call's inputs and every call's outputs to netCDF.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from paramlib.paths import build_dir

TARGETS = ["rthcuten", "rqvcuten", "rqccuten", "rqrcuten", "rqicuten", "rqscuten", "pratec", "nca"]
TENDENCIES = tuple(TARGETS[:6])  # MSKF's outputs on mass levels
HYDROMETEORS = TENDENCIES[2:]
# The plugin's constants (module_cu_paramlib.F), in its float32 arithmetic.
TOP_FRACTION = 5e-4  # paramlib_cu_top_fraction's default
XLV_CP = np.float32(2.5e6) / np.float32(3.5 * 287.0)  # L/cp of WRF's module_model_constants
DRY_MARGIN = np.float32(1.0) - np.float32(1e-5)


@dataclass(frozen=True)
class PluginOptions:
    """The plugin's &physics options in WRF's namelist.input."""

    model: str
    device: int = 0
    device_index: int = 0
    fallback: int = 0
    threads: int = 1
    sha256: str = "none"  # the model file's expected SHA-256; none: not pinned
    on_error: int = 0  # a failed model call on a tile: 0 stops WRF, 1 zero outputs there
    top_fraction: float = TOP_FRACTION  # cloud top: activity >= this x the column's largest
    water_closure: int = 0  # 1: PRATEC = the column's net water loss
    ood_every: int = 0  # cumulus calls between out-of-range logs; 0: the calls in one hour


@dataclass(frozen=True)
class DriverSettings:
    """&driver of wrf_plugin_driver (meanings in its header)."""

    mode: str = "run"
    wrfout: str = ""
    first_frame: int = 2
    ncalls: int = 3
    tiles_x: int = 3
    tiles_y: int = 2
    halo: int = 3
    nan_columns: int = 3
    output: str = ""
    levels: int = 0


def driver_path() -> Path:
    return build_dir() / "bin" / "wrf_plugin_driver"


def _value(v: object) -> str:
    return f"'{v}'" if isinstance(v, str) else str(v)


def write_namelist(path: Path, options: PluginOptions, settings: DriverSettings) -> Path:
    physics = {f"paramlib_cu_{k}": v for k, v in asdict(options).items()}
    groups = {"physics": physics, "driver": asdict(settings)}
    text = "".join(
        f"&{name}\n" + "".join(f"  {k} = {_value(v)},\n" for k, v in values.items()) + "/\n"
        for name, values in groups.items()
    )
    path.write_text(text)
    return path


def run_driver(
    namelist: Path,
    threads: int = 3,
    timeout: float = 600,
    env: Mapping[str, str] | None = None,
    program: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the driver (default: the build's) on a namelist with `threads` OpenMP threads."""
    program = program or driver_path()
    if not program.is_file():
        raise FileNotFoundError(
            f"{program} is not built: cmake --build build --target wrf_plugin_tests"
        )
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), **(env or {})}
    return subprocess.run(
        [str(program), str(namelist)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )

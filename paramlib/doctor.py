"""`paramlib doctor`: is everything needed to build and run the bridge here?

Each check is a small function returning a CheckResult; `run_checks` collects them and
`fix_commands` turns the failed ones into the commands that fix them.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from paramlib import __version__
from paramlib.cli import Subparsers
from paramlib.paths import (
    BINDINGS_GLOB,
    BUILD_DIR_ENV,
    PACKAGE_DIR,
    REPO_ROOT,
    bridge_library_path,
    find_bindings,
)

# (command, Debian package that provides it); `make setup` installs the same list.
TOOLS: tuple[tuple[str, str], ...] = (
    ("gfortran", "gfortran"),
    ("g++", "g++"),
    ("cmake", "cmake"),
    ("pkg-config", "pkg-config"),
    ("mpif90", "libopenmpi-dev"),
    ("mpirun", "openmpi-bin"),
    ("nf-config", "libnetcdff-dev"),
    # The local SLURM the tests start (tests/slurm_cluster.py); daemons by path, as sbin is
    # not on a normal user's PATH.
    ("/usr/sbin/slurmctld", "slurmctld"),
    ("/usr/sbin/slurmd", "slurmd"),
    ("sbatch", "slurm-client"),
    ("munge", "munge"),
)
JSON_HEADER = Path("nlohmann") / "json.hpp"
JSON_HEADER_PACKAGE = "nlohmann-json3-dev"
INCLUDE_DIRS: tuple[Path, ...] = (Path("/usr/include"), Path("/usr/local/include"))
VERSION_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str  # version or path when ok, what is wrong otherwise
    required: bool = True
    apt_package: str | None = None  # Debian package that fixes a failure
    fix: str | None = None  # other command that fixes a failure


# How a tool tells its version when not by --version; None: it cannot without a cluster
# configuration (sbatch fails with DNS errors), so its path is shown.
VERSION_FLAGS: dict[str, str | None] = {
    "/usr/sbin/slurmctld": "-V",
    "/usr/sbin/slurmd": "-V",
    "sbatch": None,
}


def tool_version(command: str, search_path: str | None = None) -> str | None:
    """First line `command --version` prints, the tool's path if it prints nothing, None if
    the command is not on the PATH (or `search_path`)."""
    executable = shutil.which(command, path=search_path)
    if executable is None:
        return None
    flag = VERSION_FLAGS.get(command, "--version")
    if flag is None:
        return executable
    try:
        done = subprocess.run(
            [executable, flag],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return executable
    for line in (done.stdout + done.stderr).splitlines():
        if line.strip():
            return line.strip()
    return executable


def check_tool(command: str, apt_package: str, search_path: str | None = None) -> CheckResult:
    version = tool_version(command, search_path)
    return CheckResult(
        name=command,
        ok=version is not None,
        detail=version if version is not None else "missing",
        apt_package=apt_package,
    )


def check_json_header(include_dirs: Sequence[Path] = INCLUDE_DIRS) -> CheckResult:
    for include_dir in include_dirs:
        header = include_dir / JSON_HEADER
        if header.is_file():
            return CheckResult(name=str(JSON_HEADER), ok=True, detail=str(header))
    return CheckResult(
        name=str(JSON_HEADER),
        ok=False,
        detail="missing (looked in " + ", ".join(str(d) for d in include_dirs) + ")",
        apt_package=JSON_HEADER_PACKAGE,
    )


def check_python() -> CheckResult:
    return CheckResult(
        name="python",
        ok=sys.version_info >= (3, 11),
        detail=f"{platform.python_version()} ({sys.executable})"
        + ("" if sys.version_info >= (3, 11) else "; paramlib needs Python >= 3.11"),
        fix="make setup",
    )


def check_torch() -> list[CheckResult]:
    """torch itself, the libtorch the bridge builds against, and CUDA (optional)."""
    try:
        import torch
        import torch.utils
    except ImportError as error:
        return [CheckResult(name="torch", ok=False, detail=f"missing ({error})", fix="make setup")]
    cmake_dir = Path(torch.utils.cmake_prefix_path)
    torch_config = cmake_dir / "Torch" / "TorchConfig.cmake"
    libtorch = Path(torch.__file__).resolve().parent / "lib" / "libtorch.so"
    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return [
        CheckResult(name="torch", ok=True, detail=torch.__version__),
        CheckResult(
            name="libtorch cmake",
            ok=torch_config.is_file(),
            detail=str(cmake_dir) if torch_config.is_file() else f"{torch_config} not found",
            fix="make setup",
        ),
        CheckResult(
            name="libtorch.so",
            ok=libtorch.is_file(),
            detail=str(libtorch.parent) if libtorch.is_file() else f"{libtorch} not found",
            fix="make setup",
        ),
        CheckResult(
            name="cuda",
            ok=cuda_count > 0,
            detail=f"available, {cuda_count} device(s)" if cuda_count else "not available",
            required=False,
        ),
    ]


def physical_cores(cpus: set[int], sysfs: Path = Path("/sys/devices/system/cpu")) -> int:
    """Physical cores among the logical CPUs `cpus` (hyperthreads of one core count once),
    from the kernel's topology files; the CPU count where they cannot be read."""
    cores = set()
    for cpu in cpus:
        topology = sysfs / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return len(cpus)
        cores.add((package, core))
    return len(cores) or len(cpus)


def training_threads(processes: int = 1, dask_workers: int = 0) -> tuple[int, str]:
    """Torch threads per process for training, and why: the physical cores this process may
    run on, shared by `processes` processes of this node that share them, less cores busy
    with other work (the 1-minute load average, counted only where this process may use
    the whole machine, not in a batch allocation) and `dask_workers`; at least 1. More
    threads than free cores makes torch slower, not faster (7x on a shared 2-core machine)."""
    cpus = os.sched_getaffinity(0)
    cores = physical_cores(cpus)
    whole_machine = len(cpus) == os.cpu_count()
    busy = round(os.getloadavg()[0]) if whole_machine else 0
    threads = max(1, (cores - busy) // max(processes, 1) - dask_workers)
    why = f"{cores} physical core(s) here"
    if busy:
        why += f", about {busy} busy with other work"
    if processes > 1:
        why += f", shared by {processes} processes"
    if dask_workers:
        why += f", {dask_workers} left to dask workers"
    return threads, why


def check_threads() -> CheckResult:
    threads, why = training_threads()
    return CheckResult(
        name="train threads", ok=True, detail=f"{threads} by default ({why})", required=False
    )


def check_bridge_library(library: Path) -> CheckResult:
    return CheckResult(
        name="bridge library",
        ok=library.is_file(),
        detail=str(library) if library.is_file() else f"{library} does not exist",
        fix=f"make -C {REPO_ROOT} build",
    )


def check_bindings(package_dir: Path = PACKAGE_DIR) -> CheckResult:
    found = find_bindings(package_dir)
    return CheckResult(
        name="python bindings",
        ok=bool(found),
        detail=str(found[0]) if found else f"no {package_dir / '_ext' / BINDINGS_GLOB}",
        fix=f"make -C {REPO_ROOT} build",
    )


def run_checks(environ: Mapping[str, str] = os.environ) -> list[CheckResult]:
    return [
        *(check_tool(command, package) for command, package in TOOLS),
        check_json_header(),
        check_python(),
        *check_torch(),
        check_threads(),
        check_bridge_library(bridge_library_path(environ)),
        check_bindings(),
    ]


def missing(checks: Sequence[CheckResult]) -> list[CheckResult]:
    return [check for check in checks if check.required and not check.ok]


def fix_commands(checks: Sequence[CheckResult], is_root: bool) -> list[str]:
    """Commands that fix the failed required checks: one apt line first, then the rest."""
    failed = missing(checks)
    packages = sorted({c.apt_package for c in failed if c.apt_package})
    commands: list[str] = []
    if packages:
        install = "apt-get install -y " + " ".join(packages)
        commands.append(
            f"apt-get update && DEBIAN_FRONTEND=noninteractive {install}"
            if is_root
            else f"sudo {install}"
        )
    for check in failed:
        if check.apt_package is None and check.fix and check.fix not in commands:
            commands.append(check.fix)
    return commands


def format_report(checks: Sequence[CheckResult]) -> str:
    width = max(len(check.name) for check in checks)
    lines = [f"paramlib {__version__} doctor"]
    for check in checks:
        status = "ok" if check.ok else ("MISSING" if check.required else "-")
        lines.append(f"  {status:<8} {check.name:<{width}}  {check.detail}")
    return "\n".join(lines)


def format_missing(checks: Sequence[CheckResult], is_root: bool) -> str:
    failed = missing(checks)
    lines = [f"paramlib doctor: {len(failed)} required item(s) missing:"]
    lines += [f"  {check.name}: {check.detail}" for check in failed]
    lines.append("fix with:")
    lines += [f"  {command}" for command in fix_commands(checks, is_root)]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    checks = run_checks()
    print(format_report(checks))
    if missing(checks):
        print(format_missing(checks, is_root=os.geteuid() == 0), file=sys.stderr)
        return 1
    print("paramlib doctor: everything required is present")
    return 0


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check the toolchain, torch and the bridge build",
        description="Check the toolchain, torch and the bridge build; exit 1 if anything "
        f"required is missing. {BUILD_DIR_ENV} overrides the build directory.",
    )
    parser.set_defaults(func=run)

"""``paramlib wrf``: the WRF coupling's commands (``paramlib wrf check``).

Registered by ``paramlib.cli`` like any subcommand; the implementation (xarray, matplotlib) is
imported inside the handler, so ``paramlib --help`` stays light.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from paramlib.cli import Subparsers

# paramlib.wrf.sounding.VARIANTS (not imported here: it loads numpy).
SOUNDINGS = ("ctl", "qv110", "plus2k", "plus4k")


def _names(text: str) -> list[str]:
    return [name for name in text.split(",") if name]


def _counts(text: str) -> list[int]:
    try:
        return [int(n) for n in text.split(",") if n]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected thread counts like 1,2") from None


TARGETS_MISSED = 3  # the exit status when the check ran but some target was not met


def register(subparsers: Subparsers) -> None:
    wrf = subparsers.add_parser("wrf", help="the WRF cumulus plugin: checks in a real WRF")
    commands = wrf.add_subparsers(dest="wrf_command", metavar="WRF_COMMAND", required=True)
    check = commands.add_parser(
        "check",
        help="build WRF v4.7.1 with the plugin, run it against MSKF, write a report",
        description="Apply the patch kit to a WRF v4.7.1 tree, configure (GNU smpar), link the"
        " bridge, compile em_quarter_ss (skipped when the executables are newer than the"
        " patch), then per sounding run MSKF (cu_physics = 11) and the plugin (cu_physics = 97,"
        " once per OpenMP thread count) for 3 h with the shared data's namelist, and write"
        " OUT/report.md, report.html and report.json (RAINC, active fraction, heating profiles,"
        " negative QVAPOR, NaN, wall times, threads, issue 13's targets). The warm soundings"
        " are test sets only. Exit status: 0 every target met, 3 some target not met (named),"
        " 1 a step failed, 2 bad arguments.",
    )
    check.add_argument("--wrf-dir", type=Path, required=True, help="WRF v4.7.1 source tree")
    check.add_argument(
        "--model", type=Path, required=True, help="TorchScript model (paramlib export)"
    )
    check.add_argument("--out", type=Path, required=True, help="folder for the runs and the report")
    check.add_argument(
        "--prefix",
        type=Path,
        help="where the bridge is installed (cmake --install build --prefix P); needed to link",
    )
    check.add_argument(
        "--soundings",
        type=_names,
        default=list(SOUNDINGS),
        help=f"comma-separated, of {','.join(SOUNDINGS)} (default: all)",
    )
    check.add_argument(
        "--threads",
        type=_counts,
        default=[1, 2],
        help="OpenMP thread counts of the plugin runs; the first is the reference (default 1,2)",
    )
    check.add_argument(
        "--skip-build", action="store_true", help="use the tree's ideal.exe and wrf.exe as they are"
    )
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    from paramlib.guards import UserInputError
    from paramlib.wrf.check import CheckError, check

    def say(line: str) -> None:
        print(f"paramlib wrf check: {line}", flush=True)

    try:
        report = check(
            args.wrf_dir,
            args.model,
            args.out,
            prefix=args.prefix,
            soundings=args.soundings,
            threads=args.threads,
            skip_build=args.skip_build,
            say=say,
        )
    except (UserInputError, CheckError) as error:
        print(f"paramlib wrf check: {error}", file=sys.stderr)
        return 2 if isinstance(error, UserInputError) else 1
    failed = [
        f"{name}: {key}"
        for name, result in report["soundings"].items()
        for key, target in result["comparison"]["targets"].items()
        if not target["met"]
    ]
    say(f"{len(failed)} target(s) not met" + (f" ({'; '.join(failed)})" if failed else ""))
    return TARGETS_MISSED if failed else 0

"""``paramlib data``: the data subcommands (``paramlib data testbed``).

Registered by ``paramlib.cli`` like any subcommand; each data subcommand adds its parser here and
imports its implementation inside its handler, so ``paramlib --help`` stays light.
"""

from __future__ import annotations

import argparse
import sys

from paramlib.cli import Subparsers

# The keys of paramlib.testbed.generate.SIZES (not imported here: it loads climt).
TESTBED_SIZES = ("small", "medium", "large")


def register(subparsers: Subparsers) -> None:
    data = subparsers.add_parser("data", help="data sets: the bundled testbed")
    commands = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    testbed = commands.add_parser(
        "testbed",
        help="generate the column-model testbed and its WRF-format set",
        description="Run the Fortran column model with Betts-Miller (low fidelity) and Emanuel "
        "(high fidelity) in the historical and +4K climates and write CESM-history-like "
        "datasets, summary.json and WRF-format files to OUT. Deterministic for a seed.",
    )
    testbed.add_argument(
        "--out",
        required=True,
        help="folder to write (replaced if it holds a testbed and nothing else)",
    )
    testbed.add_argument(
        "--size", choices=TESTBED_SIZES, default="small", help="default: small (< 1 min)"
    )
    testbed.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    testbed.add_argument(
        "--no-wrf", action="store_true", help="skip the WRF-format sets (historical and +4K)"
    )
    testbed.set_defaults(func=run_testbed)


def run_testbed(args: argparse.Namespace) -> int:
    from paramlib.guards import UserInputError
    from paramlib.testbed.generate import generate

    try:
        report = generate(args.out, size=args.size, seed=args.seed, wrf=not args.no_wrf)
    except UserInputError as error:
        print(f"paramlib data testbed: --out: {error}", file=sys.stderr)
        return 2
    figures = report["lf_hf_correlation"]
    print(f"testbed written to {args.out}; LF-HF correlation on HF states: {figures}")
    return 0

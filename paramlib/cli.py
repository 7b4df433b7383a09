"""The `paramlib` command line.

Each subcommand lives in its own module `paramlib.<name>` that exposes
`register(subparsers)`: it adds its parser and sets `func`, a callable taking the parsed
arguments and returning the exit status. Adding a subcommand is one entry in SUBCOMMANDS.
A group of subcommands registers from its package's `cli` module, entry `<group>.cli`
(`paramlib data ...` from `paramlib.data.cli`).
Subcommand modules import heavy or optional things (torch, the compiled bindings) inside
`func`, not at module level, so that `paramlib doctor` works when the build is broken.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from paramlib import __version__

SUBCOMMANDS: tuple[str, ...] = (
    "doctor",
    "demo",
    "catalog.cli",
    "data.cli",
    "data.build_cli",
    "train.cli",
    "couple.cli",
    "evaluate.cli",
    "couple.ood",
    "wrf.cli",
)

# The type `register(subparsers)` receives; argparse exposes no public name for it.
Subparsers = argparse._SubParsersAction
Handler = Callable[[argparse.Namespace], int]


def _unavailable_handler(name: str, error: ImportError) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        print(
            f"paramlib {name}: unavailable, importing paramlib.{name} failed: {error}\n"
            "run `paramlib doctor` to see what is missing",
            file=sys.stderr,
        )
        return 2

    return handler


def build_parser(subcommands: Sequence[str] = SUBCOMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paramlib",
        description="ML parameterizations from model output, run inside Fortran models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in subcommands:
        try:
            module = importlib.import_module(f"paramlib.{name}")
        except ImportError as error:
            # One broken subcommand must not take the others (doctor above all) down with it.
            unavailable = subparsers.add_parser(name.split(".")[0], help=f"(unavailable: {error})")
            unavailable.set_defaults(func=_unavailable_handler(name, error))
        else:
            module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)

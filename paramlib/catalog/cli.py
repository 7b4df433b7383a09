"""``paramlib catalog list|show|validate``: the data catalog from the command line."""

from __future__ import annotations

import argparse
import dataclasses
import sys

import yaml

from paramlib.catalog import (
    CatalogEntry,
    CatalogError,
    data_root,
    load_catalog,
    resolve_paths,
)
from paramlib.cli import Subparsers
from paramlib.paths import CATALOG_DIR, CATALOG_DIR_ENV, DATA_ROOT, DATA_ROOT_ENV


def register(subparsers: Subparsers) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--catalog-dir",
        help=f"catalog folder (default ${CATALOG_DIR_ENV} or {CATALOG_DIR})",
    )
    common.add_argument(
        "--root",
        help=f"data root the entries' paths are relative to (default"
        f" ${DATA_ROOT_ENV} or {DATA_ROOT})",
    )
    parser = subparsers.add_parser("catalog", help="list, show and validate data catalog entries")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", parents=[common], help="one line per entry").set_defaults(func=_list)
    show = actions.add_parser("show", parents=[common], help="an entry and its files")
    show.add_argument("name")
    show.set_defaults(func=_show)
    actions.add_parser(
        "validate", parents=[common], help="check every entry; templates only where present"
    ).set_defaults(func=_validate)


def _load_for_cli(args: argparse.Namespace) -> dict[str, CatalogEntry] | None:
    try:
        return load_catalog(args.catalog_dir, args.root, check_paths=False)
    except CatalogError as error:
        print(f"paramlib catalog: invalid catalog:\n{error}", file=sys.stderr)
        return None


def _list(args: argparse.Namespace) -> int:
    entries = _load_for_cli(args)
    if entries is None:
        return 1
    for entry in entries.values():
        kind = "template" if entry.template else ""
        print(
            f"{entry.name:28} {entry.format:13} {entry.fidelity:5} {entry.scenario:12}"
            f" {kind:9} {entry.description.splitlines()[0]}"
        )
    return 0


def _show(args: argparse.Namespace) -> int:
    entries = _load_for_cli(args)
    if entries is None:
        return 1
    if args.name not in entries:
        print(
            f"paramlib catalog show: no entry {args.name!r}; entries: {', '.join(entries)}",
            file=sys.stderr,
        )
        return 1
    entry = entries[args.name]
    shown = dataclasses.asdict(entry)
    shown["source_file"] = str(entry.source_file)
    shown["paths"] = list(entry.paths)
    print(yaml.safe_dump({entry.name: shown}, sort_keys=False), end="")
    print(f"data root: {data_root(args.root)}")
    try:
        files = resolve_paths(entry, args.root)
    except CatalogError as error:
        print(f"files: not available: {error}")
    else:
        print("files:\n" + "\n".join(f"  {f}" for f in files))
    return 0


def _validate(args: argparse.Namespace) -> int:
    entries = _load_for_cli(args)
    if entries is None:
        return 1
    failed = 0
    for entry in entries.values():
        try:
            files = resolve_paths(entry, args.root)
        except CatalogError as error:
            if entry.template:
                print(f"skip  {entry.name}: template, its data is not here")
            else:
                print(f"FAIL  {entry.name}: {error}")
                failed += 1
        else:
            print(f"ok    {entry.name}: {len(files)} file(s)")
    print(f"{len(entries)} entries, {failed} failed (data root {data_root(args.root)})")
    return 1 if failed else 0

"""Training stores on disk: atomic zarr writing, provenance attributes, the build fingerprint.

A store is written under a temporary sibling path and renamed into place only when complete;
on failure the temporary path is removed and a store already at the target stays as it was.
A temporary store names its writer (PID and host) in a file inside it, so that the next build
removes those of builds that were killed (SIGKILL, a node lost) instead of leaving them forever.
Its root attributes hold a fingerprint of the recipe text, the catalog entries it read and the
sha256 of every source file: equal fingerprints mean rebuilding would give the same store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import zarr

from paramlib.catalog import CatalogEntry
from paramlib.data.recipe import Recipe
from paramlib.guards import owner_record, process_alive

# Bumped when the pipeline changes what it writes for the same recipe: stores built by an
# older pipeline then rebuild. 3: sources whose levels differ are refused (version 2 joined
# them into a store with the union of their levels, NaN-padded).
PIPELINE_VERSION = 3
WRITER_FILE = ".paramlib-writer.json"
VERSIONED = ("paramlib", "numpy", "xarray", "dask", "distributed", "zarr", "netCDF4")


def fingerprint(recipe: Recipe, entries: Sequence[CatalogEntry], hashes: Mapping[str, str]) -> str:
    """sha256 over what determines the store: pipeline version, recipe (parsed, so comments and
    layout do not count), catalog entries (minus where they were defined) and file hashes."""
    described = {
        "pipeline": PIPELINE_VERSION,
        "recipe": dataclasses.asdict(dataclasses.replace(recipe, text="", path=None)),
        "entries": [
            dataclasses.asdict(dataclasses.replace(entry, source_file=None)) for entry in entries
        ],
        "files": dict(sorted(hashes.items())),
    }
    text = json.dumps(described, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def stored_fingerprint(path: str | os.PathLike) -> str | None:
    """The fingerprint of the store at ``path``; None when there is no readable store."""
    try:
        return zarr.open_group(str(path), mode="r").attrs.get("fingerprint")
    except (FileNotFoundError, ValueError, zarr.errors.GroupNotFoundError, OSError):
        return None


def write_attrs(path: str | os.PathLike, attrs: Mapping[str, Any]) -> None:
    """Set the store's root attributes, then consolidate its metadata (one read to open it)."""
    zarr.open_group(str(path), mode="a").attrs.update(dict(attrs))
    with warnings.catch_warnings():
        # zarr 3 warns that consolidated metadata is outside the v3 spec; xarray reads it.
        warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
        # The writer record of a temporary store (WRITER_FILE) is no zarr node.
        warnings.filterwarnings("ignore", f"Object at {WRITER_FILE} is not recognized")
        zarr.consolidate_metadata(str(path))


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def temporary_stores(target: Path) -> list[Path]:
    """The temporary stores of builds aimed at ``target`` (see `atomic_store`)."""
    return sorted(target.parent.glob(f".{target.name}.tmp-*"))


def remove_stale_temporaries(target: str | os.PathLike, log: Callable[[str], None]) -> None:
    """Remove the temporary stores next to ``target`` whose writer no longer runs (killed
    builds); ``log`` says what was removed and what was left (a live build's, or one without a
    writer record, which an older paramlib wrote: only the user can tell if it is dead)."""
    for tmp in temporary_stores(Path(target)):
        try:
            writer = json.loads((tmp / WRITER_FILE).read_text())
            pid, host = int(writer["pid"]), str(writer["host"])
        except (OSError, ValueError, KeyError, TypeError):
            log(
                f"{tmp}: temporary store with no writer record; left alone (remove it if no build"
                " is running)"
            )
            continue
        if process_alive(pid, host):
            log(f"{tmp}: temporary store of a running build (pid {pid} on {host}); left alone")
            continue
        shutil.rmtree(tmp, ignore_errors=True)
        log(f"{tmp}: removed the temporary store of a build that died (pid {pid} on {host})")


@contextmanager
def atomic_store(target: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder next to ``target`` to write into, holding its writer's record;
    renamed to ``target`` when the block ends without error (replacing what was there),
    removed when it raises."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.mkdir()
        (tmp / WRITER_FILE).write_text(json.dumps(owner_record()))
        yield tmp
        (tmp / WRITER_FILE).unlink()
        if target.exists():
            old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old)
        else:
            tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)

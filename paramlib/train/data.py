"""Training stores -> float32 arrays by canonical field name, and the loader choice.

Two loaders (``data.loader``): ``memory`` reads a train split whole (the testbed stores are a
few MB, the real WRF MSKF store about 0.3 GB) and draws any sample at any step; ``streaming``
(`paramlib.train.streaming`) reads shuffled store chunks while training, for splits larger
than memory. ``auto`` picks memory when the train split(s) fit ``data.memory_gb`` (default:
half the available memory, shared by a node's ranks). Validation reads at most
``data.val_max_samples`` evenly spaced samples into memory with either loader.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

GIB = 1 << 30


class DataError(ValueError):
    """A store that cannot serve the config; the message names the config key."""


def open_store(path: str | os.PathLike[str], key: str = "data.store") -> zarr.Group:
    if not Path(path).exists():
        raise DataError(
            f"{key}: no training store at {path} (build it with `paramlib dataset build "
            "training/recipes/NAME.yaml --out PATH`)"
        )
    try:
        root = zarr.open_group(str(path), mode="r")
    except (zarr.errors.GroupNotFoundError, ValueError, OSError) as error:
        raise DataError(f"{key}: {path} is not a zarr store ({error})") from None
    for attr in ("inputs", "targets", "normalisation"):
        if attr not in root.attrs:
            raise DataError(f"{key}: {path} has no {attr!r} attribute: not a paramlib store")
    return root


def store_record(root: zarr.Group, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Provenance of a store: path, name, fingerprint (the hash over recipe and sources)."""
    return {
        "path": str(Path(path).resolve()),
        **{k: root.attrs[k] for k in ("name", "fingerprint") if k in root.attrs},
    }


def group_size(root: zarr.Group, group: str) -> int:
    """Samples in `group`; 0 when the store has no such group."""
    if group not in root:
        return 0
    arrays = list(root[group].array_keys())
    names = [n for n in root.attrs["targets"] if n in arrays]
    return int(root[group][names[0]].shape[0]) if names else 0


def val_rows(n: int, max_samples: int) -> slice:
    """Evenly spaced rows, at most `max_samples` of `n` (validation on a fixed subset)."""
    return slice(0, n, max(1, math.ceil(n / max_samples)))


class SplitReader:
    """Row blocks of named arrays of one store group as float32, the group checked once."""

    def __init__(
        self, root: zarr.Group, group: str, names: Sequence[str], key: str = "data.store"
    ) -> None:
        if group not in root:
            raise DataError(
                f"{key}: store has no group {group!r}; it has {sorted(root.group_keys())}"
            )
        arrays = root[group]
        missing = [n for n in names if n not in arrays]
        if missing:
            raise DataError(
                f"{key}: group {group!r} has no variable(s) {missing}; "
                f"it has {sorted(arrays.array_keys())}"
            )
        self.arrays = {name: arrays[name] for name in names}
        first = self.arrays[names[0]]
        self.samples = int(first.shape[0])
        self.chunk = int(first.chunks[0])  # streaming reads whole store chunks
        self.row_bytes = sum(math.prod(a.shape[1:]) * 4 for a in self.arrays.values())

    def read(self, rows: slice = slice(None)) -> dict[str, np.ndarray]:
        return {name: np.asarray(a[rows], dtype=np.float32) for name, a in self.arrays.items()}


def read_fields(
    root: zarr.Group,
    group: str,
    names: Sequence[str],
    rows: slice = slice(None),
    key: str = "data.store",
) -> dict[str, np.ndarray]:
    """float32 arrays of `names` in `group` (rows `rows`)."""
    return SplitReader(root, group, names, key).read(rows)


def default_memory_gb() -> float:
    """Half the memory available now, shared by the ranks torchrun starts on this node."""
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return available / 2 / int(os.environ.get("LOCAL_WORLD_SIZE", "1")) / GIB


def choose_loader(
    loader: str, need: int, memory_gb: float | None, pinned: str | None = None
) -> tuple[str, str]:
    """(memory | streaming, why) for train splits of `need` bytes as float32: `pinned` (a
    checkpoint's loader), else ``data.loader``, where auto is memory when they fit the budget.
    The memory loader is refused for splits over the budget."""
    budget, source = (
        (default_memory_gb(), "default: half the available memory")
        if memory_gb is None
        else (memory_gb, "data.memory_gb")
    )
    fits = need <= budget * GIB
    size = f"train split(s) {need / GIB:.3g} GiB as float32"
    against = f"{'within' if fits else 'over'} the budget {budget:.3g} GiB ({source})"
    if pinned is not None:
        chosen, why = pinned, "the checkpoint's loader"
    elif loader != "auto":
        chosen, why = loader, f"data.loader={loader}"
    else:
        chosen, why = ("memory" if fits else "streaming"), "data.loader=auto"
    if chosen == "memory" and not fits:
        raise DataError(
            f"data.memory_gb: {size} {against}, too large for the memory loader ({why}); "
            "raise data.memory_gb or set data.loader=streaming"
        )
    return chosen, f"{why}: {size} {against}"

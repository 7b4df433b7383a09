"""Training stores -> float32 tensors by canonical field name.

Stores are read whole into memory, one split group at a time (the testbed stores are a few
MB, the real WRF MSKF store about 0.3 GB). Random minibatches over member-specific bootstrap
subsets touch the whole split every epoch, so reading the store chunk-wise per step would
cost a store read per step; a split larger than ``data.memory_gb`` is refused with its size
rather than streamed. Validation reads at most ``data.val_max_samples`` evenly spaced samples.
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


def read_fields(
    root: zarr.Group,
    group: str,
    names: Sequence[str],
    rows: slice = slice(None),
    memory_gb: float = math.inf,
    key: str = "data.store",
) -> dict[str, np.ndarray]:
    """float32 arrays of `names` in `group` (rows `rows`), checked against the memory budget."""
    if group not in root:
        raise DataError(f"{key}: store has no group {group!r}; it has {sorted(root.group_keys())}")
    arrays = root[group]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise DataError(
            f"{key}: group {group!r} has no variable(s) {missing}; "
            f"it has {sorted(arrays.array_keys())}"
        )
    n = len(range(*rows.indices(int(arrays[names[0]].shape[0]))))
    size = sum(n * math.prod(arrays[name].shape[1:]) * 4 for name in names)
    if size > memory_gb * GIB:
        raise DataError(
            f"{key}: group {group!r} needs {size / GIB:.1f} GiB as float32, over data.memory_gb"
            f" = {memory_gb}; raise data.memory_gb (the trainer reads a split whole)"
        )
    return {name: np.asarray(arrays[name][rows], dtype=np.float32) for name in names}

"""Checkpoint files: atomic writes, RNG states, and member slices of ensemble states.

A checkpoint is a plain dict (loadable with ``torch.load(weights_only=True)``)::

    format        CHECKPOINT_FORMAT
    config        Config.to_dict() of the run (resolved)
    spec          the task's spec: layouts, normalisation, valid ranges, store provenance
    provenance    git commit, versions, seed, world size
    step          optimizer steps done
    model         the whole network's state_dict (every member)
    optimizer     the optimizer's state_dict (every member)
    scheduler     the LR schedule's state_dict
    ranks         per rank: {"rng": rng_state(), "window": the unlogged loss sums}
    window_steps  steps summed in the windows
    elapsed       training seconds so far (all invocations)

Every tensor of an ensemble's state (`RPN`, `MFRPN` parameters and prior buffers, Adam's
moments) has the member on its first axis, so a member-parallel run saves the concatenation
of the ranks' slices and a resumed run takes its slice back, with any number of ranks.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from paramlib.atomic import write_atomic

CHECKPOINT_FORMAT = 1
CHECKPOINT_FILE = "checkpoint.pt"


class CheckpointError(ValueError):
    """A file that cannot be read as a paramlib checkpoint (truncated, or something else)."""


def save_atomic(data: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """torch.save through `write_atomic`: a reader (or a killed writer) never sees a partial
    checkpoint."""
    return write_atomic(path, lambda handle: torch.save(dict(data), handle))


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many types for a damaged or foreign file
        reason = str(error).split(". ")[0] or type(error).__name__
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a paramlib checkpoint ({reason})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a paramlib training checkpoint (format {CHECKPOINT_FORMAT})"
        )
    return data


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's torch, CUDA (on a GPU), numpy and Python RNG states, as plain data."""
    numpy_state = np.random.get_state(legacy=False)
    python_version, python_state, python_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "python": [python_version, list(python_state), python_gauss],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["key"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["gauss"],
        )
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def cpu_state(state: Any) -> Any:
    """A copy of a (nested) state dict with every tensor detached on the CPU."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, Mapping):
        return {k: cpu_state(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(cpu_state(v) for v in state)
    return state


def _member_tensors(state: Any, fn: Any) -> Any:
    """`state` with fn applied to every tensor of rank >= 1 (the member axis first); scalars
    (Adam's step count) and plain values kept."""
    if isinstance(state, torch.Tensor):
        return fn(state) if state.dim() > 0 else state
    if isinstance(state, Mapping):
        return {k: _member_tensors(v, fn) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_member_tensors(v, fn) for v in state)
    return state


def slice_members(state: Any, first: int, count: int) -> Any:
    """Members first .. first+count-1 of an ensemble's model or optimizer state."""
    return _member_tensors(state, lambda t: t[first : first + count].clone())


def cat_members(states: Sequence[Any]) -> Any:
    """The ranks' member slices (in member order) joined into one ensemble state."""
    first = states[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(list(states)) if first.dim() > 0 else first
    if isinstance(first, Mapping):
        return {k: cat_members([s[k] for s in states]) for k in first}
    if isinstance(first, list | tuple):
        return type(first)(cat_members(parts) for parts in zip(*states, strict=True))
    return first

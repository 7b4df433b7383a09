"""Baselines scored beside the MSKF emulators, by the same engine, on the same columns, with the
same definitions (`paramlib.evaluate.metrics`), so that no emulator score stands alone.

- **persistence**: every target X is predicted by the store's X_prev, the previous history
  frame's value: the previous cumulus call's output as WRF held it (the store's frames follow
  every call; `sampling.previous` in the recipe). NCA too: nca_prev is the previous call's
  time scale less the one 30-s step that the frame's own NCA has also lost, so prediction and
  target are counted down alike, and the trigger rule reads both the same way. WRF multiplies
  held tendencies every step by the ratio of the column's dry-air mass (MU+MUB) before and
  after the step; the stores do not carry MU+MUB and that ratio differs from 1 by about 2e-5
  (at most 6e-4 in the control run: the wrf_mskf README), so the tendencies are persisted
  unscaled. A target without X_prev in the store is not predicted; nca_prev is required.
- **climatology**: every target's mean, per level, over the train split's triggered columns
  (the trigger rule of `metrics`), predicted in every column. Its NCA is positive, so it
  triggers everywhere: recall 1, precision f and F1 = 2f / (1 + f) for a triggered fraction
  f. One pass over the train group, chunk by chunk.

`paramlib evaluate` adds both when a model is an MSKF emulator and the store has the *_prev
fields (`--baseline NAME` picks, `--no-baselines` turns them off).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from paramlib.evaluate.engine import NCA, triggered
from paramlib.evaluate.sources import levels
from paramlib.guards import UserInputError
from paramlib.models.bilstm import PREV
from paramlib.models.normalise import store_fields


@dataclass(frozen=True)
class Baseline:
    """A baseline as the engine sees a model (`sources.Predictor`): one member, MSKF rules;
    `constants` holds the climatology's profiles (empty for persistence)."""

    label: str
    source: str
    metadata: Mapping[str, Any]
    constants: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.metadata["model_kind"])

    @property
    def members(self) -> int:
        return 1

    @property
    def is_mskf(self) -> bool:
        return True

    @cached_property
    def outputs(self) -> list[dict[str, Any]]:
        return list(self.metadata["outputs"])

    @property
    def input_names(self) -> list[str]:
        return [spec["name"] for spec in self.metadata["inputs"]]

    def predict(self, fields: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name, (sample, nlev)."""
        if not self.constants:
            return {
                spec["name"]: levels(fields[spec["name"] + PREV], spec["nlev"])
                for spec in self.outputs
            }
        count = len(next(iter(fields.values())))
        return {
            name: np.broadcast_to(profile, (count, len(profile)))
            for name, profile in self.constants.items()
        }


def _targets(store: Path, group: str) -> list[dict[str, Any]]:
    """The store's targets as output specs (name, units, nlev); refused without NCA."""
    root = zarr.open_group(str(store), mode="r")
    if "targets" not in root.attrs:
        raise UserInputError(f"--dataset {store}: the store's attrs name no targets")
    specs = [
        {"name": s.name, "units": s.units, "nlev": s.nlev}
        for s in store_fields(root, "targets", group=group).fields
    ]
    if NCA not in [s["name"] for s in specs]:
        raise UserInputError(
            f"--dataset {store}: no {NCA!r} target; the baselines are for MSKF stores"
        )
    return specs


def persistence(store: Path, group: str, label: str = "persistence") -> Baseline:
    """Persistence (module docstring) for `store`, its fields read from `group`."""
    root = zarr.open_group(str(store), mode="r")
    held = set(root[group].array_keys())
    specs = [s for s in _targets(store, group) if s["name"] + PREV in held]
    names = [s["name"] for s in specs]
    if NCA not in names or all(s["nlev"] == 1 for s in specs):
        raise UserInputError(
            f"--baseline persistence: {store} group {group!r} needs {NCA}{PREV} and a per-level"
            f" target's *{PREV} field; it has {sorted(n for n in held if n.endswith(PREV))}"
        )
    metadata = {
        "model_kind": "persistence",
        "ensemble_size": 1,
        "inputs": [{**s, "name": s["name"] + PREV} for s in specs],
        "outputs": specs,
    }
    return Baseline(label, f"X = X{PREV} of {', '.join(names)}", metadata)


def climatology(
    store: Path, group: str = "train", label: str = "climatology", chunk_samples: int = 16384
) -> Baseline:
    """Climatology (module docstring) from `store`'s `group`, `chunk_samples` at a time."""
    root = zarr.open_group(str(store), mode="r")
    if group not in root.group_keys():
        raise UserInputError(f"--baseline climatology: {store} has no {group!r} split")
    specs = _targets(store, group)
    arrays = root[group]
    profiles = [s["name"] for s in specs if s["nlev"] > 1]
    total = {s["name"]: np.zeros(s["nlev"]) for s in specs}
    count = 0
    size = arrays[NCA].shape[0]
    for start in range(0, size, chunk_samples):
        part = {
            s["name"]: levels(arrays[s["name"]][start : start + chunk_samples], s["nlev"])
            for s in specs
        }
        mask = triggered(part, profiles)
        count += int(mask.sum())
        for name, values in part.items():
            total[name] += values[mask].sum(0, dtype=np.float64)
    if count == 0:
        raise UserInputError(
            f"--baseline climatology: {store} group {group!r} has no triggered column"
        )
    metadata = {"model_kind": "climatology", "ensemble_size": 1, "inputs": [], "outputs": specs}
    source = f"{group} mean over {count} of {size} triggered columns"
    return Baseline(label, source, metadata, {n: v / count for n, v in total.items()})


BASELINES: dict[str, Callable[[Path, str], Baseline]] = {
    "persistence": persistence,
    "climatology": lambda store, group: climatology(store),
}


def available(store: Path, group: str) -> list[str]:
    """The baselines `store` supports (both need an MSKF store; persistence the *_prev)."""
    try:
        persistence(store, group)
    except (UserInputError, KeyError):
        return []
    return list(BASELINES)

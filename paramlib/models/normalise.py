"""Named column fields <-> flat feature vectors, and per-level normalisation.

Networks see one flat feature axis; everything outside them names fields. A `FieldLayout`
(an ordered list of `paramlib.export.FieldSpec`, normally built from a training store with
`store_fields`) is the only place where a field's position on that axis is decided, so no
code indexes features by hard-coded positions.

Levels are surface-to-top (the canonical contract). A field declared with fewer levels
than the store holds keeps the lowest ones: the MF-RPN paper's q on 22 of 26 levels is
``nlev={"q": 22}``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from paramlib.export import FieldSpec

if TYPE_CHECKING:  # zarr is imported where a store is read: model files need torch alone
    import zarr

STD_FLOOR = 1e-6  # relative to the field's largest per-level std; see Normaliser.from_stats
# Input scalings: statistics per level, or one mean and std per field over all its levels (a
# level where a field hardly varies in training then cannot amplify a shift of it).
SCALINGS = ("level", "field")

Stats = Mapping[str, Mapping[str, Sequence[float]]]  # store attrs "normalisation"


def pooled(stats: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    """Per-level {"mean", "std"} -> the same over all levels together, repeated per level."""
    mean, std = (np.asarray(stats[k], dtype=np.float64) for k in ("mean", "std"))
    total = mean.mean()
    spread = math.sqrt(max(float(np.mean(std**2 + mean**2)) - total**2, 0.0)) or 1.0
    return {"mean": [float(total)] * len(mean), "std": [spread] * len(mean)}


@dataclass(frozen=True)
class FieldLayout:
    """Fields in order along the feature axis: field i occupies ``slices[i]``."""

    fields: tuple[FieldSpec, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))
        names = self.names
        if len(set(names)) != len(names):
            raise ValueError(f"field names repeat: {names}")

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.fields]

    @property
    def nlevs(self) -> list[int]:
        return [spec.nlev for spec in self.fields]

    @property
    def size(self) -> int:
        return sum(self.nlevs)

    @property
    def slices(self) -> dict[str, slice]:
        offsets = np.cumsum([0, *self.nlevs]).tolist()
        return {n: slice(a, b) for n, a, b in zip(self.names, offsets, offsets[1:], strict=False)}

    def __add__(self, other: FieldLayout) -> FieldLayout:
        return FieldLayout(self.fields + other.fields)

    def select(self, names: Sequence[str]) -> FieldLayout:
        by_name = {spec.name: spec for spec in self.fields}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise KeyError(f"fields {missing} not in the layout ({', '.join(self.names)})")
        return FieldLayout(tuple(by_name[n] for n in names))

    def flatten(self, data: Mapping[str, Tensor | np.ndarray], crop_top: bool = False) -> Tensor:
        """(..., size) float32 from named (..., nlev) arrays; a one-level field may be 1-D.

        With ``crop_top`` a field given on more levels than declared keeps its lowest nlev
        (store arrays hold all levels); otherwise level counts must match exactly.
        """
        parts = []
        for spec in self.fields:
            if spec.name not in data:
                raise KeyError(f"field {spec.name!r} missing; got {sorted(data)}")
            value = torch.as_tensor(data[spec.name], dtype=torch.float32)
            if spec.nlev == 1 and value.dim() == 1:  # a (sample,) store array
                value = value.unsqueeze(-1)
            have = value.shape[-1]
            if have != spec.nlev and not (crop_top and have > spec.nlev):
                raise ValueError(f"field {spec.name!r}: expected {spec.nlev} levels, got {have}")
            parts.append(value[..., : spec.nlev])
        return torch.cat(parts, dim=-1)

    def value_range(self, flat: Tensor) -> dict[str, dict[str, list[float]]]:
        """Per field and level, the min and max over the rows of a (rows, size) tensor: the
        model file's ``valid_range`` when `flat` is the training inputs in physical units."""
        low, high = self.split(flat.amin(dim=0)), self.split(flat.amax(dim=0))
        return {n: {"min": low[n].tolist(), "max": high[n].tolist()} for n in self.names}

    def split(self, flat: Tensor) -> dict[str, Tensor]:
        """Named (..., nlev) views of a (..., size) tensor."""
        if flat.shape[-1] != self.size:
            raise ValueError(f"expected {self.size} features, got {flat.shape[-1]}")
        return dict(zip(self.names, torch.split(flat, self.nlevs, dim=-1), strict=True))


class Normaliser(nn.Module):
    """(x - mean) / std per feature, and back; mean and std are buffers (saved, exported)."""

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        if mean.shape != std.shape or mean.dim() != 1:
            raise ValueError(f"expected equal 1-D mean and std, got {mean.shape}, {std.shape}")
        if not bool((std > 0).all()):
            raise ValueError("std must be positive everywhere")
        self.register_buffer("mean", mean.to(torch.float32))
        self.register_buffer("std", std.to(torch.float32))

    @classmethod
    def from_stats(
        cls,
        layout: FieldLayout,
        stats: Stats,
        std_floor: float = STD_FLOOR,
    ) -> Normaliser:
        """From store-style statistics ``{name: {"mean": [per level], "std": [...]}}``.

        A level's std is raised to ``std_floor`` x the largest std of its field, so levels
        where a field (nearly) never varies are not amplified into noise or divided by 0;
        a field constant everywhere gets std 1.
        """
        means, stds = [], []
        for spec in layout.fields:
            key = spec.name
            if key not in stats:
                raise KeyError(f"no normalisation statistics for {key!r}; have {sorted(stats)}")
            mean = np.asarray(stats[key]["mean"], dtype=np.float64)
            std = np.asarray(stats[key]["std"], dtype=np.float64)
            if len(mean) < spec.nlev or len(std) < spec.nlev:
                raise ValueError(
                    f"statistics of {key!r} have {len(mean)} levels; {spec.name!r} needs "
                    f"{spec.nlev}"
                )
            mean, std = mean[: spec.nlev], std[: spec.nlev]
            top = std.max()
            means.append(mean)
            stds.append(np.maximum(std, std_floor * top) if top > 0 else np.ones_like(std))
        return cls(torch.from_numpy(np.concatenate(means)), torch.from_numpy(np.concatenate(stds)))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    @torch.jit.export
    def denormalise(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.mean, x, self.std)


def _open(store: str | os.PathLike[str] | zarr.Group) -> zarr.Group:
    import zarr

    return store if isinstance(store, zarr.Group) else zarr.open_group(str(store), mode="r")


def store_normalisation(store: str | os.PathLike[str] | zarr.Group) -> dict:
    """The store's normalisation statistics (root attrs ``normalisation``)."""
    return dict(_open(store).attrs["normalisation"])


def store_fields(
    store: str | os.PathLike[str] | zarr.Group,
    names: Sequence[str] | str,
    nlev: Mapping[str, int] | None = None,
    group: str = "train",
) -> FieldLayout:
    """Layout of named variables as the store holds them: units and long_name from each
    array's attributes, level count from its shape (1 for a (sample,) array) unless `nlev`
    keeps fewer. `names` may be "inputs" or "targets": the store's own list."""
    root = _open(store)
    if isinstance(names, str):
        names = list(root.attrs[names])
    nlev = dict(nlev or {})
    specs = []
    for name in names:
        try:
            array = root[group][name]
        except KeyError:
            raise KeyError(f"store has no variable {name!r} in group {group!r}") from None
        levels = 1 if array.ndim == 1 else int(array.shape[-1])
        keep = nlev.pop(name, levels)
        if not 1 <= keep <= levels:
            raise ValueError(f"{name}: nlev {keep} outside 1 .. {levels} (store levels)")
        attrs = array.attrs
        specs.append(FieldSpec(name, str(attrs["units"]), keep, long_name=attrs.get("long_name")))
    if nlev:
        raise KeyError(f"nlev names fields not in {list(names)}: {sorted(nlev)}")
    return FieldLayout(tuple(specs))

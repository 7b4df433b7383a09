"""Input representations of the feature kinds (mlp, rpn, mfrpn): what the network sees of the
host's raw fields, computed inside the model file and, identically, in training.

``raw`` (the default): the inputs as the host passes them (T, q, ps, fluxes, ...). A warmer
climate shifts T and q out of their training range, most at levels where they hardly vary.

``invariant`` (after Beucler et al., Sci. Adv. 2024, as the Bi-LSTM's): at their places in the
feature vector T becomes the plume buoyancy and q the relative humidity, whose distributions
a warmer climate keeps in place; the other inputs (ps, fluxes, solin, bm_*) stay:

- rh = q / q_sat(T, p), q_sat the saturation specific humidity (`thermo`; q is specific
  humidity in the testbed and CAM), on q's levels;
- buoyancy = (h_parcel - h_sat(k)) / c_p in K on T's levels (`thermo.plume_buoyancy`): the
  lowest level's moist static energy against each level's saturation moist static energy,
  zero along the moist adiabat of the lowest level's air. Chosen over "T minus a moist
  adiabat" because it is the same quantity in closed form (no parcel iteration in the model
  file), to first order (1 + L_v/c_p dq_s/dT) (T_parcel - T), and the Bi-LSTM uses it.

Pressure: p = ps x sigma, with sigma of each level from the store's ``lev`` coordinate (hPa of
a sigma or hybrid sigma-pressure coordinate, sigma = lev / 1000: the readers' contract; exact
for the testbed's sigma levels, the reference column's share for hybrid ones), carried in the
checkpoint and the model file. Heights for h come from hydrostatic balance on those levels.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final, Self

import numpy as np
import torch
from torch import Tensor, nn

from paramlib.models.normalise import FieldLayout, Normaliser, Stats, pooled
from paramlib.models.thermo import (
    hydrostatic_height,
    plume_buoyancy,
    saturation_specific_humidity,
)

if TYPE_CHECKING:  # zarr is imported where a store is read: model files need torch alone
    import zarr

REPRESENTATIONS = ("raw", "invariant")
# The inputs the invariant fields are made of (the canonical column names) and what replaces
# each in the feature vector: name, units, long_name.
TEMPERATURE, HUMIDITY, SURFACE_PRESSURE = "t", "q", "ps"
REPLACED = {
    TEMPERATURE: ("buoyancy", "K", "plume buoyancy (h_parcel - h_sat) / c_p from the lowest level"),
    HUMIDITY: ("rh", "1", "relative humidity q / q_sat"),
}
DERIVED = tuple(name for name, _, _ in REPLACED.values())


def invariant_fields(t: Tensor, q: Tensor, ps: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """(rh (ncol, nq), buoyancy (ncol, nt)) from temperature (ncol, nt), specific humidity
    (ncol, nq) on the lowest nq <= nt levels, surface pressure (ncol, 1) and sigma (nt,)."""
    q_sat = saturation_specific_humidity(t, ps * sigma)
    z = hydrostatic_height(t, sigma)
    return q / q_sat[:, : q.shape[1]], plume_buoyancy(t, z, q_sat, q)


class InputTransform(nn.Module):
    """(B, n) raw inputs, flat in the input layout, physical units -> (B, n) features in
    physical units (module docstring), before the input normalisation.

    `raw_norm` holds the raw inputs' per-level statistics: what the model file's
    ``input_normalisation`` gives `paramlib.export.save` to check the input order against.
    """

    invariant: Final[bool]
    t_start: Final[int]
    t_stop: Final[int]
    q_start: Final[int]
    q_stop: Final[int]
    ps_index: Final[int]

    def __init__(
        self, raw_norm: Normaliser, slices: Sequence[int] = (), sigma: Sequence[float] = ()
    ):
        """`slices`: (t_start, t_stop, q_start, q_stop, ps_index) on the flat axis, none for
        raw inputs; `sigma` of T's levels. `create` finds them from a layout."""
        super().__init__()
        self.raw_norm = raw_norm
        self.invariant = bool(slices)
        self.t_start, self.t_stop, self.q_start, self.q_stop, self.ps_index = (
            tuple(slices) if slices else (0, 0, 0, 0, 0)
        )
        self.register_buffer("sigma", torch.tensor(list(sigma), dtype=torch.float32))

    @classmethod
    def create(
        cls,
        representation: str,
        inputs: FieldLayout,
        raw_norm: Normaliser,
        sigma: Sequence[float] = (),
    ) -> Self:
        """The transform of `representation` over `inputs`; invariant needs T, q (on no more
        levels than T) and ps among them and `sigma` of T's levels. ValueError names what is
        missing."""
        if representation not in REPRESENTATIONS:
            raise ValueError(
                f"expected one of {', '.join(REPRESENTATIONS)}, got {representation!r}"
            )
        if representation == "raw":
            return cls(raw_norm)
        needed = (TEMPERATURE, HUMIDITY, SURFACE_PRESSURE)
        missing = [n for n in needed if n not in inputs.names]
        if missing:
            raise ValueError(
                f"invariant needs the inputs {', '.join(needed)}; missing {', '.join(missing)}"
                f" (inputs: {', '.join(inputs.names)})"
            )
        t, q, ps = (inputs.slices[n] for n in needed)
        nlev = {spec.name: spec.nlev for spec in inputs.fields}
        if nlev[SURFACE_PRESSURE] != 1 or nlev[HUMIDITY] > nlev[TEMPERATURE]:
            raise ValueError(
                "invariant needs ps on 1 level and q on no more levels than t; got "
                + ", ".join(f"{n}[{nlev[n]}]" for n in needed)
            )
        if len(sigma) != nlev[TEMPERATURE]:
            raise ValueError(
                f"invariant needs sigma on t's {nlev[TEMPERATURE]} levels, got {len(sigma)}"
            )
        return cls(raw_norm, (t.start, t.stop, q.start, q.stop, ps.start), sigma)

    @property
    def representation(self) -> str:
        return "invariant" if self.invariant else "raw"

    def features(self, inputs: FieldLayout) -> FieldLayout:
        """The layout of forward's output: `inputs` with T and q replaced (invariant)."""
        if not self.invariant:
            return inputs
        specs = []
        for spec in inputs.fields:
            if spec.name in REPLACED:
                name, units, long_name = REPLACED[spec.name]
                spec = replace(spec, name=name, units=units, long_name=long_name)
            specs.append(spec)
        return FieldLayout(tuple(specs))

    def forward(self, x: Tensor) -> Tensor:
        if not self.invariant:
            return x
        rh, buoyancy = invariant_fields(
            x[:, self.t_start : self.t_stop],
            x[:, self.q_start : self.q_stop],
            x[:, self.ps_index : self.ps_index + 1],
            self.sigma,
        )
        out = x.clone()
        out[:, self.t_start : self.t_stop] = buoyancy
        out[:, self.q_start : self.q_stop] = rh
        return out

    def to_dict(self) -> dict[str, Any]:
        """For the checkpoint's spec; `from_dict` reads it back."""
        return {
            "representation": self.representation,
            "sigma": self.sigma.tolist(),
            "raw_norm": {"mean": self.raw_norm.mean.tolist(), "std": self.raw_norm.std.tolist()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], inputs: FieldLayout) -> Self:
        norm = data["raw_norm"]
        raw_norm = Normaliser(torch.tensor(norm["mean"]), torch.tensor(norm["std"]))
        return cls.create(data["representation"], inputs, raw_norm, data["sigma"])


def feature_statistics(
    transform: InputTransform, features: FieldLayout, blocks: Iterable[Tensor]
) -> dict[str, dict[str, list[float]]]:
    """Per level {"mean", "std"} of the fields the transform derives (rh, buoyancy), over the
    rows of the raw (rows, n) input blocks: statistics of the training split, read a block at
    a time (float64 sums)."""
    derived = [spec.name for spec in features.fields if spec.name in DERIVED]
    total = square = None
    count = 0
    for block in blocks:
        x = transform(block).double()
        total = x.sum(0) if total is None else total + x.sum(0)
        square = (x**2).sum(0) if square is None else square + (x**2).sum(0)
        count += x.shape[0]
    if total is None or square is None or count == 0:
        raise ValueError("no samples to compute the derived fields' statistics from")
    mean = total / count
    std = (square / count - mean**2).clamp(min=0.0).sqrt()
    means, stds = features.split(mean), features.split(std)
    return {n: {"mean": means[n].tolist(), "std": stds[n].tolist()} for n in derived}


def scaled(layout: FieldLayout, stats: Stats, scaling: str) -> dict[str, dict[str, list[float]]]:
    """The layout's statistics as `scaling` uses them: per level (``level``), or pooled over
    each field's levels in the layout (``field``; a cropped q pools its kept levels only)."""
    table = {}
    for spec in layout.fields:
        if spec.name not in stats:
            raise KeyError(f"no normalisation statistics for {spec.name!r}; have {sorted(stats)}")
        kept = {k: list(stats[spec.name][k])[: spec.nlev] for k in ("mean", "std")}
        table[spec.name] = pooled(kept) if scaling == "field" else kept
    return table


def store_sigma(root: "zarr.Group", group: str, nlev: int) -> list[float]:
    """sigma (= lev / 1000) of the lowest `nlev` levels from the ``lev`` coordinate of a store
    group, which must be a sigma or hybrid sigma-pressure coordinate in hPa (module
    docstring). ValueError says what the store has instead."""
    expected = "a 'lev' coordinate of sigma or hybrid sigma-pressure levels in hPa"
    if group not in root or "lev" not in root[group]:
        raise ValueError(f"group {group!r} has no 'lev' coordinate; expected {expected}")
    lev = root[group]["lev"]
    units, name = lev.attrs.get("units"), str(lev.attrs.get("standard_name", ""))
    if units != "hPa" or "sigma" not in name:
        raise ValueError(
            f"group {group!r}: lev has units {units!r}, standard_name {name!r}; expected {expected}"
        )
    sigma = np.asarray(lev[:], dtype=np.float64)[:nlev] / 1000.0
    if len(sigma) < nlev or not (np.all(sigma > 0) and np.all(np.diff(sigma) < 0)):
        raise ValueError(
            f"group {group!r}: lev {lev[:].tolist()} is not {nlev} levels decreasing from the"
            " surface and positive"
        )
    return sigma.tolist()

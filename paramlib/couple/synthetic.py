"""Untrained RPN model files on the column interface's fields, for tests and benchmarks of the
coupling: real batched matmuls of any size, the testbed models' inputs and outputs, normalised
with typical values so that their tendencies have the testbed's magnitudes.

    synthetic_model(path, members=4, hidden=[32, 32], with_bm=False, output="members",
                    valid_range=..., ood=OodScore(...))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from paramlib.export import FieldSpec, save
from paramlib.models import RPN, FieldLayout, Normaliser, export_module
from paramlib.models.ood import OodScore

# (name, units, levels, typical value, spread), the testbed stores' fields.
STATE = (
    ("t", "K", 26, 250.0, 30.0),
    ("q", "kg kg-1", 22, 5e-3, 5e-3),
    ("ps", "Pa", 1, 1e5, 1e3),
    ("solin", "W m-2", 1, 400.0, 100.0),
    ("shflx", "W m-2", 1, 10.0, 10.0),
    ("lhflx", "W m-2", 1, 100.0, 50.0),
)
BETTS_MILLER = (  # HF([BM, x]): Betts-Miller's tendencies on the same state
    ("bm_heating", "K s-1", 26, 0.0, 1e-5),
    ("bm_moistening", "kg kg-1 s-1", 22, 0.0, 1e-8),
    ("bm_precip", "mm s-1", 1, 5e-5, 5e-5),
)
OUTPUTS = (
    ("heating", "K s-1", 26, 0.0, 1e-5),
    ("moistening", "kg kg-1 s-1", 22, -1e-9, 1e-8),
    ("precip", "mm s-1", 1, 5e-5, 1e-5),
)
Fields = Sequence[tuple[str, str, int, float, float]]
Bound = float | Sequence[float]  # one value for every level, or one per level


def layout(fields: Fields) -> FieldLayout:
    return FieldLayout(tuple(FieldSpec(name, units, nlev) for name, units, nlev, _, _ in fields))


def normaliser(fields: Fields) -> Normaliser:
    mean = torch.cat([torch.full((nlev,), m) for _, _, nlev, m, _ in fields])
    std = torch.cat([torch.full((nlev,), s) for _, _, nlev, _, s in fields])
    return Normaliser(mean, std)


def inputs(with_bm: bool) -> Fields:
    return (*STATE, *BETTS_MILLER) if with_bm else STATE


def synthetic_model(
    path: Path,
    members: int = 4,
    hidden: Sequence[int] = (32, 32),
    with_bm: bool = False,
    output: str = "members",
    valid_range: Mapping[str, tuple[Bound, Bound]] | None = None,
    seed: int = 0,
    ood: OodScore | None = None,
) -> Path:
    """Write the model file; ``valid_range`` gives (min, max) per input name, each a value for
    every level or a list of one per level (inputs not named get no range); ``ood`` adds the
    output ood_score (output mean or mean_spread)."""
    fields = inputs(with_bm)
    x, y = layout(fields), layout(OUTPUTS)
    net = RPN.create(x.size, y.size, list(hidden), members, seed=seed)

    def levels(bound: Bound, nlev: int) -> list[float]:
        return [float(b) for b in bound] if isinstance(bound, Sequence) else [float(bound)] * nlev

    ranges = {
        name: {"min": levels(valid_range[name][0], nlev), "max": levels(valid_range[name][1], nlev)}
        for name, _, nlev, _, _ in fields
        if valid_range and name in valid_range
    }
    module, metadata = export_module(
        net,
        x,
        y,
        normaliser(fields),
        normaliser(OUTPUTS),
        output=output,
        valid_range=ranges,
        ood=ood,
    )
    return save(module, path, metadata)

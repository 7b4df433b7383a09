"""Model files with known outputs for the WRF plugin's ctest cases (wrf_plugin_cases.py).

nan_heating_model(path, nlev)   t in, MSKF's eight outputs out; RTHCUTEN NaN in every
                                third column of a call (1e-5 K s-1 elsewhere), the others
                                finite: PRATEC 1e-4 mm s-1, NCA 600 s
odd_tile_failure_model(path, nlev)  the same fields; a call on an odd number of columns,
                                more than the export's probe batch, raises FAILURE (the bridge
                                returns an error status); others give 1e-5 K s-1 heating
"""

# (no `from __future__ import annotations`: TorchScript reads the Final annotations)
from pathlib import Path
from typing import Final

import torch
from torch import Tensor, nn

from paramlib.export import FieldSpec, ModelMetadata, forward_source, save
from paramlib.wrf_plugin import TARGETS

UNITS = ["K s-1"] + ["kg kg-1 s-1"] * 5 + ["mm s-1", "s"]  # of TARGETS
FAILURE = "paramlib test model: a tile with an odd number of columns"


class NanHeating(nn.Module):
    forward_source: Final[str]
    nlev: Final[int]

    def __init__(self, nlev: int) -> None:
        super().__init__()
        self.nlev = nlev
        self.forward_source = forward_source(1, len(TARGETS))

    @torch.jit.export
    def forward_fields(self, fields: list[Tensor]) -> list[Tensor]:
        ncol = fields[0].shape[0]
        profile = torch.zeros(ncol, self.nlev)
        nan_column = (torch.arange(ncol) % 3 == 1).view(ncol, 1)
        heating = torch.where(
            nan_column, torch.full_like(profile, float("nan")), torch.full_like(profile, 1.0e-5)
        )
        column = torch.ones(ncol, 1)
        return [heating, profile, profile, profile, profile, profile, 1e-4 * column, 600 * column]


class OddTileFailure(NanHeating):
    failure: Final[str]

    def __init__(self, nlev: int) -> None:
        super().__init__(nlev)
        self.failure = FAILURE

    @torch.jit.export
    def forward_fields(self, fields: list[Tensor]) -> list[Tensor]:
        ncol = fields[0].shape[0]
        if ncol % 2 == 1 and ncol > 16:
            raise RuntimeError(self.failure)
        profile = torch.zeros(ncol, self.nlev)
        column = torch.ones(ncol, 1)
        heating = torch.full_like(profile, 1.0e-5)
        return [heating, profile, profile, profile, profile, profile, 1e-4 * column, 600 * column]


def nan_heating_model(path: Path, nlev: int) -> Path:
    return _save(NanHeating(nlev), path, nlev)


def odd_tile_failure_model(path: Path, nlev: int) -> Path:
    return _save(OddTileFailure(nlev), path, nlev)


def _save(model: NanHeating, path: Path, nlev: int) -> Path:
    module = torch.jit.script(model)
    if not hasattr(module, "forward"):
        module.define(module.forward_source)
    outputs = [
        FieldSpec(name, units, nlev if name.endswith("cuten") else 1)
        for name, units in zip(TARGETS, UNITS, strict=True)
    ]
    metadata = ModelMetadata(
        model_kind="test", inputs=[FieldSpec("t", "K", nlev)], outputs=outputs, ensemble_size=1
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    return save(module, path, metadata)

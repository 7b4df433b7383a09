"""Model files with known outputs for the WRF plugin's ctest cases (wrf_plugin_cases.py).

nan_heating_model(path, nlev)   t in, MSKF's eight outputs out; RTHCUTEN NaN in every
                                third column of a call (1e-5 K s-1 elsewhere), the others
                                finite: PRATEC 1e-4 mm s-1, NCA 600 s
odd_tile_failure_model(path, nlev)  the same fields; a call on an odd number of columns,
                                more than the export's probe batch, raises FAILURE (the bridge
                                returns an error status); others give 1e-5 K s-1 heating
limit_probe_model(path, nlev)   t and qv in; what the plugin's physical limits must catch:
                                heating 1e-3 K s-1 up to level PROBE_TOP and 1e-9 above
                                (tiny, but non-zero up to the model top), drying of
                                2 qv / PROBE_NCA (twice what is there over the period) where
                                dries_out(t at level 1), else qv / (2 PROBE_NCA); RQCCUTEN
                                -1e-8 on levels 1-3, the other hydrometeors 1e-9 on every
                                level; PRATEC 1e-3 mm s-1, NCA PROBE_NCA. Its valid_range
                                (t only) puts level 1 of t out of range for every column
"""

# (no `from __future__ import annotations`: TorchScript reads the Final annotations)
from pathlib import Path
from typing import Final

import torch
from torch import Tensor, nn

from paramlib.export import FieldSpec, ModelMetadata, forward_source, save
from paramlib.wrf.driver import TARGETS

UNITS = ["K s-1"] + ["kg kg-1 s-1"] * 5 + ["mm s-1", "s"]  # of TARGETS
FAILURE = "paramlib test model: a tile with an odd number of columns"
PROBE_TOP = 15  # the probe's cloud top (1-based level)
PROBE_NCA = 600.0  # s: the probe's convective period


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


def dries_out(t_surface: Tensor) -> Tensor:
    """The probe's columns that dry out: about half, by the state (tiles see the same)."""
    return t_surface - torch.floor(t_surface) < 0.5


class LimitProbe(nn.Module):
    forward_source: Final[str]
    nlev: Final[int]
    top: Final[int]
    nca: Final[float]

    def __init__(self, nlev: int) -> None:
        super().__init__()
        self.nlev = nlev
        self.top = PROBE_TOP
        self.nca = PROBE_NCA
        self.forward_source = forward_source(2, len(TARGETS))

    @torch.jit.export
    def forward_fields(self, fields: list[Tensor]) -> list[Tensor]:
        qv = fields[1]
        ncol = qv.shape[0]
        cloud = (torch.arange(self.nlev) < self.top).view(1, self.nlev).expand(ncol, self.nlev)
        heating = torch.where(cloud, torch.full_like(qv, 1e-3), torch.full_like(qv, 1e-9))
        factor = torch.where(dries_out(fields[0][:, 0]), 2.0, 0.5).view(ncol, 1)
        drying = torch.where(cloud, -factor * qv / self.nca, torch.full_like(qv, -1e-13))
        low = (torch.arange(self.nlev) < 3).view(1, self.nlev).expand(ncol, self.nlev)
        qc = torch.where(low, torch.full_like(qv, -1e-8), torch.full_like(qv, 1e-9))
        other = torch.full_like(qv, 1e-9)
        column = torch.ones(ncol, 1)
        return [heating, drying, qc, other, other, other, 1e-3 * column, self.nca * column]


def nan_heating_model(path: Path, nlev: int) -> Path:
    return _save(NanHeating(nlev), path, nlev)


def limit_probe_model(path: Path, nlev: int) -> Path:
    t_range = {"min": [0.0] * nlev, "max": [0.0] + [1000.0] * (nlev - 1)}
    inputs = [FieldSpec("t", "K", nlev), FieldSpec("qv", "kg kg-1", nlev)]
    return _save(LimitProbe(nlev), path, nlev, inputs, {"t": t_range})


def odd_tile_failure_model(path: Path, nlev: int) -> Path:
    return _save(OddTileFailure(nlev), path, nlev)


def _save(
    model: nn.Module,
    path: Path,
    nlev: int,
    inputs: list[FieldSpec] | None = None,
    valid_range: dict[str, dict[str, list[float]]] | None = None,
) -> Path:
    module = torch.jit.script(model)
    if not hasattr(module, "forward"):
        module.define(module.forward_source)
    outputs = [
        FieldSpec(name, units, nlev if name.endswith("cuten") else 1)
        for name, units in zip(TARGETS, UNITS, strict=True)
    ]
    metadata = ModelMetadata(
        model_kind="test",
        inputs=inputs or [FieldSpec("t", "K", nlev)],
        outputs=outputs,
        ensemble_size=1,
        valid_range=valid_range or {},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    return save(module, path, metadata)

"""What an evaluation reads: model files (or runs exported on the fly) and training stores.

A model is named by a paramlib model file, a training run directory or its checkpoint.pt.
Runs and checkpoints are exported in memory with `paramlib.train.loop.export_checkpoint`:
ensembles as ``members`` (every member, for the ensemble scores), the others as their config
says. A model file is used as it is: a ``mean_spread`` file (the default export of an
ensemble) is scored on its mean alone, as a file does not hold its members.

A store is named by its path or by its name (``mfrpn_hf_testbed``), looked up as
``$PARAMLIB_STORES/NAME.zarr`` and then in the demo's ``build/demo/stores``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import xarray as xr

from paramlib.constants import GRAVITY
from paramlib.evaluate.metrics import sigma_thickness
from paramlib.export import ExportError, load_metadata, metadata_text
from paramlib.models.export_wrap import SPREAD_SUFFIX
from paramlib.paths import STORES_ENV, demo_dir
from paramlib.train import kinds

MODEL_FILES = ("model.pt", "checkpoint.pt")  # named by their run directory


class Predictor(Protocol):
    """What the engine scores: a `Model`, or a baseline (`paramlib.evaluate.baselines`)."""

    label: str
    source: str
    metadata: Mapping[str, Any]

    @property
    def kind(self) -> str: ...

    @property
    def members(self) -> int: ...

    @property
    def is_mskf(self) -> bool: ...

    @property
    def outputs(self) -> list[dict[str, Any]]: ...

    @property
    def input_names(self) -> list[str]: ...

    def predict(self, fields: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class Model:
    """A loaded model file: `predict` maps named store fields to named outputs."""

    label: str
    source: str
    module: torch.jit.ScriptModule
    metadata: Mapping[str, Any]

    @property
    def kind(self) -> str:
        return str(self.metadata["model_kind"])

    @property
    def members(self) -> int:
        return int(self.metadata["ensemble_size"])

    @property
    def is_mskf(self) -> bool:
        kind = kinds.exported(self.kind)
        return kind is not None and kind.mskf_contract

    @cached_property
    def outputs(self) -> list[dict[str, Any]]:
        """The predicted fields; a mean_spread file's NAME_spread outputs are left out."""
        names = {spec["name"] for spec in self.metadata["outputs"]}
        return [
            spec
            for spec in self.metadata["outputs"]
            if not (
                spec["name"].endswith(SPREAD_SUFFIX)
                and spec["name"].removesuffix(SPREAD_SUFFIX) in names
            )
        ]

    @property
    def input_names(self) -> list[str]:
        return [spec["name"] for spec in self.metadata["inputs"]]

    def predict(self, fields: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name, (sample, nlev) or (member, sample, nlev), from the store's fields
        (sample, lev) or (sample,); a field the model takes on fewer levels keeps the lowest."""
        inputs = [
            torch.from_numpy(levels(fields[spec["name"]], spec["nlev"]).astype(np.float32))
            for spec in self.metadata["inputs"]
        ]
        with torch.inference_mode():
            result = self.module(*inputs)
        result = result if isinstance(result, tuple) else (result,)
        return {
            spec["name"]: tensor.numpy()
            for spec, tensor in zip(self.metadata["outputs"], result, strict=True)
        }


def levels(values: np.ndarray, nlev: int) -> np.ndarray:
    """(sample, nlev): the lowest `nlev` levels of a (sample, lev) or (sample,) field."""
    values = np.asarray(values)
    return values.reshape(len(values), -1)[:, :nlev]


def default_label(path: str | os.PathLike[str]) -> str:
    path = Path(path)
    if path.is_dir() or (path.name in MODEL_FILES and path.parent.name):
        return (path if path.is_dir() else path.parent).resolve().name
    return path.stem


def _is_model_file(path: Path) -> bool:
    """Whether `path` holds paramlib.json (read from the archive, nothing loaded): a
    training checkpoint is a zip archive too, and loading it as TorchScript fails."""
    try:
        return metadata_text(path) is not None
    except ExportError:  # not an archive: the checkpoint loader names what it is not
        return False


def load_model(path: str | os.PathLike[str], label: str | None = None) -> Model:
    """The model file at `path`, or a run directory / checkpoint exported in memory (module
    docstring)."""
    path = Path(path)
    label = label or default_label(path)
    if path.is_file() and _is_model_file(path):
        return Model(label, str(path), torch.jit.load(str(path)), load_metadata(path))
    from paramlib.train import checkpoint
    from paramlib.train.config import config_from_dict
    from paramlib.train.loop import export_checkpoint

    state = checkpoint.load(path)
    output = "members" if config_from_dict(state["config"]).ensemble else None
    with tempfile.TemporaryDirectory() as folder:
        file = export_checkpoint(state, Path(folder) / "model.pt", output)
        return Model(label, str(path), torch.jit.load(str(file)), load_metadata(file))


def resolve_store(dataset: str | os.PathLike[str]) -> Path:
    """A store path as given, or NAME[.zarr] under $PARAMLIB_STORES, then build/demo/stores."""
    path = Path(dataset)
    if path.exists():
        return path
    name = f"{str(dataset).removesuffix('.zarr')}.zarr"
    folders = [Path(os.environ[STORES_ENV])] if os.environ.get(STORES_ENV) else []
    candidates = [folder / name for folder in [*folders, demo_dir() / "stores"]]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    tried = ", ".join(str(c) for c in [path, *candidates])
    raise FileNotFoundError(f"--dataset {dataset}: no training store at {tried}")


def open_split(store: Path, split: str, chunk_samples: int) -> xr.Dataset:
    """The split's group, lazily, in chunks of `chunk_samples` along sample."""
    try:
        ds = xr.open_zarr(str(store), group=split, consolidated=False)
    except (FileNotFoundError, KeyError, OSError) as error:
        raise FileNotFoundError(f"{store}: no split {split!r} ({error})") from None
    return ds.chunk({"sample": chunk_samples})


def layer_mass(ds: xr.Dataset) -> tuple[xr.DataArray | None, str]:
    """The mass per area of each level, dp/g in kg m-2 (sample, lev), lazily, and how it was
    found: the store's dp; rho dz8w (WRF: hydrostatic, = dp/g); or surface pressure ps and
    sigma levels (a lev coordinate in hPa of a sigma or hybrid sigma-pressure coordinate,
    sigma = lev / 1000: exact for sigma levels, for hybrid ones the share of the reference
    column). None when the store holds none of these."""
    if "dp" in ds:
        return ds["dp"] / GRAVITY, "dp / g from the store's dp"
    if "rho" in ds and "dz8w" in ds:
        return ds["rho"] * ds["dz8w"], "rho dz8w (= dp / g, hydrostatic)"
    lev = ds.get("lev")
    if (
        "ps" in ds
        and lev is not None
        and lev.attrs.get("units") == "hPa"
        and "sigma" in lev.attrs.get("standard_name", "")
    ):
        try:
            thickness = sigma_thickness(lev.values / 1000.0)
        except ValueError as error:
            return None, f"none ({error})"
        mass = ds["ps"] * xr.DataArray(thickness / GRAVITY, dims="lev")
        return mass.transpose("sample", "lev"), "ps dsigma / g (sigma = lev / 1000)"
    return None, "none (the store has no dp, rho and dz8w, or ps with sigma levels)"

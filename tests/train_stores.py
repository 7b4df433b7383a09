"""Tiny training stores in the pipeline's layout, and run configs over them, for the trainer's
tests: groups train/val/test of (sample, lev) and (sample,) float32 arrays with units, root
attrs name, fingerprint, inputs, targets and the train split's normalisation statistics."""

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import yaml
import zarr

NLEV = 5
SPLITS = {"train": 160, "val": 40, "test": 40}
UNITS = {
    "t": "K",
    "q": "kg kg-1",
    "ps": "Pa",
    "heating": "K s-1",
    "moistening": "kg kg-1 s-1",
    "precip": "mm s-1",
    "p": "Pa",
    "qv": "kg kg-1",
    "hfx": "W m-2",
    "rthcuten": "K s-1",
    "pratec": "mm s-1",
    "nca": "s",
}


def write_store(
    path: Path,
    groups: dict[str, dict[str, np.ndarray]],
    inputs: list[str],
    targets: list[str],
    chunk: int | None = None,
) -> Path:
    """`chunk`: samples per zarr chunk (default: zarr's choice, one chunk for tiny stores)."""
    for group, data in groups.items():
        ds = xr.Dataset(
            {
                name: (
                    ("sample", "lev")[: value.ndim],
                    value.astype(np.float32),
                    {"units": UNITS[name.removeprefix("bm_").removesuffix("_prev")]},
                )
                for name, value in data.items()
            }
        )
        encoding = (
            {name: {"chunks": (chunk, *ds[name].shape[1:])} for name in ds} if chunk else None
        )
        ds.to_zarr(
            path,
            group=group,
            mode="a" if path.exists() else "w",
            consolidated=False,
            encoding=encoding,
        )
    train = groups["train"]
    stats = {
        name: {
            "mean": np.atleast_1d(v.mean(0)).astype(float).tolist(),
            "std": np.atleast_1d(v.std(0)).astype(float).tolist(),
        }
        for name, v in train.items()
    }
    zarr.open_group(str(path), mode="a").attrs.update(
        {
            "name": path.stem,
            "fingerprint": f"tiny-{path.stem}",
            "inputs": inputs,
            "targets": targets,
            "normalisation": stats,
        }
    )
    return path


def _columns(rng: np.random.Generator, n: int, fidelity: str) -> dict[str, np.ndarray]:
    """A smooth map from (t, q, ps) to heating, moistening, precip, plus BM's diagnosis."""
    t = 290.0 - 8.0 * np.arange(NLEV) + 3.0 * rng.standard_normal((n, NLEV))
    q = 0.01 * np.exp(-np.arange(NLEV) / 2.0) * rng.uniform(0.5, 1.0, (n, NLEV))
    ps = 1.0e5 + 800.0 * rng.standard_normal(n)
    drive = (t[:, :1] - 290.0) / 3.0 + (q[:, :1] / 0.01 - 0.75) * 4.0
    shape = np.sin(np.pi * (np.arange(NLEV) + 0.5) / NLEV)
    gain = 1.0 if fidelity == "hf" else 0.7
    heating = 1e-5 * gain * np.tanh(drive) * shape + 1e-7 * rng.standard_normal((n, NLEV))
    moistening = -2e-8 * gain * np.tanh(drive) * shape
    precip = 1e-4 * np.maximum(np.tanh(drive[:, 0]), 0.0)
    data = {"t": t, "q": q, "ps": ps, "heating": heating, "moistening": moistening}
    data["precip"] = precip
    if fidelity == "hf":
        data |= {"bm_heating": 0.7 * heating, "bm_moistening": 0.7 * moistening}
        data["bm_precip"] = 0.7 * precip
    return data


def feature_store(
    path: Path,
    fidelity: str = "hf",
    seed: int = 0,
    chunk: int | None = None,
    splits: dict[str, int] = SPLITS,
) -> Path:
    """An MF-RPN-style store: "hf" (with bm_* inputs) or "lf"."""
    rng = np.random.default_rng(seed)
    groups = {group: _columns(rng, n, fidelity) for group, n in splits.items()}
    inputs = ["t", "q", "ps"] + (["bm_heating", "bm_moistening", "bm_precip"] * (fidelity == "hf"))
    return write_store(path, groups, inputs, ["heating", "moistening", "precip"], chunk)


def _mskf_columns(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    z = np.linspace(100.0, 9000.0, NLEV)
    p = 1.0e5 * np.exp(-z / 8000.0) * (1 + 0.01 * rng.standard_normal((n, 1)))
    t = 300.0 - 6.5e-3 * z + rng.standard_normal((n, NLEV))
    qv = 0.012 * np.exp(-z / 2500.0) * rng.uniform(0.4, 1.0, (n, NLEV))
    convecting = (qv[:, 0] > 0.0085) | (rng.random(n) < 0.2)
    mask = convecting[:, None]
    return {
        "t": t,
        "p": p,
        "qv": qv,
        "hfx": rng.normal(50.0, 20.0, n),
        "rthcuten_prev": mask * rng.normal(0.0, 1e-4, (n, NLEV)),
        "nca_prev": rng.choice([-100.0, 0.0, 270.0, 600.0], n),
        "rthcuten": mask * 1e-4 * np.sin(np.pi * z / 9000.0) * (qv[:, :1] / 0.01),
        "pratec": convecting * 1e-3 * qv[:, 0] / 0.01,
        "nca": np.where(convecting, 1200.0, -100.0),
    }


def bilstm_store(path: Path, seed: int = 0, chunk: int | None = None) -> Path:
    """A Bi-LSTM MSKF-style store: t, p, qv on levels, a 2-D input, previous-call fields."""
    rng = np.random.default_rng(seed)
    groups = {group: _mskf_columns(rng, n) for group, n in SPLITS.items()}
    inputs = ["t", "p", "qv", "hfx", "rthcuten_prev", "nca_prev"]
    return write_store(path, groups, inputs, ["rthcuten", "pratec", "nca"], chunk)


TRAIN = {
    "steps": 20,
    "batch_size": 16,
    "lr": 1.0e-3,
    "lr_decay": 0.9,
    "lr_decay_every": 4,  # the schedule moves within a test run
    "log_every": 3,
    "val_every": 5,
    "checkpoint_every": 7,
    "progress": False,
    "threads": 1,
}


def run_config(kind: str, stores: dict[str, Path], **train: Any) -> dict[str, Any]:
    """A tiny config of `kind` (mlp, rpn, mfrpn, mfrpn_bm, bilstm) over `stores` ("hf",
    "lf", "bilstm")."""
    model: dict[str, Any]
    if kind == "bilstm":
        model = {"kind": "bilstm", "lstm_hidden": 4, "lstm_layers": 2}
        data: dict[str, Any] = {"store": str(stores["bilstm"])}
    else:
        model = {"kind": kind.removesuffix("_bm"), "hidden": [8, 8]}
        data = {"store": str(stores["hf"]), "inputs": ["t", "q", "ps"], "nlev": {"q": 4}}
        if kind != "mlp":
            model |= {"members": 3}
        if kind.startswith("mfrpn"):
            data["lf_store"] = str(stores["lf"])
            model["composition"] = "hf_of_bm_and_x" if kind == "mfrpn_bm" else "hf_of_lf"
    return {"name": f"tiny_{kind}", "model": model, "data": data, "train": TRAIN | train}


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path

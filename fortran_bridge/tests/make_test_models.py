"""Write the model files and PyTorch reference values the Fortran bridge tests read.

Run by ctest as the fixture that every Fortran test requires:

    python make_test_models.py OUTDIR            # models + references into OUTDIR
    python make_test_models.py --compare A B     # raw field files A and B agree to 1e-6

Raw field files (also read and written by example 01_simple): little-endian stream,
int32 nlev, int32 ncol, then nlev*ncol float32 with the level index fastest, i.e. the
Fortran array a(nlev, ncol); from numpy, for x of shape (ncol, nlev) as PyTorch uses it:
np.array([nlev, ncol], "<i4").tofile(f); x.astype("<f4").tofile(f).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

from paramlib.export import ModelMetadata, save
from paramlib.models.examples import make_example

NCOL = 12  # = 4 x 3 so the same references serve the (i, k, j) tile tests
SEED = 7

# Plausible physical ranges by units, so inputs look like a host's fields.
RANGES = {"K": (200.0, 300.0), "kg kg-1": (1e-4, 2e-2), "Pa": (9.5e4, 1.03e5)}


def write_field(path: Path, x: np.ndarray) -> None:
    """x has shape (ncol, nlev), the model tensor layout."""
    ncol, nlev = x.shape
    with open(path, "wb") as f:
        np.array([nlev, ncol], dtype="<i4").tofile(f)
        np.ascontiguousarray(x, dtype="<f4").tofile(f)


def read_field(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    nlev, ncol = np.frombuffer(raw[:8], dtype="<i4")
    return np.frombuffer(raw[8:], dtype="<f4").reshape(int(ncol), int(nlev))


def make_models() -> dict[str, tuple[torch.jit.ScriptModule, ModelMetadata]]:
    """The example kinds the tests use, from paramlib.models.examples."""
    return {kind: make_example(kind, seed=SEED) for kind in ("simple", "named", "ensemble")}


def sample_inputs(metadata: ModelMetadata, rng: np.random.Generator) -> list[np.ndarray]:
    """One (NCOL, nlev) float32 array per input, in metadata (= forward argument) order."""
    out = []
    for f in metadata.inputs:
        lo, hi = RANGES.get(f.units, (-1.0, 1.0))
        out.append(rng.uniform(lo, hi, size=(NCOL, f.nlev)).astype(np.float32))
    return out


def run_reference(model_file: Path, inputs: list[np.ndarray]) -> list[torch.Tensor]:
    """PyTorch's outputs for the saved file: the same TorchScript the bridge loads."""
    module = torch.jit.load(str(model_file))
    with torch.inference_mode():
        result = module(*[torch.from_numpy(x) for x in inputs])
    return list(result) if isinstance(result, tuple | list) else [result]


def write_references(kind: str, metadata: ModelMetadata, model_file: Path, outdir: Path) -> None:
    inputs = sample_inputs(metadata, np.random.default_rng(SEED))
    outputs = run_reference(model_file, inputs)
    for f, x in zip(metadata.inputs, inputs, strict=True):
        write_field(outdir / f"{kind}_in_{f.name}.bin", x)
    for f, y in zip(metadata.outputs, outputs, strict=True):
        stem = f"{kind}_out_{f.name}"
        if y.dim() == 3:  # ensemble (M, ncol, nlev): what the bridge's statistics must give
            write_field(outdir / f"{stem}_mean.bin", y.mean(0).numpy())
            write_field(outdir / f"{stem}_spread.bin", y.std(0, unbiased=False).numpy())
            for m in range(y.shape[0]):
                write_field(outdir / f"{stem}_member{m + 1}.bin", y[m].numpy())
        else:
            write_field(outdir / f"{stem}_mean.bin", y.numpy())


def generate(outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    models = make_models()
    for kind, (module, metadata) in models.items():
        model_file = save(module, outdir / f"{kind}.pt", metadata)
        write_references(kind, metadata, model_file, outdir)
    # The pin of named.pt (hex SHA-256, one line) for the pinned-load tests.
    digest = hashlib.sha256((outdir / "named.pt").read_bytes()).hexdigest()
    (outdir / "named.pt.sha256").write_text(digest + "\n")
    # Broken files for the error tests: a truncated model, a TorchScript file
    # without paramlib.json, one whose metadata has a level order the bridge does
    # not know, and a path that does not exist.
    raw = (outdir / "simple.pt").read_bytes()
    (outdir / "corrupt.pt").write_bytes(raw[: len(raw) // 2])
    simple = torch.jit.load(str(outdir / "simple.pt"))
    torch.jit.save(simple, str(outdir / "no_metadata.pt"))
    meta = models["simple"][1].to_dict()
    meta["inputs"][0]["level_order"] = "sideways"
    torch.jit.save(
        simple, str(outdir / "bad_level_order.pt"), _extra_files={"paramlib.json": json.dumps(meta)}
    )
    # The metadata API: the JSON as stored, T's range as a field (column 1 min, column 2
    # max), a model without ranges and one whose range of T has a level too few.
    named = models["named"][1]
    (outdir / "named.json").write_text(named.to_json())
    bounds = named.valid_range["T"]
    write_field(outdir / "named_valid_range_T.bin", np.array([bounds["min"], bounds["max"]]))
    named_module = torch.jit.load(str(outdir / "named.pt"))
    meta = named.to_dict()
    del meta["valid_range"]
    torch.jit.save(
        named_module, str(outdir / "no_range.pt"), _extra_files={"paramlib.json": json.dumps(meta)}
    )
    meta = named.to_dict()
    meta["valid_range"]["T"]["min"].pop()
    torch.jit.save(
        named_module, str(outdir / "bad_range.pt"), _extra_files={"paramlib.json": json.dumps(meta)}
    )
    (outdir / "missing.pt").unlink(missing_ok=True)
    print(f"wrote {len(models)} test models, their references and broken files to {outdir}")


def compare(a: Path, b: Path, rtol: float = 1e-6) -> int:
    x, y = read_field(a), read_field(b)
    if x.shape != y.shape:
        print(f"shape {x.shape} != {y.shape}")
        return 1
    err = float(np.max(np.abs(x - y)))
    scale = max(float(np.max(np.abs(y))), np.finfo(np.float32).tiny)
    print(f"max |{a.name} - {b.name}| = {err:.3e} (field scale {scale:.3e}, rtol {rtol})")
    return 0 if err <= rtol * scale else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path)
    p.add_argument("--compare", action="store_true", help="compare two raw field files")
    args = p.parse_args(argv)
    if args.compare:
        if len(args.paths) != 2:
            p.error("--compare takes two files")
        return compare(*args.paths)
    generate(args.paths[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())

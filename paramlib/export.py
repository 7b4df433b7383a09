"""Write and read paramlib model files: TorchScript with metadata in `paramlib.json`.

The metadata contract (parsed by the C++ bridge, keep it in step with fortran_bridge):

    {"format_version": 1, "model_kind": "mlp",
     "inputs":  [{"name", "units", "nlev", "level_order", "long_name" (optional)}, ...],
     "outputs": [same],
     "ensemble_size": 1,
     "valid_range": {"<input name>": {"min": [nlev floats], "max": [nlev floats]}},  (optional)
     "provenance": {...}}                                                          (optional)

The forward convention: `forward(self, x0, x1, ...)` takes one float32 tensor per input,
in metadata order, shaped (ncol, nlev); it returns one Tensor when there is one output, else a
tuple in output order, each (ncol, nlev), or (M, ncol, nlev) when ensemble_size M > 1.

A module that normalises its inputs itself may expose that normalisation as a TorchScript
method ``input_normalisation() -> (mean, std)`` over its inputs' levels, concatenated in its
own order (paramlib's exported modules do). `save` then checks the metadata's input order
against it (`check_input_order`): metadata listing fields in another order than the module
reads them ran silently before, with heating 1e5 times off.

A model file is code: loading it with TorchScript runs what it holds. `load_metadata` reads
paramlib.json straight from the zip archive without loading the module; `save` writes the
file's SHA-256 beside it (MODEL.pt.sha256, the format of ``sha256sum``) so that a host can pin
the file it trusts (`verify_sha256`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from paramlib.atomic import write_atomic

FORMAT_VERSION = 1
METADATA_FILE = "paramlib.json"
LEVEL_ORDERS = ("surface_to_top", "top_to_surface")
CHECK_NCOL = 3
SHA256_SUFFIX = ".sha256"
INPUT_NORMALISATION = "input_normalisation"
# How far outside a field's training range the module's mean for it may lie, in units of the
# larger of its std and the range's width, before the field is taken for another one: a
# swapped pair of fields of different scales lies orders of magnitude beyond (T for q: 1e4).
ORDER_TOLERANCE = 10.0
_SHA256 = re.compile(r"[0-9a-f]{64}")

_FIELD_KEYS = ("name", "units", "nlev", "level_order", "long_name")
_FIELD_REQUIRED = ("name", "units", "nlev", "level_order")
_METADATA_KEYS = (
    "format_version",
    "model_kind",
    "inputs",
    "outputs",
    "ensemble_size",
    "valid_range",
    "provenance",
)
_METADATA_REQUIRED = ("format_version", "model_kind", "inputs", "outputs", "ensemble_size")


class MetadataError(ValueError):
    """paramlib.json content breaks the contract; the message names the key."""


class ExportError(ValueError):
    """The module cannot be saved: not scriptable, or it breaks the forward convention."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_keys(data: Any, where: str, allowed: Sequence[str], required: Sequence[str]) -> None:
    if not isinstance(data, Mapping):
        raise MetadataError(f"{where}: expected an object, got {type(data).__name__}")
    unknown = [key for key in data if key not in allowed]
    if unknown:
        raise MetadataError(
            f"{where}.{unknown[0]}: unknown key; expected one of {', '.join(allowed)}"
        )
    absent = [key for key in required if key not in data]
    if absent:
        raise MetadataError(f"{where}.{absent[0]}: required key is missing")


@dataclass(frozen=True)
class FieldSpec:
    """One named model input or output: a column field on nlev levels."""

    name: str
    units: str
    nlev: int
    level_order: str = "surface_to_top"
    long_name: str | None = None

    def validate(self, where: str) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise MetadataError(f"{where}.name: expected a non-empty string, got {self.name!r}")
        if not isinstance(self.units, str) or not self.units:
            raise MetadataError(
                f"{where}.units: expected a non-empty string (use '1' for dimensionless), "
                f"got {self.units!r}"
            )
        if not _is_int(self.nlev) or self.nlev < 1:
            raise MetadataError(f"{where}.nlev: expected an integer >= 1, got {self.nlev!r}")
        if self.level_order not in LEVEL_ORDERS:
            raise MetadataError(
                f"{where}.level_order: expected one of {', '.join(LEVEL_ORDERS)}, "
                f"got {self.level_order!r}"
            )
        if self.long_name is not None and not isinstance(self.long_name, str):
            raise MetadataError(f"{where}.long_name: expected a string, got {self.long_name!r}")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "units": self.units,
            "nlev": self.nlev,
            "level_order": self.level_order,
        }
        if self.long_name is not None:
            data["long_name"] = self.long_name
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "field") -> FieldSpec:
        _check_keys(data, where, _FIELD_KEYS, _FIELD_REQUIRED)
        spec = cls(**data)
        spec.validate(where)
        return spec


@dataclass(frozen=True)
class ModelMetadata:
    """Everything the bridge needs to know about a model file. Validated on construction."""

    model_kind: str
    inputs: Sequence[FieldSpec]
    outputs: Sequence[FieldSpec]
    ensemble_size: int = 1
    valid_range: Mapping[str, Mapping[str, Sequence[float]]] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        # Stored as tuples so that the frozen object's field lists cannot change either.
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        self.validate()

    def validate(self) -> None:
        if self.format_version != FORMAT_VERSION or not _is_int(self.format_version):
            raise MetadataError(
                f"format_version: expected {FORMAT_VERSION}, got {self.format_version!r}"
            )
        if not isinstance(self.model_kind, str) or not self.model_kind:
            raise MetadataError(f"model_kind: expected a non-empty string, got {self.model_kind!r}")
        for key, fields in (("inputs", self.inputs), ("outputs", self.outputs)):
            if not fields:
                raise MetadataError(f"{key}: expected at least one field")
            seen: set[str] = set()
            for index, spec in enumerate(fields):
                where = f"{key}[{index}]"
                if not isinstance(spec, FieldSpec):
                    raise MetadataError(f"{where}: expected a FieldSpec, got {type(spec).__name__}")
                spec.validate(where)
                if spec.name in seen:
                    raise MetadataError(
                        f"{where}.name: {spec.name!r} appears twice in {key}; names are unique"
                    )
                seen.add(spec.name)
        if not _is_int(self.ensemble_size) or self.ensemble_size < 1:
            raise MetadataError(
                f"ensemble_size: expected an integer >= 1, got {self.ensemble_size!r}"
            )
        self._validate_valid_range()
        if not isinstance(self.provenance, Mapping):
            raise MetadataError(
                f"provenance: expected an object, got {type(self.provenance).__name__}"
            )
        try:
            json.dumps(self.provenance, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise MetadataError(
                f"provenance: expected JSON-serialisable values ({error})"
            ) from None

    def _validate_valid_range(self) -> None:
        if not isinstance(self.valid_range, Mapping):
            raise MetadataError(
                f"valid_range: expected an object, got {type(self.valid_range).__name__}"
            )
        nlev = {spec.name: spec.nlev for spec in self.inputs}
        for name, bounds in self.valid_range.items():
            where = f"valid_range.{name}"
            if name not in nlev:
                raise MetadataError(
                    f"{where}: {name!r} is not an input; expected one of {', '.join(nlev)}"
                )
            _check_keys(bounds, where, ("min", "max"), ("min", "max"))
            for key in ("min", "max"):
                values = bounds[key]
                if (
                    not isinstance(values, Sequence)
                    or len(values) != nlev[name]
                    or not all(_is_real(v) for v in values)
                ):
                    raise MetadataError(
                        f"{where}.{key}: expected a list of {nlev[name]} finite numbers "
                        f"(one per level), got {values!r}"
                    )
            for level, (low, high) in enumerate(zip(bounds["min"], bounds["max"], strict=True)):
                if low > high:
                    raise MetadataError(f"{where}: min > max at level {level} ({low} > {high})")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format_version": self.format_version,
            "model_kind": self.model_kind,
            "inputs": [spec.to_dict() for spec in self.inputs],
            "outputs": [spec.to_dict() for spec in self.outputs],
            "ensemble_size": self.ensemble_size,
        }
        if self.valid_range:
            data["valid_range"] = {
                name: {"min": [float(v) for v in b["min"]], "max": [float(v) for v in b["max"]]}
                for name, b in self.valid_range.items()
            }
        if self.provenance:
            data["provenance"] = dict(self.provenance)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelMetadata:
        _check_keys(data, "metadata", _METADATA_KEYS, _METADATA_REQUIRED)
        fields: dict[str, tuple[FieldSpec, ...]] = {}
        for key in ("inputs", "outputs"):
            if not isinstance(data[key], list):
                raise MetadataError(
                    f"{key}: expected a list of fields, got {type(data[key]).__name__}"
                )
            fields[key] = tuple(
                FieldSpec.from_dict(item, f"{key}[{index}]") for index, item in enumerate(data[key])
            )
        return cls(
            format_version=data["format_version"],
            model_kind=data["model_kind"],
            inputs=fields["inputs"],
            outputs=fields["outputs"],
            ensemble_size=data["ensemble_size"],
            valid_range=data.get("valid_range", {}),
            provenance=data.get("provenance", {}),
        )

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise MetadataError(f"metadata: not valid JSON ({error})") from None
        return cls.from_dict(data)


def _as_metadata(metadata: Mapping[str, Any] | ModelMetadata) -> ModelMetadata:
    # A round trip through the dict form re-validates an object that was mutated after
    # construction and guarantees that what is written reads back.
    data = metadata.to_dict() if isinstance(metadata, ModelMetadata) else metadata
    return ModelMetadata.from_dict(data)


def forward_source(n_in: int, n_out: int) -> str:
    """TorchScript source of the convention's ``forward(x0, x1, ...)`` for a module whose
    ``forward_fields(list of Tensors)`` returns the outputs as a list (TorchScript has no
    *args): one Tensor when ``n_out`` is 1, else a tuple."""
    arguments = ", ".join(f"x{i}: Tensor" for i in range(n_in))
    call = "self.forward_fields([" + ", ".join(f"x{i}" for i in range(n_in)) + "])"
    if n_out == 1:
        return f"def forward(self, {arguments}) -> Tensor:\n    return {call}[0]\n"
    returned = ", ".join(f"y[{i}]" for i in range(n_out))
    return (
        f"def forward(self, {arguments}) -> Tuple[{', '.join(['Tensor'] * n_out)}]:\n"
        f"    y = {call}\n"
        f"    return ({returned})\n"
    )


def example_inputs(
    metadata: ModelMetadata, ncol: int = CHECK_NCOL, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    """Random float32 inputs shaped by the forward convention: one (ncol, nlev) per input."""
    generator = torch.Generator().manual_seed(seed)
    return tuple(
        torch.randn(ncol, spec.nlev, generator=generator, dtype=torch.float32)
        for spec in metadata.inputs
    )


def check_forward_convention(
    module: torch.jit.ScriptModule, metadata: ModelMetadata, ncol: int = CHECK_NCOL
) -> None:
    """Run `module` once on random inputs and raise ExportError where its forward disagrees
    with `metadata`: argument count, output count, output type, dtype or shape."""
    input_names = ", ".join(spec.name for spec in metadata.inputs)
    if not hasattr(module, "forward"):
        raise ExportError(f"module has no forward(); expected forward({input_names})")
    arguments = [argument.name for argument in module.forward.schema.arguments[1:]]
    if len(arguments) != len(metadata.inputs):
        raise ExportError(
            f"forward takes {len(arguments)} argument(s) ({', '.join(arguments)}); "
            f"metadata lists {len(metadata.inputs)} input(s) ({input_names})"
        )
    try:
        with torch.inference_mode():
            result = module(*example_inputs(metadata, ncol))
    except Exception as error:  # any failure here means the module breaks the convention
        raise ExportError(
            f"forward failed on a batch of {ncol} columns shaped by the metadata "
            f"({input_names}): {error}"
        ) from error

    n_out = len(metadata.outputs)
    if n_out == 1:
        if not isinstance(result, torch.Tensor):
            raise ExportError(
                f"forward returned {type(result).__name__}; with one output "
                f"({metadata.outputs[0].name}) the convention is a single Tensor"
            )
        results: tuple[Any, ...] = (result,)
    else:
        if not isinstance(result, tuple) or len(result) != n_out:
            count = f" of {len(result)}" if isinstance(result, tuple | list) else ""
            raise ExportError(
                f"forward returned {type(result).__name__}{count}; metadata lists {n_out} "
                f"outputs, expected a tuple of {n_out} Tensors"
            )
        results = result

    for spec, tensor in zip(metadata.outputs, results, strict=True):
        expected = (ncol, spec.nlev)
        if metadata.ensemble_size > 1:
            expected = (metadata.ensemble_size, *expected)
        if not isinstance(tensor, torch.Tensor):
            raise ExportError(f"output {spec.name}: expected a Tensor, got {type(tensor).__name__}")
        if tensor.dtype != torch.float32:
            raise ExportError(f"output {spec.name}: expected float32, got {tensor.dtype}")
        if tuple(tensor.shape) != expected:
            raise ExportError(
                f"output {spec.name}: expected shape {expected} for {ncol} columns "
                f"(nlev={spec.nlev}, ensemble_size={metadata.ensemble_size}), "
                f"got {tuple(tensor.shape)}"
            )


def check_input_order(module: torch.jit.ScriptModule, metadata: ModelMetadata) -> None:
    """Raise ExportError naming the fields whose place in the metadata's input order does not
    match the module's own normalisation: the module's mean for a field's levels must lie
    in (or near, `ORDER_TOLERANCE`) that field's training range (valid_range). Nothing to
    check for a module without `INPUT_NORMALISATION` or metadata without valid ranges."""
    if not hasattr(module, INPUT_NORMALISATION) or not metadata.valid_range:
        return
    mean, std = (t.double() for t in getattr(module, INPUT_NORMALISATION)())
    nlevs = [spec.nlev for spec in metadata.inputs]
    if mean.numel() != sum(nlevs):
        raise ExportError(
            f"the module normalises {mean.numel()} input levels, the metadata's inputs have"
            f" {sum(nlevs)} ({', '.join(f'{s.name}: {s.nlev}' for s in metadata.inputs)})"
        )
    places = zip(mean.split(nlevs), std.split(nlevs), strict=True)
    stats = dict(zip(metadata.inputs, places, strict=True))

    def misfit(spec: FieldSpec, field_mean: torch.Tensor, field_std: torch.Tensor) -> float:
        bounds = metadata.valid_range[spec.name]
        low, high = (torch.tensor(bounds[k], dtype=torch.float64) for k in ("min", "max"))
        beyond = torch.maximum(low - field_mean, field_mean - high).clamp(min=0)
        return float((beyond / torch.maximum(field_std, high - low)).max())

    wrong = [
        spec
        for spec, (m, sd) in stats.items()
        if spec.name in metadata.valid_range and misfit(spec, m, sd) > ORDER_TOLERANCE
    ]
    if wrong:
        details = []
        for spec in wrong:
            # The field whose statistics sit at this position, when one fits: a swapped pair.
            fits = [
                other.name
                for other, (m, sd) in stats.items()
                if other.nlev == spec.nlev
                and other.name in metadata.valid_range
                and misfit(other, *stats[spec]) <= ORDER_TOLERANCE
            ]
            found = f" (its place holds {' or '.join(fits)})" if fits else ""
            details.append(f"{spec.name}{found}")
        raise ExportError(
            "the metadata's input order differs from the module's: at the place of"
            f" {', '.join(details)} the module's input normalisation is far outside that"
            " field's training range; list the inputs in the order the module reads them"
        )


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file, as 64 lowercase hex digits."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike[str], expected: str, what: str) -> Path:
    """`path` when its SHA-256 is `expected` (named by `what` in the message), before
    anything loads it: a model file is code, so only the pinned file may run."""
    path = Path(path)
    wanted = str(expected).strip().lower()
    if not _SHA256.fullmatch(wanted):
        raise MetadataError(f"{what}: expected 64 hex digits of a SHA-256, got {expected!r}")
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    found = file_sha256(path)
    if found != wanted:
        raise ExportError(
            f"model file {path} has SHA-256 {found}, but {what} pins {wanted}: not the file"
            " that was pinned (a model file is code; load only files you trust)"
        )
    return path


def save(
    module: torch.nn.Module | torch.jit.ScriptModule,
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any] | ModelMetadata,
) -> Path:
    """Write `module` as a TorchScript model file with `metadata` in paramlib.json.

    The module is scripted unless it already is, put in eval mode, and checked against the
    forward convention before anything is written. The file appears atomically: a failed
    save leaves no partial file and an existing file at `path` untouched.
    """
    path = Path(path)
    meta = _as_metadata(metadata)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: directory {path.parent} does not exist")
    if isinstance(module, torch.jit.ScriptModule):
        scripted = module
    else:
        try:
            scripted = torch.jit.script(module)
        except Exception as error:  # torch raises several types for unscriptable code
            raise ExportError(
                f"cannot script {type(module).__name__} for {path}: {error}"
            ) from error
    scripted.eval()  # model files are for inference: no dropout, frozen batch-norm statistics
    check_forward_convention(scripted, meta)
    check_input_order(scripted, meta)

    extra = {METADATA_FILE: meta.to_json()}
    write_atomic(path, lambda handle: torch.jit.save(scripted, handle, _extra_files=extra))
    line = f"{file_sha256(path)}  {path.name}\n"
    write_atomic(path.with_name(path.name + SHA256_SUFFIX), lambda h: h.write(line.encode()))
    return path


def metadata_text(path: str | os.PathLike[str]) -> str | None:
    """paramlib.json's text read straight from the model file's zip archive, where
    TorchScript keeps extra files (``<archive>/extra/paramlib.json``), without loading the
    module (which would run its code); None when the archive has no paramlib.json (a
    training checkpoint, a foreign TorchScript file)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [
                name
                for name in archive.namelist()
                if name.count("/") == 2 and name.endswith(f"/extra/{METADATA_FILE}")
            ]
            return archive.read(names[0]).decode() if names else None
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as error:
        raise ExportError(f"{path} is not a TorchScript model file: {error}") from None


def load_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The validated paramlib.json of the model file at `path`, as a dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    text = metadata_text(path)
    if text is None:
        raise MetadataError(
            f"{path} has no {METADATA_FILE}; it was not written by paramlib.export.save"
        )
    try:
        data = json.loads(text)
        ModelMetadata.from_dict(data)
    except (json.JSONDecodeError, MetadataError) as error:
        raise MetadataError(f"{path}: {METADATA_FILE} is invalid: {error}") from None
    return data

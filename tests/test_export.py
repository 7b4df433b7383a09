"""paramlib.export (model files, metadata contract, forward convention) and the example
models of paramlib.models.examples."""

import copy
import json
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from paramlib.export import (
    METADATA_FILE,
    ExportError,
    FieldSpec,
    MetadataError,
    ModelMetadata,
    example_inputs,
    file_sha256,
    load_metadata,
    save,
)
from paramlib.models.examples import EXAMPLE_KINDS, EnsembleMLP, make_example

DELETE = object()


def valid_dict() -> dict[str, Any]:
    return {
        "format_version": 1,
        "model_kind": "mlp",
        "inputs": [
            {
                "name": "T",
                "units": "K",
                "nlev": 3,
                "level_order": "surface_to_top",
                "long_name": "air temperature",
            },
            {"name": "ps", "units": "Pa", "nlev": 1, "level_order": "surface_to_top"},
        ],
        "outputs": [
            {"name": "heating", "units": "K s-1", "nlev": 3, "level_order": "top_to_surface"}
        ],
        "ensemble_size": 1,
        "valid_range": {"T": {"min": [200.0, 190.0, 180.0], "max": [320.0, 300.0, 280.0]}},
        "provenance": {"git_commit": "abc123", "files": ["hist.nc"]},
    }


def mutated(path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    data = valid_dict()
    parent: Any = data
    for key in path[:-1]:
        parent = parent[key]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return data


class Scale(nn.Module):
    """An eager module that follows the convention for one input and one output of equal nlev."""

    def forward(self, x: Tensor) -> Tensor:
        return 2.0 * x


def one_field_metadata(
    in_nlev: int = 4, out_nlev: int = 4, ensemble_size: int = 1, n_out: int = 1
) -> ModelMetadata:
    return ModelMetadata(
        model_kind="test",
        inputs=[FieldSpec("x", "1", in_nlev)],
        outputs=[FieldSpec(f"y{i}", "1", out_nlev) for i in range(n_out)],
        ensemble_size=ensemble_size,
    )


def run_outputs(module: torch.jit.ScriptModule, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    with torch.inference_mode():
        result = module(*inputs)
    return result if isinstance(result, tuple) else (result,)


# --- metadata -------------------------------------------------------------------------------


def test_metadata_round_trips_through_dict_and_json() -> None:
    metadata = ModelMetadata.from_dict(valid_dict())
    assert metadata.to_dict() == valid_dict()
    assert ModelMetadata.from_json(metadata.to_json()) == metadata
    assert metadata.inputs[0] == FieldSpec("T", "K", 3, "surface_to_top", "air temperature")


def test_optional_keys_are_omitted_when_empty() -> None:
    data = valid_dict()
    del data["valid_range"], data["provenance"], data["inputs"][0]["long_name"]
    written = ModelMetadata.from_dict(data).to_dict()
    assert written == data
    assert "long_name" not in written["inputs"][0]


@pytest.mark.parametrize(
    ("path", "value", "key"),
    [
        (("format_version",), 2, "format_version"),
        (("format_version",), True, "format_version"),
        (("format_version",), DELETE, "format_version"),
        (("model_kind",), "", "model_kind"),
        (("inputs",), [], "inputs"),
        (("inputs",), "T", "inputs"),
        (("outputs",), DELETE, "outputs"),
        (("inputs", 0), ["T", "K", 3], "inputs[0]"),
        (("inputs", 0, "name"), "", "inputs[0].name"),
        (("inputs", 1, "name"), "T", "inputs[1].name"),
        (("inputs", 0, "nlev"), 0, "inputs[0].nlev"),
        (("inputs", 0, "nlev"), 3.0, "inputs[0].nlev"),
        (("inputs", 0, "nlev"), True, "inputs[0].nlev"),
        (("inputs", 0, "nlev"), "3", "inputs[0].nlev"),
        (("inputs", 1, "units"), DELETE, "inputs[1].units"),
        (("outputs", 0, "units"), "", "outputs[0].units"),
        (("outputs", 0, "units"), None, "outputs[0].units"),
        (("inputs", 0, "level_order"), "bottom_up", "inputs[0].level_order"),
        (("outputs", 0, "level_order"), DELETE, "outputs[0].level_order"),
        (("inputs", 0, "long_name"), 5, "inputs[0].long_name"),
        (("inputs", 0, "nlevs"), 3, "inputs[0].nlevs"),
        (("ensemble_size",), 0, "ensemble_size"),
        (("ensemble_size",), 2.5, "ensemble_size"),
        (("ensemble_size",), DELETE, "ensemble_size"),
        (("ensemble_sise",), 2, "ensemble_sise"),
        (("valid_range",), [], "valid_range"),
        (("valid_range", "heating"), {"min": [0, 0, 0], "max": [1, 1, 1]}, "valid_range.heating"),
        (("valid_range", "T", "min"), [200.0, 190.0], "valid_range.T.min"),
        (("valid_range", "T", "max"), [320.0, 300.0, math.nan], "valid_range.T.max"),
        (("valid_range", "T", "max"), "300", "valid_range.T.max"),
        (("valid_range", "T", "max"), DELETE, "valid_range.T.max"),
        (("valid_range", "T", "mean"), [250.0] * 3, "valid_range.T.mean"),
        (("valid_range", "T", "min"), [200.0, 310.0, 180.0], "valid_range.T"),
        (("provenance",), "abc123", "provenance"),
        (("provenance", "when"), object(), "provenance"),
    ],
)
def test_invalid_metadata_error_names_the_key(
    path: tuple[str | int, ...], value: Any, key: str
) -> None:
    with pytest.raises(MetadataError, match=re.escape(key)):
        ModelMetadata.from_dict(mutated(path, value))


def test_duplicate_output_names_are_rejected() -> None:
    data = valid_dict()
    data["outputs"].append(copy.deepcopy(data["outputs"][0]))
    with pytest.raises(MetadataError, match=re.escape("outputs[1].name: 'heating' appears twice")):
        ModelMetadata.from_dict(data)


def test_min_above_max_names_the_level() -> None:
    with pytest.raises(MetadataError, match="min > max at level 1"):
        ModelMetadata.from_dict(mutated(("valid_range", "T", "min"), [200.0, 310.0, 180.0]))


def test_same_name_may_be_an_input_and_an_output() -> None:
    data = valid_dict()
    data["outputs"][0]["name"] = "T"
    assert ModelMetadata.from_dict(data).outputs[0].name == "T"


def test_from_json_rejects_malformed_json() -> None:
    with pytest.raises(MetadataError, match="not valid JSON"):
        ModelMetadata.from_json("{format_version: 1")


def test_metadata_is_validated_on_construction() -> None:
    with pytest.raises(MetadataError, match=re.escape("outputs[0].nlev")):
        one_field_metadata(out_nlev=0)


# --- save / load_metadata -------------------------------------------------------------------


def test_save_writes_model_and_metadata_that_read_back(model_path: Path) -> None:
    module, metadata = make_example("named", seed=0)
    assert save(module, model_path, metadata) == model_path
    assert load_metadata(model_path) == metadata.to_dict()
    inputs = example_inputs(metadata, ncol=5)
    loaded = torch.jit.load(str(model_path))
    for got, want in zip(run_outputs(loaded, inputs), run_outputs(module, inputs), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_save_accepts_metadata_as_dict(model_path: Path) -> None:
    data = one_field_metadata().to_dict()
    save(Scale(), model_path, data)
    assert load_metadata(model_path) == data


def test_save_scripts_an_eager_module_and_sets_eval_mode(model_path: Path) -> None:
    module = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    assert module.training
    save(module, model_path, one_field_metadata())
    loaded = torch.jit.load(str(model_path))
    assert not loaded.training
    x = torch.ones(2, 4)
    torch.testing.assert_close(loaded(x), loaded(x))  # dropout off: deterministic


def test_invalid_metadata_writes_nothing(model_path: Path) -> None:
    with pytest.raises(MetadataError, match="ensemble_size"):
        save(Scale(), model_path, mutated(("ensemble_size",), 0))
    assert list(model_path.parent.iterdir()) == []


def test_save_into_missing_directory_names_it(tmp_path: Path) -> None:
    target = tmp_path / "absent" / "model.pt"
    with pytest.raises(FileNotFoundError, match=re.escape(str(target.parent))):
        save(Scale(), target, one_field_metadata())


@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_leaves_no_partial_or_temporary_file(
    model_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    if existing:
        model_path.write_bytes(b"the previous model")

    def save_half_then_fail(module: Any, handle: Any, _extra_files: Any = None) -> None:
        handle.write(b"half a model")
        raise OSError("disk full")

    monkeypatch.setattr(torch.jit, "save", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save(Scale(), model_path, one_field_metadata())
    assert [p.name for p in model_path.parent.iterdir()] == (["model.pt"] if existing else [])
    if existing:
        assert model_path.read_bytes() == b"the previous model"


def test_failed_rename_leaves_no_temporary_file(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(src: Any, dst: Any) -> None:
        raise PermissionError(f"cannot replace {dst}")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        save(Scale(), model_path, one_field_metadata())
    assert list(model_path.parent.iterdir()) == []


def test_save_replaces_an_existing_file(model_path: Path) -> None:
    model_path.write_bytes(b"the previous model")
    save(Scale(), model_path, one_field_metadata())
    assert load_metadata(model_path)["inputs"][0]["name"] == "x"
    # No temporary file is left; the SHA-256 sidecar is the new file's.
    assert sorted(p.name for p in model_path.parent.iterdir()) == ["model.pt", "model.pt.sha256"]
    assert (model_path.parent / "model.pt.sha256").read_text().split()[0] == file_sha256(model_path)


def test_load_metadata_of_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.pt"))):
        load_metadata(tmp_path / "nope.pt")


def test_load_metadata_of_non_torchscript_file_names_it(model_path: Path) -> None:
    model_path.write_text("not a model")
    with pytest.raises(ExportError, match=re.escape(f"{model_path} is not a TorchScript")):
        load_metadata(model_path)


def test_load_metadata_without_metadata_names_file_and_entry(model_path: Path) -> None:
    torch.jit.save(torch.jit.script(Scale()), str(model_path))
    with pytest.raises(MetadataError, match=re.escape(f"{model_path} has no {METADATA_FILE}")):
        load_metadata(model_path)


def test_load_metadata_with_invalid_metadata_names_file_and_key(model_path: Path) -> None:
    data = one_field_metadata().to_dict()
    data["format_version"] = 2
    extra = {METADATA_FILE: json.dumps(data)}
    torch.jit.save(torch.jit.script(Scale()), str(model_path), _extra_files=extra)
    with pytest.raises(MetadataError, match=re.escape(str(model_path)) + ".*format_version"):
        load_metadata(model_path)


# --- forward convention ---------------------------------------------------------------------


class TwoOutputs(nn.Module):
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x, x


class ListOutputs(nn.Module):
    def forward(self, x: Tensor) -> list[Tensor]:
        return [x, x]


class Float64Output(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.double()


class Crashes(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x @ torch.ones(7, 2)


class Unscriptable(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * len({str(v) for v in x.tolist()})  # set comprehensions are not TorchScript


@pytest.mark.parametrize(
    ("make_module", "metadata", "message"),
    [
        (
            lambda: make_example("simple", 0)[0],
            lambda: make_example("named", 0)[1],
            "forward takes 1 argument(s) (x0); metadata lists 3 input(s) (T, q, ps)",
        ),
        (TwoOutputs, one_field_metadata, "with one output (y0) the convention is a single Tensor"),
        (
            TwoOutputs,
            lambda: one_field_metadata(n_out=3),
            "forward returned tuple of 2; metadata lists 3 outputs",
        ),
        (ListOutputs, lambda: one_field_metadata(n_out=2), "forward returned list of 2"),
        (Scale, lambda: one_field_metadata(out_nlev=3), "output y0: expected shape (3, 3)"),
        (
            Scale,
            lambda: one_field_metadata(ensemble_size=2),
            "output y0: expected shape (2, 3, 4)",
        ),
        (Float64Output, one_field_metadata, "output y0: expected float32, got torch.float64"),
        (Crashes, one_field_metadata, "forward failed on a batch of 3 columns"),
        (Unscriptable, one_field_metadata, "cannot script Unscriptable"),
    ],
)
def test_convention_mismatch_is_detected_and_nothing_written(
    model_path: Path,
    make_module: Callable[[], nn.Module],
    metadata: Callable[[], ModelMetadata],
    message: str,
) -> None:
    with pytest.raises(ExportError, match=re.escape(message)):
        save(make_module(), model_path, metadata())
    assert list(model_path.parent.iterdir()) == []


def test_ensemble_model_with_deterministic_metadata_is_rejected(model_path: Path) -> None:
    module, metadata = make_example("ensemble", 0)
    data = metadata.to_dict()
    data["ensemble_size"] = 1
    with pytest.raises(ExportError, match=re.escape("output heating: expected shape (3, 8)")):
        save(module, model_path, data)


class NoForward(nn.Module):
    @torch.jit.export
    def run(self, x: Tensor) -> Tensor:
        return x


def test_scripted_module_without_forward_is_rejected(model_path: Path) -> None:
    with pytest.raises(
        ExportError, match=re.escape("module has no forward(); expected forward(x)")
    ):
        save(torch.jit.script(NoForward()), model_path, one_field_metadata())


# --- example models -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", EXAMPLE_KINDS)
def test_every_example_saves_and_reads_back(
    kind: str, example_model_file: Callable[[str], Path]
) -> None:
    module, metadata = make_example(kind, seed=0)
    path = example_model_file(kind)
    assert ModelMetadata.from_dict(load_metadata(path)) == metadata
    inputs = example_inputs(metadata, ncol=4, seed=1)
    loaded = torch.jit.load(str(path))
    for got, want in zip(run_outputs(loaded, inputs), run_outputs(module, inputs), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_mfrpn_size_example_has_the_paper_architecture() -> None:
    module, metadata = make_example("mfrpn_size", seed=0)
    assert [(f.name, f.nlev) for f in metadata.inputs] == [
        ("T", 26),
        ("q", 22),
        ("PS", 1),
        ("SOLIN", 1),
        ("SHFLX", 1),
        ("LHFLX", 1),
    ]
    assert sum(f.nlev for f in metadata.inputs) == 52
    assert sum(f.nlev for f in metadata.outputs) == 48
    sizes = [52, *[512] * 7, 48]
    expected = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    assert sum(p.numel() for p in module.parameters()) == expected
    assert module.net.layers[1].negative_slope == 0.15


def test_examples_depend_on_the_seed_only() -> None:
    inputs = example_inputs(make_example("named", 0)[1], ncol=5)
    first = run_outputs(make_example("named", 7)[0], inputs)
    again = run_outputs(make_example("named", 7)[0], inputs)
    other = run_outputs(make_example("named", 8)[0], inputs)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first[0], other[0])


def test_example_normalises_physical_inputs_and_scales_outputs() -> None:
    module, metadata = make_example("named", seed=0)
    columns = 16
    temperature = torch.linspace(300.0, 200.0, 8).expand(columns, 8)
    humidity = torch.linspace(1.5e-2, 1e-5, 8).expand(columns, 8)
    pressure = torch.full((columns, 1), 1.0e5)
    heating, moistening, precip = run_outputs(module, (temperature, humidity, pressure))
    assert heating.shape == (columns, 8) and precip.shape == (columns, 1)
    # Typical inputs give outputs at the scale of their physical units, not O(1).
    assert 0 < heating.abs().max() < 1e-3
    assert 0 < moistening.abs().max() < 1e-6


def test_ensemble_example_members_differ() -> None:
    module, metadata = make_example("ensemble", seed=0)
    heating, moistening, precip = run_outputs(module, example_inputs(metadata, ncol=5))
    assert heating.shape == (4, 5, 8) and precip.shape == (4, 5, 1)
    assert not torch.allclose(heating[0], heating[1])


def test_ensemble_mlp_matches_member_by_member_computation() -> None:
    generator = torch.Generator().manual_seed(3)
    ensemble = EnsembleMLP(5, [7, 6], 3, members=4, generator=generator)
    with torch.no_grad():  # biases start at zero; make them matter
        for parameter in ensemble.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    x = torch.randn(9, 5, generator=generator)
    linears = [layer for layer in ensemble.layers if hasattr(layer, "weight")]
    expected = []
    for member in range(4):
        h = x
        for index, layer in enumerate(linears):
            h = h @ layer.weight[member] + layer.bias[member]
            if index < len(linears) - 1:
                h = nn.functional.leaky_relu(h, 0.15)
        expected.append(h)
    with torch.no_grad():
        torch.testing.assert_close(ensemble(x), torch.stack(expected))


def test_unknown_example_kind_is_named() -> None:
    with pytest.raises(ValueError, match="kind: expected one of simple, .*got 'huge'"):
        make_example("huge", 0)

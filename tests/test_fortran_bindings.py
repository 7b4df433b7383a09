"""The Fortran bridge driven from Python (Python -> f90wrap -> Fortran -> C ABI -> libtorch),
checked against PyTorch running the same model file on the same inputs."""

import contextlib
import importlib.util
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from paramlib import paths
from paramlib.export import load_metadata, save
from paramlib.fortran import bridge as fortran
from paramlib.fortran.bridge import BridgeError, BridgePrecisionWarning, FortranModel, Status
from paramlib.models.examples import make_example

# Skips the module with "run `make build`" where paramlib/_ext is not built (fails under CI).
pytestmark = pytest.mark.usefixtures("bindings")

NCOL = 7
# Outputs are in physical units (heating ~1e-5 K s-1, moistening ~1e-8 kg kg-1 s-1), so the
# fp32 tolerance of 1e-6 applies to each field relative to its largest magnitude.
TOLERANCE = 1e-6

ModelFile = Callable[[str], Path]


def physical_inputs(model: FortranModel, seed: int, ncol: int = NCOL) -> dict[str, np.ndarray]:
    """float32 (ncol, nlev) inputs at each field's typical value and spread, by units."""
    typical = {"K": (250.0, 40.0), "kg kg-1": (5e-3, 2e-3), "Pa": (1.0e5, 1.0e3)}
    rng = np.random.default_rng(seed)
    return {
        f.name: (
            typical[f.units][0] + typical[f.units][1] * rng.standard_normal((ncol, f.nlev))
        ).astype(np.float32)
        for f in model.inputs
    }


def torch_forward(path: Path, inputs: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    module = torch.jit.load(str(path))
    names = [f["name"] for f in load_metadata(path)["inputs"]]
    with torch.inference_mode():
        result = module(*(torch.from_numpy(inputs[n].astype(np.float32)) for n in names))
    return result if isinstance(result, tuple) else (result,)


@contextlib.contextmanager
def fails(status: Status, *words: str) -> Iterator[None]:
    """Expect a BridgeError with this status and a message containing every word."""
    with pytest.raises(BridgeError) as info:
        yield
    assert info.value.status == status, f"{Status(info.value.status).name}: {info.value.message}"
    for word in words:
        assert word in info.value.message, f"{word!r} not in {info.value.message!r}"


def assert_matches(actual: np.ndarray, expected: torch.Tensor) -> None:
    expected_np = expected.numpy()
    assert actual.shape == expected_np.shape
    scale = float(np.abs(expected_np).max())
    assert scale > 0, "reference output is all zeros: the comparison would prove nothing"
    assert float(np.abs(actual - expected_np).max()) <= TOLERANCE * scale


def bridge_header(repo_root: Path) -> ModuleType:
    """fortran_bridge/cmake/bridge_header.py: the header's enums, as fypp reads them."""
    path = repo_root / "fortran_bridge" / "cmake" / "bridge_header.py"
    spec = importlib.util.spec_from_file_location("bridge_header", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_python_constants_match_c_header(repo_root: Path) -> None:
    enum = bridge_header(repo_root).enum
    assert {name.removeprefix("PL_"): value for name, value in enum("pl_status")} == {
        status.name: status.value for status in Status
    }
    assert {name.removeprefix("PL_DEVICE_").lower(): v for name, v in enum("pl_device")} == (
        fortran._DEVICES
    )
    assert {name.removeprefix("PL_").lower(): v for name, v in enum("pl_statistic")} == (
        fortran._STATISTICS
    )
    assert {name.removeprefix("PL_PRECISION_").lower(): v for name, v in enum("pl_precision")} == (
        fortran._PRECISIONS
    )


def test_fortran_constants_are_generated_from_c_header(
    repo_root: Path, bridge_library: Path
) -> None:
    """The built module's parameters are the header's values (fypp, bridge_header.enum)."""
    generated = (paths.build_dir() / "fortran_bridge" / "paramlib_bridge.f90").read_text()
    found = dict(re.findall(r"parameter, public :: (PARAMLIB_\w+) = (\d+)$", generated, re.M))
    enum = bridge_header(repo_root).enum
    prefixes = {
        "pl_status": "PL_",
        "pl_device": "PL_DEVICE_",
        "pl_statistic": "PL_",
        "pl_precision": "PL_",
    }
    expected = {
        "PARAMLIB_" + name.removeprefix(prefix): str(value)
        for kind, prefix in prefixes.items()
        for name, value in enum(kind)
    }
    assert len(expected) == 25 and {k: found.get(k) for k in expected} == expected


def test_header_enumerators_need_explicit_values(repo_root: Path, tmp_path: Path) -> None:
    header = tmp_path / "h.h"
    header.write_text("enum pl_status {\n  PL_OK = 0, /* fine */\n  PL_NEXT\n};\n")
    with pytest.raises(ValueError, match="'PL_NEXT' has no explicit integer value"):
        bridge_header(repo_root).enum("pl_status", header)


def test_column_interface_reaches_the_bridge_through_its_module(repo_root: Path) -> None:
    """The column interface loads its model once (the pinned handle also serves the metadata
    through model%valid_range), declares no bind(c) interface of its own and parses no JSON."""
    source = (repo_root / "fortran_bridge/column_physics/paramlib_column_physics.f90").read_text()
    code = "\n".join(line.split("!")[0] for line in source.lower().splitlines())
    assert "bind(c" not in code and "pl_model_" not in code
    assert code.count("%load(") == 1 and "%valid_range(" in code
    assert not list((repo_root / "fortran_bridge").rglob("paramlib_valid_range.f90"))


def test_set_num_threads_keeps_the_hosts_thread_count() -> None:
    # The bridge applies its count only during its own calls (fortran_bridge/tests/
    # test_openmp_host.f90 checks it inside them); this process's torch keeps its own.
    before = torch.get_num_threads()
    try:
        fortran.set_num_threads(2)
        assert torch.get_num_threads() == before
    finally:
        fortran.set_num_threads(1)
    assert torch.get_num_threads() == before


def test_metadata_reaches_python(example_model_file: ModelFile) -> None:
    path = example_model_file("named")
    metadata = load_metadata(path)
    with FortranModel(path) as model:
        for fields, declared in (
            (model.inputs, metadata["inputs"]),
            (model.outputs, metadata["outputs"]),
        ):
            assert [(f.name, f.units, f.nlev) for f in fields] == [
                (d["name"], d["units"], d["nlev"]) for d in declared
            ]
        assert model.ensemble_size == 1
        model.check_field("T", 8, units="K")
        model.check_field("precip", 1, output=True)


def test_multi_field_model_matches_torch(example_model_file: ModelFile) -> None:
    path = example_model_file("named")
    with FortranModel(path) as model:
        # Two calls with different column counts: buffers are resized, not stale.
        for seed, ncol in ((1, NCOL), (2, 3)):
            inputs = physical_inputs(model, seed, ncol)
            model.set_input("T", inputs["T"], units="K")
            model.set_input("q", inputs["q"])
            model.set_input("ps", inputs["ps"][:, 0])  # one-level field as a rank-1 (ncol) array
            assert model.forward() == 0
            for field, expected in zip(model.outputs, torch_forward(path, inputs), strict=True):
                assert_matches(model.get_output(field.name), expected)


def test_real64_inputs_and_outputs(example_model_file: ModelFile) -> None:
    path = example_model_file("named")
    with FortranModel(path) as model:
        inputs = physical_inputs(model, seed=3)
        # float32 values widened to float64: the bridge's float64 -> float32 copy is exact.
        model.set_input("T", inputs["T"].astype(np.float64))
        model.set_input("q", inputs["q"].astype(np.float64))
        model.set_input("ps", inputs["ps"][:, 0].astype(np.float64))
        assert model.forward() == 0
        heating = model.get_output("heating", dtype=np.float64)
        assert heating.dtype == np.float64
        assert_matches(heating, torch_forward(path, inputs)[0])


def test_ensemble_mean_spread_member(example_model_file: ModelFile) -> None:
    path = example_model_file("ensemble")
    with FortranModel(path) as model:
        assert model.ensemble_size == 4
        inputs = physical_inputs(model, seed=4)
        for name, values in inputs.items():
            model.set_input(name, values)
        assert model.forward() == 0
        members = torch_forward(path, inputs)[0]  # heating, (M, ncol, nlev)
        mean = model.get_output("heating")
        assert_matches(mean, members.mean(0))
        assert_matches(model.get_output("heating", "spread"), members.std(0, unbiased=False))
        member = model.get_output("heating", "member", member=2)
        assert_matches(member, members[2])
        assert not np.allclose(member, mean)  # the statistic really selects different data
        assert_matches(model.get_output("heating", "member", member=3), members[3])


def test_nan_columns_are_counted_and_zeroed(example_model_file: ModelFile) -> None:
    path = example_model_file("named")
    with FortranModel(path) as model:
        inputs = physical_inputs(model, seed=5)
        inputs["T"][2, 4] = np.nan
        inputs["q"][5, 0] = np.inf
        for name, values in inputs.items():
            model.set_input(name, values)
        assert model.forward() == 2
        np.testing.assert_array_equal(model.bad_columns(), np.isin(np.arange(NCOL), [2, 5]))
        heating = model.get_output("heating")
        assert np.all(heating[[2, 5]] == 0.0)
        good = [c for c in range(NCOL) if c not in (2, 5)]
        assert_matches(heating[good], torch_forward(path, inputs)[0][good])

        model.set_screening(False)
        for name, values in inputs.items():
            model.set_input(name, values)
        assert model.forward() == 0
        assert np.isnan(model.get_output("heating")[2]).all()


def test_bf16_is_checked_against_float32_and_refused_beyond_the_tolerance(
    example_model_file: ModelFile,
) -> None:
    path = example_model_file("named")
    with FortranModel(path) as model:
        inputs = physical_inputs(model, seed=11)

        def heating() -> np.ndarray:
            for name, values in inputs.items():
                model.set_input(name, values)
            model.forward()
            return model.get_output("heating")

        reference = heating()
        model.set_precision("bf16", 0.5)
        assert model.precision() == ("bf16", -1.0)
        reduced = heating()
        kept, error = model.precision()
        assert kept == "bf16" and 0 < error <= 0.5
        assert np.linalg.norm(reduced - reference) <= error * np.linalg.norm(reference) * 1.001
        model.set_precision("bf16", 1e-9)
        with pytest.warns(BridgePrecisionWarning, match="bf16 refused .* tolerance 1e-09"):
            np.testing.assert_array_equal(heating(), reference)
        assert model.precision()[0] == "fp32"
        with fails(Status.ERR_DEVICE, "CUDA matmul mode"):
            model.set_precision("tf32", 0.01)
        with pytest.raises(ValueError, match="'fp16'"):
            model.set_precision("fp16", 0.01)


def test_setting_a_field_again_replaces_its_nan_verdict(example_model_file: ModelFile) -> None:
    path = example_model_file("named")
    with FortranModel(path) as model:
        inputs = physical_inputs(model, seed=7)
        bad_t = inputs["T"].copy()
        bad_t[3, 1] = np.nan
        model.set_input("T", bad_t)
        for name, values in inputs.items():  # T again, now clean
            model.set_input(name, values)
        assert model.forward() == 0
        assert_matches(model.get_output("heating"), torch_forward(path, inputs)[0])


def test_inputs_stay_alive_until_forward(example_model_file: ModelFile) -> None:
    """The bridge reads contiguous float32 inputs in place at forward: arrays the caller
    dropped must still hold their values then."""
    path = example_model_file("named")
    with FortranModel(path) as model:
        inputs = physical_inputs(model, seed=6)
        for name, values in inputs.items():
            model.set_input(name, values.copy())  # the only reference is the model's
        # New arrays of the same size would take over the memory of any input freed early.
        filler = [np.full((NCOL, 8), -1.0e30, dtype=np.float32) for _ in range(64)]
        assert model.forward() == 0
        del filler
        assert_matches(model.get_output("heating"), torch_forward(path, inputs)[0])


def test_errors_come_back_as_bridge_errors(example_model_file: ModelFile, tmp_path: Path) -> None:
    path = example_model_file("named")
    model = FortranModel(path)
    t = np.full((NCOL, 8), 280.0, dtype=np.float32)

    with fails(Status.ERR_NAME, "'nope'", "T, q, ps"):
        model.set_input("nope", t)
    with fails(Status.ERR_LEVELS, "'T'", "7 levels"):
        model.set_input("T", t[:, :7])
    with fails(Status.ERR_UNITS, "'T'", "degC"):
        model.set_input("T", t, units="degC")
    with fails(Status.ERR_UNITS, "'heating'", "K day-1"):
        model.check_field("heating", 8, units="K day-1", output=True)
    with fails(Status.ERR_NOT_READY, "'heating'", "forward"):
        model.get_output("heating")
    model.set_input("T", t)
    with fails(Status.ERR_NOT_READY, "'q'"):
        model.forward()
    with fails(Status.ERR_SHAPE, "'q'", "columns"):
        model.set_input("q", np.zeros((NCOL + 1, 8), dtype=np.float32))
    model.set_input("q", np.zeros((NCOL, 8), dtype=np.float32))
    model.set_input("ps", np.full(NCOL, 1.0e5, dtype=np.float32))
    assert model.forward() == 0
    with fails(Status.ERR_ARGUMENT, "'heating'", "spread"):
        model.get_output("heating", "spread")
    with fails(Status.ERR_NAME, "'nope'"):
        model.get_output("nope")
    with fails(Status.ERR_ARGUMENT, "thread count", "0"):
        fortran.set_num_threads(0)

    model.free()
    with fails(Status.ERR_HANDLE, "not a loaded model"):
        model.set_input("T", t)
    with fails(Status.ERR_HANDLE, "not a loaded model"):
        model.free()

    missing = tmp_path / "missing.pt"
    with fails(Status.ERR_FILE, str(missing)):
        FortranModel(missing)
    bare = tmp_path / "bare.pt"
    module, metadata = make_example("simple")
    torch.jit.save(module, str(bare))  # a TorchScript file without paramlib.json
    with fails(Status.ERR_METADATA, str(bare), "paramlib.json"):
        FortranModel(bare)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(path.read_bytes()[:2000])  # a truncated model file
    with fails(Status.ERR_LOAD, str(corrupt)):
        FortranModel(corrupt)
    if not torch.cuda.is_available():
        with fails(Status.ERR_DEVICE, "cuda:0", str(path)):
            FortranModel(path, device="cuda")

    # Nothing above stopped the process, and the bridge still runs models.
    saved = save(module, tmp_path / "simple.pt", metadata)
    with FortranModel(saved) as simple:
        x = np.linspace(-1.0, 1.0, 3 * 4, dtype=np.float32).reshape(3, 4)
        simple.set_input("x", x)
        simple.forward()
        assert_matches(simple.get_output("y"), torch_forward(saved, {"x": x})[0])


def test_missing_bindings_raise_import_error_with_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    fortran._api.cache_clear()
    monkeypatch.setitem(sys.modules, "paramlib._ext.paramlib_bridge", None)
    try:
        with pytest.raises(ImportError, match=re.escape(fortran.BUILD_HINT)):
            FortranModel("any.pt")
    finally:
        fortran._api.cache_clear()

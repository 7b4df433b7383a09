"""Reliability of the Fortran bridge (issue 12): threads sharing one model handle get their
own outputs, a model file can be pinned by its SHA-256, units can be required and level
orders are checked, and no message or name comes back truncated. Python -> f90wrap ->
Fortran -> C ABI -> libtorch, the path a host model uses; the Fortran test programs run
under ctest."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from test_fortran_bindings import ModelFile, assert_matches, fails, physical_inputs, torch_forward

from paramlib import paths
from paramlib.export import load_metadata
from paramlib.fortran.bridge import BridgeError, FortranModel, Status

pytestmark = pytest.mark.usefixtures("bindings")

CTEST_TIMEOUT_S = 600
NOT_THE_HASH = "0" * 64


def run_ctest(pattern: str) -> str:
    """Runs the bridge's ctest cases matching pattern (with the model fixture); their output."""
    build = paths.build_dir()
    command = ["ctest", "--test-dir", str(build), "--output-on-failure", "-R", pattern]
    result = subprocess.run(command, capture_output=True, text=True, timeout=CTEST_TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"ctest -R {pattern} failed:\n{output}"
    assert "No tests were found" not in output, output
    return output


@pytest.mark.usefixtures("bridge_library")
def test_openmp_threads_sharing_one_handle_get_their_own_outputs() -> None:
    """4 OpenMP threads, one handle, no critical section: every tile bitwise equal to its
    serial result (fortran_bridge/tests/test_threads.f90, built with -fcheck=all)."""
    output = run_ctest("^bridge_test_threads$")
    assert "1 tests failed" not in output and "100% tests passed" in output


def test_python_threads_sharing_one_model_get_their_own_outputs(
    example_model_file: ModelFile,
) -> None:
    """Each thread a different column count and inputs: a forward or output of another
    thread's call shows as a wrong shape or wrong values."""
    path = example_model_file("named")
    nthreads, calls = 4, 40
    failures: list[str] = []
    with FortranModel(path) as model:
        cases = [physical_inputs(model, seed=k, ncol=3 + k) for k in range(nthreads)]
        expected = [torch_forward(path, inputs)[0].numpy() for inputs in cases]
        barrier = threading.Barrier(nthreads)

        def hammer(k: int) -> None:
            barrier.wait()
            try:
                for _ in range(calls):
                    for name, values in cases[k].items():
                        model.set_input(name, values)
                    model.forward()
                    heating = model.get_output("heating")
                    if heating.shape != expected[k].shape or not np.allclose(
                        heating, expected[k], rtol=1e-5, atol=0.0
                    ):
                        failures.append(f"thread {k}: got another call's heating")
                        return
            except BridgeError as error:
                failures.append(f"thread {k}: {error}")

        threads = [threading.Thread(target=hammer, args=(k,)) for k in range(nthreads)]
        switch = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # threads switch between any two bridge calls
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            sys.setswitchinterval(switch)
    assert not failures, failures


@pytest.mark.parametrize("size", [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000, 1 << 20])
def test_sha256_of_the_file_matches_hashlib(tmp_path: Path, size: int) -> None:
    """The bridge's own SHA-256 against hashlib on every padding case (a block's last 8
    bytes hold the length): the refusal names the actual hash of the bytes."""
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    path = tmp_path / "bytes.bin"
    path.write_bytes(data)
    with fails(Status.ERR_HASH, str(path), hashlib.sha256(data).hexdigest(), NOT_THE_HASH):
        FortranModel(path, sha256=NOT_THE_HASH)


def test_sha256_known_vectors(tmp_path: Path) -> None:
    """FIPS 180-4 examples (NIST CSRC): "abc" and the two-block 448-bit message."""
    vectors = {
        b"abc": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq": (
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        ),
    }
    path = tmp_path / "vector.bin"
    for message, digest in vectors.items():
        path.write_bytes(message)
        with fails(Status.ERR_HASH, digest):
            FortranModel(path, sha256=NOT_THE_HASH)


def test_pinned_model_loads_and_runs_only_with_its_hash(
    example_model_file: ModelFile, tmp_path: Path
) -> None:
    path = example_model_file("named")
    pin = hashlib.sha256(path.read_bytes()).hexdigest()
    for accepted in (pin, pin.upper(), ""):
        with FortranModel(path, sha256=accepted) as model:
            inputs = physical_inputs(model, seed=3)
            for name, values in inputs.items():
                model.set_input(name, values)
            model.forward()
            assert_matches(model.get_output("heating"), torch_forward(path, inputs)[0])

    altered = tmp_path / "altered.pt"
    raw = bytearray(path.read_bytes())
    raw[-30] ^= 0x01  # one bit in the zip's directory: the model may still load unpinned
    altered.write_bytes(bytes(raw))
    with fails(Status.ERR_HASH, str(altered), f"expected {pin}"):
        FortranModel(altered, sha256=pin)
    for malformed in ("abc", pin[:-1], pin[:-1] + "g", " " + pin):
        with fails(Status.ERR_ARGUMENT, "64 hexadecimal"):
            FortranModel(path, sha256=malformed)


def test_required_units(example_model_file: ModelFile) -> None:
    path = example_model_file("named")
    with FortranModel(path) as model:
        inputs = physical_inputs(model, seed=4)
        model.check_field("T", 8)  # off by default
        model.require_units(True)
        with fails(Status.ERR_UNITS, "'T'", "'K'", "require"):
            model.check_field("T", 8)
        with fails(Status.ERR_UNITS, "'q'", "'kg kg-1'"):
            model.set_input("q", inputs["q"], units="  ")
        units = {f.name: f.units for f in model.inputs}
        for name, values in inputs.items():
            model.set_input(name, values, units=units[name])
        model.forward()
        with fails(Status.ERR_UNITS, "'heating'", "'K s-1'"):
            model.get_output("heating")
        heating = model.get_output("heating", units="K s-1")
        assert_matches(heating, torch_forward(path, inputs)[0])
        model.require_units(False)
        model.check_field("T", 8)


def test_level_order_is_checked(example_model_file: ModelFile) -> None:
    path = example_model_file("named")
    assert load_metadata(path)["inputs"][0]["level_order"] == "surface_to_top"
    with FortranModel(path) as model:
        model.check_field("T", 8, units="K", level_order="surface_to_top")
        with fails(Status.ERR_LEVELS, "'T'", "top_to_surface", "surface_to_top"):
            model.check_field("T", 8, level_order="top_to_surface")
        with fails(Status.ERR_ARGUMENT, "'heating'", "'upside_down'"):
            model.check_field("heating", 8, output=True, level_order="upside_down")


def metadata_file(tmp_path: Path, source: Path, edit: str, value: object) -> Path:
    """source's module with its paramlib.json changed: inputs[0][edit] = value."""
    meta = load_metadata(source)
    meta["inputs"][0][edit] = value
    path = tmp_path / f"{edit}.pt"
    files = {"paramlib.json": json.dumps(meta)}
    torch.jit.save(torch.jit.load(str(source)), str(path), _extra_files=files)
    return path


def test_load_refuses_unknown_level_order_and_overlong_names(
    example_model_file: ModelFile, tmp_path: Path
) -> None:
    source = example_model_file("named")
    bad_order = metadata_file(tmp_path, source, "level_order", "sideways")
    with fails(Status.ERR_METADATA, str(bad_order), "inputs[0]", "sideways"):
        FortranModel(bad_order)
    long_units = metadata_file(tmp_path, source, "units", "K" * 256)
    with fails(Status.ERR_METADATA, "inputs[0]", "at most 255"):
        FortranModel(long_units)
    # 255 characters fit the Fortran API's buffers: the whole name comes back.
    long_name = metadata_file(tmp_path, source, "name", "T" * 255)
    with FortranModel(long_name) as model:
        assert model.inputs[0].name == "T" * 255


def test_long_messages_come_back_whole(tmp_path: Path) -> None:
    """Messages longer than the bindings' 2048-character string buffer (a long path)."""
    deep = tmp_path / ("d" * 200)
    for _ in range(12):
        deep = deep / ("d" * 200)
    missing = deep / "model.pt"
    assert len(str(missing)) > 2048
    with fails(Status.ERR_FILE, f"'{missing}'", "missing or unreadable"):
        FortranModel(missing)


def resident_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_a_finished_threads_call_state_is_freed(example_model_file: ModelFile) -> None:
    """A host starting a new thread per step (no pool) must not grow memory: each thread's
    inputs and outputs (here ~5 MiB: float64 inputs are staged as float32) go with it."""
    path = example_model_file("named")
    with FortranModel(path) as model:
        inputs = {
            name: values.astype(np.float64)
            for name, values in physical_inputs(model, seed=5, ncol=40_000).items()
        }

        def one_call() -> None:
            for name, values in inputs.items():
                model.set_input(name, values)
            model.forward()
            model.get_output("heating")

        def in_new_threads(n: int) -> None:
            for _ in range(n):
                thread = threading.Thread(target=one_call)
                thread.start()
                thread.join()

        in_new_threads(5)  # allocator and libtorch warm-up
        before = resident_mib()
        in_new_threads(60)
        grown = resident_mib() - before
    assert grown < 60, f"resident memory grew by {grown:.0f} MiB over 60 finished threads"


def test_a_forward_sees_only_its_own_threads_inputs(example_model_file: ModelFile) -> None:
    """Inputs set on one thread are not another thread's: its forward is refused, never run
    on them (the sequence set_input -> forward -> get_output belongs to one thread)."""
    path = example_model_file("named")
    errors: list[BridgeError] = []
    with FortranModel(path) as model:
        for name, values in physical_inputs(model, seed=8).items():
            model.set_input(name, values)

        def forward_elsewhere() -> None:
            try:
                model.forward()
            except BridgeError as error:
                errors.append(error)

        thread = threading.Thread(target=forward_elsewhere)
        thread.start()
        thread.join()
        assert model.forward() == 0  # the setting thread's call is intact
    assert len(errors) == 1 and errors[0].status == Status.ERR_NOT_READY
    assert "per calling thread" in errors[0].message


def test_valid_range_through_the_c_abi(bridge_library: Path, example_model_file: ModelFile) -> None:
    """pl_model_valid_range: the level count is queried first, the range is the metadata's,
    and too short a buffer is refused whole (never a part of the range)."""
    lib = ctypes.CDLL(str(bridge_library))
    lib.pl_last_error.restype = ctypes.c_char_p
    path = example_model_file("named")
    handle = ctypes.c_int64()
    assert lib.pl_model_load(str(path).encode(), 0, 0, ctypes.byref(handle)) == Status.OK
    try:
        nlev = ctypes.c_int()
        query = lib.pl_model_valid_range(handle, b"T", None, None, 0, ctypes.byref(nlev))
        assert query == Status.OK and nlev.value == 8
        lo, hi = (ctypes.c_double * 8)(), (ctypes.c_double * 8)()
        assert lib.pl_model_valid_range(handle, b"T", lo, hi, 7, None) == Status.ERR_ARGUMENT
        assert b"buffers of 7 values, the input has 8 levels" in lib.pl_last_error()
        assert list(lo) == [0.0] * 8 and list(hi) == [0.0] * 8
        assert lib.pl_model_valid_range(handle, b"T", lo, hi, 8, None) == Status.OK
        bounds = load_metadata(path)["valid_range"]["T"]
        assert list(lo) == bounds["min"] and list(hi) == bounds["max"]
    finally:
        lib.pl_model_free(handle)

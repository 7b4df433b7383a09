"""Issue 12, training side: a NaN loss stops a run at once; one run per run directory; model
files read without running them and pinned by SHA-256; config names that stay in runs/; a
clear line for bad --out paths and truncated checkpoints; metadata checked against the
module's input order; a sensible default thread count."""

import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
import zarr
from train_stores import feature_store, run_config, write_config

from paramlib import cli, doctor
from paramlib.catalog import CatalogError, load_catalog, model_file
from paramlib.evaluate.sources import load_model
from paramlib.export import (
    ExportError,
    file_sha256,
    load_metadata,
    save,
    verify_sha256,
)
from paramlib.guards import LOCK_NAME, FolderLock
from paramlib.models import FieldLayout, Normaliser, store_fields, store_normalisation
from paramlib.models.export_wrap import export_module
from paramlib.models.rpn import RPN
from paramlib.train import NONFINITE_EXIT, checkpoint
from paramlib.train.config import ConfigError, load_config
from paramlib.train.loop import METRICS_FILE, MODEL_FILE
from paramlib.train.tasks import task_from_stores

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reliability_stores")
    return {
        "hf": feature_store(root / "hf.zarr", "hf"),
        "lf": feature_store(root / "lf.zarr", "lf", seed=1),
    }


@pytest.fixture(scope="module")
def finished_run(stores: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reliability_run")
    config = write_config(root / "rpn.yaml", run_config("rpn", stores, steps=6))
    assert cli.main(["train", str(config), "--out", str(root / "run")]) == 0
    return root / "run"


def paramlib(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paramlib", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        check=False,
    )


def one_clean_line(stderr: str, *expected: str) -> None:
    """The user's mistake in one line, no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if not line.startswith("[paramlib")]
    assert len(lines) == 1, stderr
    for text in expected:
        assert text in lines[0], stderr


# --- A: a non-finite loss stops the run at once --------------------------------------------


def test_nan_loss_stops_at_once_naming_step_and_store_samples(
    tmp_path: Path, stores: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "hf.zarr"
    shutil.copytree(stores["hf"], store)
    settings = {"steps": 20, "checkpoint_every": 100}
    config_file = write_config(
        tmp_path / "c.yaml", run_config("rpn", {**stores, "hf": store}, **settings)
    )
    out = tmp_path / "run"
    assert cli.main(["train", str(config_file), "--out", str(out), "--max-steps", "4"]) == 0
    good = checkpoint.load(out)
    # One NaN in a sample of step 5's batch (the fingerprint stays: the resume is allowed).
    task = task_from_stores(load_config(config_file))
    task.prepare(torch.device("cpu"), 0, task.members, 0, 1)
    sample = int(task.batch_index(4)["train"][0, 0])
    zarr.open_group(str(store), mode="a")["train"]["t"][sample, 2] = float("nan")
    capsys.readouterr()
    status = cli.main(["train", str(config_file), "--out", str(out), "--resume"])
    err = capsys.readouterr().err
    assert status == NONFINITE_EXIT
    one_clean_line(
        err, "step 5:", "loss nan", f"its batch has non-finite values in data.store {store}"
    )
    assert f"group 'train' samples [{sample}]" in err
    assert "checkpoint" in err and "kept" in err
    kept = checkpoint.load(out)  # the last good state, not NaN weights
    assert kept["step"] == 4
    for key, value in good["model"].items():
        assert torch.equal(kept["model"][key], value), key
    assert not (out / MODEL_FILE).exists()


# --- B: one training per run directory -------------------------------------------------------


def test_second_training_into_a_locked_run_directory_is_refused(
    tmp_path: Path, stores: dict[str, Path]
) -> None:
    settings = {"steps": 1_000_000, "checkpoint_every": 1_000_000, "log_every": 1}
    config_file = write_config(tmp_path / "long.yaml", run_config("rpn", stores, **settings))
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "paramlib", "train", str(config_file), "--out", str(out)],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / METRICS_FILE).is_file():
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, "training did not start within 60 s"
            time.sleep(0.05)
        second = paramlib("train", str(config_file), "--out", str(out), "train.seed=1")
        assert second.returncode == 2
        one_clean_line(second.stderr, f"run directory {out} is in use", f"pid {first.pid}")
        assert first.poll() is None  # the first run goes on
        first.kill()  # a killed holder leaves its lock file behind, but no lock
        first.wait(timeout=30)
    finally:
        first.kill()
    assert (out / LOCK_NAME).is_file()
    again = paramlib("train", str(config_file), "--out", str(out), "--resume", "train.steps=3")
    assert again.returncode == 0, again.stderr


def test_ranks_of_a_refused_distributed_run_stop_together(
    tmp_path: Path, stores: dict[str, Path]
) -> None:
    config_file = write_config(tmp_path / "rpn.yaml", run_config("rpn", stores, steps=4))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node=2", "-m", "paramlib", "train", str(config_file)]
    command += ["--out", str(out)]

    def torchrun() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=180, env=ENV, check=False
        )

    with FolderLock(out, "run directory"):  # this test process holds it
        refused = torchrun()
    assert refused.returncode != 0
    assert f"is in use by another paramlib process (pid {os.getpid()}" in refused.stderr
    assert not (out / checkpoint.CHECKPOINT_FILE).exists()
    done = torchrun()  # only rank 0 takes the lock: two ranks do not refuse each other
    assert done.returncode == 0, done.stderr[-3000:]
    assert checkpoint.load(out)["step"] == 4


# --- C: model files read without running them, pinned by SHA-256 ------------------------------


def test_metadata_is_read_from_the_archive_without_loading_the_module(
    finished_run: Path, tmp_path: Path
) -> None:
    model = finished_run / MODEL_FILE
    crafted = tmp_path / "crafted.pt"
    with zipfile.ZipFile(model) as source, zipfile.ZipFile(crafted, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith(".py"):
                data = b"this is not TorchScript and would fail to load\n"
            target.writestr(item, data)
    with pytest.raises(RuntimeError):
        torch.jit.load(str(crafted))
    assert load_metadata(crafted) == load_metadata(model)


def test_export_prints_and_records_the_sha256(finished_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "m.pt"  # a folder export creates
    done = paramlib("export", str(finished_run), "--out", str(out), "--output", "mean")
    assert done.returncode == 0, done.stderr
    digest = file_sha256(out)
    assert f"sha256 {digest}" in done.stdout
    assert (tmp_path / "sub" / "m.pt.sha256").read_text() == f"{digest}  m.pt\n"
    assert (finished_run / "model.pt.sha256").read_text().split()[0] == file_sha256(
        finished_run / MODEL_FILE
    )
    assert verify_sha256(out, digest.upper(), "test") == out
    with pytest.raises(ExportError, match=f"has SHA-256 {digest}, but the pin pins 0+"):
        verify_sha256(out, "0" * 64, "the pin")


def test_catalog_model_entries_are_checked_against_their_sha256(
    finished_run: Path, tmp_path: Path
) -> None:
    model = finished_run / MODEL_FILE
    digest = file_sha256(model)
    catalog = tmp_path / "catalog"
    catalog.mkdir()
    (catalog / "models.yaml").write_text(
        "entries: {}\n"
        "models:\n"
        f"  pinned: {{description: d, path: {model}, sha256: '{digest}'}}\n"
        f"  unpinned: {{description: d, path: {model}}}\n"
        f"  tampered: {{description: d, path: {model}, sha256: '{'0' * 64}'}}\n"
    )
    assert model_file("pinned", catalog) == model
    assert model_file("unpinned", catalog) == model
    with pytest.raises(ExportError, match="catalog model 'tampered'.* pins 0+"):
        model_file("tampered", catalog)
    (catalog / "models.yaml").write_text(
        f"models:\n  bad: {{description: d, path: {model}, sha256: abc}}\n"
    )
    with pytest.raises(CatalogError, match="model 'bad': key 'sha256': expected 64 hex"):
        load_catalog(catalog, check_paths=False)


# --- D: config names stay one path component -------------------------------------------------


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", ""])
def test_config_names_that_escape_runs_are_refused(
    tmp_path: Path, stores: dict[str, Path], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = write_config(tmp_path / "c.yaml", {**run_config("rpn", stores), "name": name})
    with pytest.raises(ConfigError, match=r"c.yaml: name .* is not a usable name"):
        load_config(config_file)
    os.chdir(tmp_path)
    assert cli.main(["train", str(config_file)]) == 2
    one_clean_line(capsys.readouterr().err, "not a usable name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


# --- E: bad paths and truncated checkpoints: one line, exit != 0 -----------------------------


def test_bad_out_paths_are_refused_before_training(
    tmp_path: Path, stores: dict[str, Path], finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = write_config(tmp_path / "c.yaml", run_config("rpn", stores))
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    cases = [
        (["train", str(config_file), "--out", str(a_file)], "exists and is not a folder"),
        (["train", str(config_file), "--out", str(a_file / "run")], "is a file, so"),
        (["export", str(finished_run), "--out", str(tmp_path)], "is a folder; expected a file"),
        (["export", str(finished_run), "--out", str(a_file / "m.pt")], "is a file, so"),
    ]
    for argv, expected in cases:
        assert cli.main(argv) == 2
        one_clean_line(capsys.readouterr().err, "--out", expected)
    assert a_file.read_text() == "mine"


def test_truncated_checkpoint_is_named_in_resume_and_export(
    tmp_path: Path, stores: dict[str, Path], finished_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    config_file = write_config(tmp_path / "c.yaml", run_config("rpn", stores, steps=6))
    saved = (run / checkpoint.CHECKPOINT_FILE).read_bytes()
    (run / checkpoint.CHECKPOINT_FILE).write_bytes(saved[: len(saved) // 2])
    expected = f"checkpoint {run / checkpoint.CHECKPOINT_FILE} is truncated or not a paramlib"
    assert cli.main(["train", str(config_file), "--out", str(run), "--resume"]) == 2
    one_clean_line(capsys.readouterr().err, expected)
    assert cli.main(["export", str(run), "--out", str(tmp_path / "m.pt")]) == 2
    one_clean_line(capsys.readouterr().err, expected)
    assert not (tmp_path / "m.pt").exists()


def test_evaluate_takes_a_valid_checkpoint(finished_run: Path) -> None:
    model = load_model(finished_run / checkpoint.CHECKPOINT_FILE)
    assert (model.label, model.members) == ("run", 3)  # exported with its members
    assert load_model(finished_run / MODEL_FILE).members == 1


# --- F: metadata checked against the module's own input order --------------------------------


def test_export_refuses_metadata_whose_inputs_are_swapped(stores: dict[str, Path]) -> None:
    root = zarr.open_group(str(stores["hf"]), mode="r")
    inputs = store_fields(root, ["t", "q", "ps"], {}, "train")
    outputs = store_fields(root, ["heating"], {}, "train")
    stats = store_normalisation(root)
    in_norm, out_norm = Normaliser.from_stats(inputs, stats), Normaliser.from_stats(outputs, stats)
    fields = {n: root["train"][n][:] for n in ("t", "q", "ps")}
    x = inputs.flatten(fields)
    valid_range = inputs.value_range(x)
    net = RPN.create(inputs.size, outputs.size, [4], 2, seed=0)
    module, metadata = export_module(
        net, inputs, outputs, in_norm, out_norm, output="mean", valid_range=valid_range
    )
    save(module, stores["hf"].parent / "ok.pt", metadata)  # the module's own order passes
    t, q, ps = inputs.fields
    swapped = FieldLayout((q, t, ps))
    module, metadata = export_module(
        net, swapped, outputs, in_norm, out_norm, output="mean", valid_range=valid_range
    )
    path = stores["hf"].parent / "swapped.pt"
    with pytest.raises(ExportError, match=r"input order differs .* of q \(its place holds t\), t"):
        save(module, path, metadata)
    assert not path.exists()


def test_export_command_refuses_a_checkpoint_whose_input_order_is_wrong(
    finished_run: Path, tmp_path: Path
) -> None:
    state = checkpoint.load(finished_run)
    names = [field["name"] for field in state["spec"]["inputs"]]
    assert names == ["t", "q", "ps"]
    state["spec"]["inputs"] = [state["spec"]["inputs"][i] for i in (1, 0, 2)]
    checkpoint.save_atomic(state, tmp_path / checkpoint.CHECKPOINT_FILE)
    done = paramlib("export", str(tmp_path), "--out", str(tmp_path / "m.pt"))
    assert done.returncode == 2
    one_clean_line(done.stderr, "input order differs from the module's", "q", "t")
    assert not (tmp_path / "m.pt").exists()


# --- G: torch threads ----------------------------------------------------------------------------


def test_default_threads_follow_doctor_and_the_config_overrides_them(
    tmp_path: Path,
    stores: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads, why = doctor.training_threads()
    assert 1 <= threads <= len(os.sched_getaffinity(0))
    assert doctor.training_threads(processes=10_000)[0] == 1  # never 0
    assert f"{threads} by default" in doctor.check_threads().detail
    config_file = write_config(tmp_path / "c.yaml", run_config("rpn", stores, steps=2))
    previous = torch.get_num_threads()
    try:
        base = ["train", str(config_file), "--out"]
        assert cli.main([*base, str(tmp_path / "a"), "train.threads=null"]) == 0
        err = capsys.readouterr().err
        assert f"[paramlib train] {torch.get_num_threads()} torch thread(s) per process" in err
        assert "(default: " in err and "physical core(s)" in err
        assert cli.main([*base, str(tmp_path / "b"), "train.threads=1"]) == 0
        assert "1 torch thread(s) per process (train.threads)" in capsys.readouterr().err
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # a batch script's choice
        assert cli.main([*base, str(tmp_path / "c"), "train.threads=null"]) == 0
        assert "2 torch thread(s) per process (OMP_NUM_THREADS" in capsys.readouterr().err
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)

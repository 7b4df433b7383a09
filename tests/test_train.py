"""The trainer: config validation and overrides, exact resume, preemption, calibration."""

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
import zarr
from train_stores import bilstm_store, feature_store, run_config, write_config

from paramlib import cli
from paramlib.export import load_metadata
from paramlib.models import bilstm
from paramlib.models.export_wrap import OUTPUT_MODES
from paramlib.models.mlp import PAPER_HIDDEN
from paramlib.train import REQUEUE_EXIT, checkpoint, kinds
from paramlib.train.calibrate import calibrate, coverage
from paramlib.train.config import ConfigError, config_from_dict, load_config
from paramlib.train.data import DataError
from paramlib.train.distributed import Placement
from paramlib.train.loop import METRICS_FILE, MODEL_FILE, RunDirError, train
from paramlib.train.tasks import Task

KINDS = ("mlp", "rpn", "mfrpn", "mfrpn_bm", "bilstm")


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train_stores")
    return {
        "hf": feature_store(root / "hf.zarr", "hf"),
        "lf": feature_store(root / "lf.zarr", "lf", seed=1),
        "bilstm": bilstm_store(root / "bilstm.zarr"),
    }


def config_of(tmp_path: Path, stores: dict[str, Path], kind: str, *overrides: str, **train: Any):
    path = write_config(tmp_path / f"{kind}.yaml", run_config(kind, stores, **train))
    return load_config(path, overrides)


def run(config, out: Path, **options: Any) -> int:
    return train(config, out, placement=Placement(), **options)


def metric_rows(out: Path) -> list[dict[str, str]]:
    with (out / METRICS_FILE).open() as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def assert_same_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for index, moments in a["optimizer"]["state"].items():
        for key, value in moments.items():
            assert torch.equal(value, b["optimizer"]["state"][index][key]), (index, key)
    assert a["scheduler"] == b["scheduler"]


# --- configs ----------------------------------------------------------------------------------


def test_config_errors_name_the_source_and_key(tmp_path: Path, stores: dict[str, Path]) -> None:
    base = run_config("rpn", stores)
    cases = [
        ({"model": {**base["model"], "widths": [4]}}, "model.widths: unknown key"),
        ({"model": {**base["model"], "members": "four"}}, "model.members: expected integer"),
        ({"model": {**base["model"], "kind": "cnn"}}, "model.kind: expected one of"),
        ({"model": {**base["model"], "lstm_hidden": 4}}, "model.lstm_hidden: not read by kind"),
        ({"train": {**base["train"], "lr": -1.0}}, "train.lr: expected a number > 0"),
        ({"data": {"inputs": ["t"]}}, "data.store: required"),
        ({"optimiser": {}}, "optimiser: unknown key"),
    ]
    for change, message in cases:
        path = write_config(tmp_path / "bad.yaml", {**base, **change})
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert str(path) in str(info.value) and message in str(info.value)
    good = write_config(tmp_path / "good.yaml", base)
    with pytest.raises(ConfigError, match=r"override 'train\.stpes=3': train\.stpes: unknown key"):
        load_config(good, ["train.stpes=3"])
    with pytest.raises(ConfigError, match="train.steps: expected integer, got 2.5"):
        load_config(good, ["train.steps=2.5"])
    with pytest.raises(ConfigError, match="no variant 'large'"):
        load_config(good, variant="large")
    with pytest.raises(ConfigError, match="data.lf_store: required"):
        load_config(good, ["data.normalisation=lf"])
    with pytest.raises(ConfigError, match="export.output: mean_spread needs an ensemble"):
        load_config(good, ["model.members=1", "export.output=mean_spread"])
    bilstm = write_config(tmp_path / "b.yaml", run_config("bilstm", stores))
    with pytest.raises(ConfigError, match="export.output: kind 'bilstm' exports mean$"):
        load_config(bilstm, ["export.output=members"])
    with pytest.raises(ConfigError, match="train.precision: kind 'rpn' implements float32$"):
        load_config(good, ["train.precision=bfloat16"])
    with pytest.raises(ConfigError, match="model.representation: expected one of physical"):
        load_config(bilstm, ["model.representation=warm"])
    with pytest.raises(ConfigError, match="model.target_scaling: not read by kind 'rpn'"):
        load_config(good, ["model.target_scaling=field"])
    with pytest.raises(
        ConfigError,
        match="model.widht: unknown key; kind 'rpn' has kind, representation, scaling, hidden",
    ):
        load_config(good, ["model.widht=3"])


def test_bilstm_features_and_bfloat16_forward_train_and_export(
    tmp_path: Path, stores: dict[str, Path]
) -> None:
    options = ["model.scaling=field", "model.drop_inputs=[hfx]", "train.precision=bfloat16"]
    config = config_of(tmp_path, stores, "bilstm", *options)
    assert run(config, tmp_path / "run") == 0
    saved = checkpoint.load(tmp_path / "run" / checkpoint.CHECKPOINT_FILE)
    features = saved["spec"]["bilstm"]
    assert features["scaling"] == "field" and features["drop_inputs"] == ["hfx"]
    losses = [float(row["loss"]) for row in metric_rows(tmp_path / "run") if row["loss"]]
    assert losses and all(np.isfinite(losses))
    model = torch.jit.load(str(tmp_path / "run" / MODEL_FILE))
    assert model.emulator.lstm.input_size == 6 - 1 + 3  # 6 inputs, hfx not a feature; 3 derived


def test_overrides_are_typed_by_the_field_and_follow_the_variant(
    tmp_path: Path, stores: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = run_config("rpn", stores)
    data["variants"] = {"small": {"model.hidden": [4], "train.steps": 5, "train.lr": 1}}
    data["data"]["store"] = "${TINY_STORES:-nowhere}/hf.zarr"
    path = write_config(tmp_path / "c.yaml", data)
    monkeypatch.setenv("TINY_STORES", str(stores["hf"].parent))
    config = load_config(path, ["train.steps=7", "train.progress=true"], variant="small")
    assert config.model.hidden == [4]  # from the variant
    assert config.train.steps == 7  # the command line wins over the variant
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.train.progress is True
    assert config.data.store == str(stores["hf"])
    assert load_config(path, ["train.threads=null"]).train.threads is None
    # The resolved record reads back to the same config.
    assert config_from_dict(config.to_dict()) == config
    monkeypatch.delenv("TINY_STORES")
    assert load_config(path).data.store == str(Path("nowhere/hf.zarr").absolute())


def test_every_registered_kind_has_its_options_task_and_rules() -> None:
    """The registry is the one list of kinds: each module defines the kind it is registered
    under, and a config names a kind's own keys only."""
    assert kinds.names() == ("mlp", "rpn", "mfrpn", "bilstm")
    for name in kinds.names():
        kind = kinds.get(name)
        assert kind.name == name and issubclass(kind.task, Task)
        assert kind.keys()[0] == "kind" and set(kind.outputs) <= set(OUTPUT_MODES)
    assert kinds.get("mfrpn").options().hidden == list(PAPER_HIDDEN)
    assert set(kinds.get("mfrpn").keys()) >= {"composition", "members", "alpha"}
    assert kinds.exported(bilstm.MODEL_KIND) is kinds.get("bilstm")
    assert kinds.exported("persistence") is None
    assert kinds.readers_of("members") == ["rpn", "mfrpn"]
    with pytest.raises(kinds.UnknownKind, match="expected one of mlp, rpn, mfrpn, bilstm"):
        kinds.get("cnn")


def test_a_new_kind_is_one_module_and_one_registry_line(
    tmp_path: Path, stores: dict[str, Path], monkeypatch: pytest.MonkeyPatch, repo_root: Path
) -> None:
    """The example module of docs/training-on-hpc.md ("Adding a model kind"), as written there,
    registered by one line, trains and exports from a config naming it."""
    guide = (repo_root / "docs" / "training-on-hpc.md").read_text()
    section = guide[guide.index("## Adding a model kind") :]
    code = section.split("```python\n")[1].split("```")[0]
    (tmp_path / "wide_mlp.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(kinds.MODULES, "wide_mlp", "wide_mlp")
    raw = run_config("mlp", stores)
    raw["model"] = {"kind": "wide_mlp", "width": 16}
    config = load_config(write_config(tmp_path / "wide.yaml", raw))
    assert type(config.model).__name__ == "WideOptions" and config.model.width == 16
    with pytest.raises(ConfigError, match="model.hidden: not read by kind 'wide_mlp'"):
        load_config(tmp_path / "wide.yaml", ["model.hidden=[4]"])
    assert run(config, tmp_path / "run") == 0
    assert load_metadata(tmp_path / "run" / MODEL_FILE)["model_kind"] == "wide_mlp"


def test_the_command_line_does_not_import_a_kind_module() -> None:
    code = (
        "import sys, paramlib.cli; paramlib.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m.startswith(('torch', 'paramlib.train.kinds.'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_shipped_configs_load_with_their_small_variant(repo_root: Path) -> None:
    paths = sorted((repo_root / "training" / "configs").glob("*.yaml"))
    assert len(paths) == 10
    for path in paths:
        full, small = load_config(path), load_config(path, variant="small")
        assert small.train.steps < full.train.steps and small.train.threads == 1
        if full.model.kind != "bilstm":
            assert full.model.hidden == [512] * 7 and full.train.batch_size == 2048
            assert (full.train.lr, full.train.lr_decay, full.train.lr_decay_every) == (
                1e-4,
                0.99,
                1000,
            )
        if full.ensemble:
            assert full.model.members == 32 and small.model.members <= 8


def test_store_larger_than_the_memory_budget_is_refused(
    tmp_path: Path, stores: dict[str, Path]
) -> None:
    config = config_of(tmp_path, stores, "rpn", "data.memory_gb=1e-9", "data.loader=memory")
    with pytest.raises(DataError, match=r"data.memory_gb: .* over the budget 1e-09 GiB"):
        run(config, tmp_path / "run")
    with pytest.raises(DataError, match=r"train.batch_size: expected 1 .. 128 .*got 200"):
        run(config_of(tmp_path, stores, "rpn", "train.batch_size=200"), tmp_path / "big_batch")
    with pytest.raises(DataError, match="data.store: no training store"):
        run(config_of(tmp_path, stores, "rpn", f"data.store={tmp_path}/none.zarr"), tmp_path / "r")


def test_command_line_takes_overrides_around_its_options(
    tmp_path: Path, stores: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path / "c.yaml", run_config("rpn", stores))
    out = tmp_path / "run"
    argv = ["train", str(path), "--out", str(out), "train.steps=4", "--max-steps", "2"]
    assert cli.main([*argv, "model.members=2"]) == 0
    assert checkpoint.load(out)["step"] == 2
    assert checkpoint.load(out)["model"]["trainable.layers.0.weight"].shape[0] == 2
    assert cli.main(["train", str(path), "model.members=x", "--out", str(out)]) == 2
    assert "model.members: expected integer, got 'x'" in capsys.readouterr().err


# --- training and resume ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(
    tmp_path: Path, stores: dict[str, Path], kind: str
) -> None:
    config = config_of(tmp_path, stores, kind)
    assert run(config, tmp_path / "whole") == 0
    assert run(config, tmp_path / "parts", max_steps=10) == 0
    assert checkpoint.load(tmp_path / "parts")["step"] == 10
    assert not (tmp_path / "parts" / MODEL_FILE).exists()  # not finished yet
    assert run(config, tmp_path / "parts", resume=True) == 0
    whole, parts = checkpoint.load(tmp_path / "whole"), checkpoint.load(tmp_path / "parts")
    assert_same_state(whole, parts)
    assert metric_rows(tmp_path / "whole") == metric_rows(tmp_path / "parts")
    rows = metric_rows(tmp_path / "whole")
    assert [int(r["step"]) for r in rows] == [3, 5, 6, 9, 10, 12, 15, 18, 20]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert float(rows[-1]["lr"]) == pytest.approx(1e-3 * 0.9**4)  # the lr of step 20
    assert (tmp_path / "parts" / MODEL_FILE).is_file()


def test_run_directory_rules(tmp_path: Path, stores: dict[str, Path]) -> None:
    config = config_of(tmp_path, stores, "rpn", "train.steps=6")
    out = tmp_path / "run"
    assert run(config, out, resume=True) == 0  # --resume without a checkpoint starts afresh
    recorded = yaml.safe_load((out / "config.yaml").read_text())
    assert recorded["train"]["steps"] == 6 and "lstm_hidden" not in recorded["model"]
    with pytest.raises(RunDirError, match="pass --resume"):
        run(config, out)
    with pytest.raises(RunDirError, match=r"model.hidden: checkpoint has \[8, 8\]"):
        run(config_of(tmp_path, stores, "rpn", "model.hidden=[9]"), out, resume=True)
    (out / MODEL_FILE).unlink()
    assert run(config, out, resume=True) == 0  # finished: writes the model file again
    assert (out / MODEL_FILE).is_file()
    # A longer run continues the finished one.
    longer = config_of(tmp_path, stores, "rpn", "train.steps=9")
    assert run(longer, out, resume=True) == 0
    assert checkpoint.load(out)["step"] == 9


def test_a_finished_run_is_stale_once_its_store_is_rebuilt(
    tmp_path: Path, stores: dict[str, Path]
) -> None:
    copy = {**stores, "hf": tmp_path / "hf.zarr"}
    shutil.copytree(stores["hf"], copy["hf"])
    config = config_of(tmp_path, copy, "rpn", "train.steps=4")
    out = tmp_path / "run"
    assert run(config, out, resume=True) == 0
    assert run(config, out, resume=True) == 0  # finished and up to date
    zarr.open_group(str(copy["hf"]), mode="a").attrs["fingerprint"] = "rebuilt"
    with pytest.raises(RunDirError, match=r"store 'train' .*hf.zarr.* was rebuilt from other data"):
        run(config, out, resume=True)


def test_sigterm_checkpoints_exits_99_and_resumes_to_the_same_result(
    tmp_path: Path, stores: dict[str, Path]
) -> None:
    settings = {"steps": 1_000_000, "checkpoint_every": 1_000_000, "log_every": 1}
    path = write_config(tmp_path / "long.yaml", run_config("rpn", stores, **settings))
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "paramlib", "train", str(path), "--out", str(out)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / METRICS_FILE).is_file() or len(metric_rows(out)) < 5:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "training did not start within 60 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == REQUEUE_EXIT, stderr
    assert "SIGTERM" in stderr
    stopped = checkpoint.load(out)["step"]
    assert stopped >= 5
    # Continue a few steps (train.steps may change on resume), compare with a run that was
    # never interrupted.
    steps = [f"train.steps={stopped + 4}"]
    longer = load_config(path, steps)
    assert run(longer, out, resume=True) == 0
    assert run(load_config(path, steps), tmp_path / "whole") == 0
    assert_same_state(checkpoint.load(tmp_path / "whole"), checkpoint.load(out))


# --- calibration --------------------------------------------------------------------------------


def test_coverage_of_a_gaussian_ensemble_by_hand() -> None:
    generator = torch.Generator().manual_seed(0)
    members = torch.randn(400, 2000, 2, generator=generator)  # spread 1 around 0
    target = torch.stack([torch.zeros(2000), torch.full((2000,), 3.0)], dim=1)
    # Inside mean +- 1.65 x spread (400 members): the first always, the second never.
    assert coverage(members, target).tolist() == [1.0, 0.0]
    assert float(coverage(members, torch.randn(2000, 2, generator=generator)).mean()) == (
        pytest.approx(0.9, abs=0.02)
    )


def test_calibration_trains_each_prior_scale_and_picks_the_closest_to_90_percent(
    tmp_path: Path, stores: dict[str, Path]
) -> None:
    config = config_of(tmp_path, stores, "rpn", "train.steps=8")
    report = calibrate(config, tmp_path / "cal", prior_scales=[0.1, 3.0])
    results = report["results"]
    assert [r["prior_scale"] for r in results] == [0.1, 3.0]
    # A larger prior scale spreads the members further: coverage grows.
    assert results[0]["coverage"] < results[1]["coverage"]
    assert set(results[0]["per_field"]) == {"heating", "moistening", "precip"}
    assert report["chosen"] == min(results, key=lambda r: abs(r["coverage"] - 0.9))
    assert (tmp_path / "cal" / "calibration.json").is_file()
    with pytest.raises(ConfigError, match="needs an ensemble"):
        calibrate(config_of(tmp_path, stores, "mlp"), tmp_path / "c2", [1.0])

"""Streaming training (`paramlib.train.streaming`): the loader choice, every sample once per
epoch and rank, exact resume mid-epoch (--max-steps and SIGTERM), and a store three times
the memory budget trained with bounded memory."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_train import assert_same_state, metric_rows
from train_stores import bilstm_store, feature_store, run_config, write_config

from paramlib.models import BootstrapSampler
from paramlib.train import REQUEUE_EXIT, checkpoint
from paramlib.train.config import load_config
from paramlib.train.data import GIB, SplitReader, open_store
from paramlib.train.distributed import Placement
from paramlib.train.loop import METRICS_FILE, MODEL_FILE, train
from paramlib.train.streaming import bootstrap_weights
from paramlib.train.tasks import task_from_stores

KINDS = ("mlp", "rpn", "mfrpn", "mfrpn_bm", "bilstm")
CHUNK = 16  # 160 train samples: 10 store chunks
STREAMING = ("data.loader=streaming", "data.shuffle_chunks=3")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("chunked_stores")
    return {
        "hf": feature_store(root / "hf.zarr", "hf", chunk=CHUNK),
        "lf": feature_store(root / "lf.zarr", "lf", seed=1, chunk=CHUNK),
        "bilstm": bilstm_store(root / "bilstm.zarr", chunk=CHUNK),
    }


def config_of(tmp_path: Path, stores: dict[str, Path], kind: str, *overrides: str, **train: Any):
    path = write_config(tmp_path / f"{kind}.yaml", run_config(kind, stores, **train))
    return load_config(path, overrides)


def run(config, out: Path, **options: Any) -> int:
    return train(config, out, placement=Placement(), **options)


def epoch_rows(task, steps: range) -> list[int]:
    return [int(i) for step in steps for i in task.batch_index(step)["train"].flatten()]


# --- the order --------------------------------------------------------------------------------


@pytest.mark.parametrize("world", [1, 2])
def test_streaming_sees_every_sample_once_per_epoch_and_rank(
    tmp_path: Path, stores: dict[str, Path], world: int
) -> None:
    # 10 chunks of 16, global batch 16: every epoch has 10 steps, of 16 samples on one rank,
    # of 8 per rank on two (each rank streams its own 5 chunks; data-parallel single model).
    config = config_of(tmp_path, stores, "mlp", *STREAMING)
    seen: dict[int, list[list[int]]] = {}
    for rank in range(world):
        task = task_from_stores(config)
        assert task.spec["loader"] == "streaming"
        task.prepare(torch.device("cpu"), 0, 1, rank, world)
        steps = task.streams["train"].steps_per_epoch
        assert steps == 10
        try:
            seen[rank] = [epoch_rows(task, range(e * steps, (e + 1) * steps)) for e in range(3)]
        finally:
            task.close()
    for epoch in range(3):
        ranks = [seen[r][epoch] for r in range(world)]
        for rows in ranks:
            assert len(rows) == len(set(rows)) == 160 // world  # once per epoch and rank
        assert sorted(sum(ranks, [])) == list(range(160))  # the ranks share the split
    # Shuffled: not the store order, and another order each epoch (chunks and buffers).
    assert seen[0][0] != sorted(seen[0][0]) and seen[0][0] != seen[0][1]
    # The in-memory sampler of a single model: every sample once per epoch too.
    sampler = BootstrapSampler(160, 1, 1.0, seed=3)
    rows = torch.cat([sampler.batch(step, 16)[0] for step in range(10)])
    assert sorted(rows.tolist()) == list(range(160))


def test_a_step_asked_out_of_order_gives_the_same_batch(
    tmp_path: Path, stores: dict[str, Path]
) -> None:
    # What --resume relies on: the batch of a step is a function of the step alone.
    config = config_of(tmp_path, stores, "rpn", *STREAMING)
    task = task_from_stores(config)
    task.prepare(torch.device("cpu"), 0, task.members, 0, 1)
    try:
        in_order = [task.streams["train"].batch(step) for step in range(25)]
        for step in (13, 4, 24, 0):  # restarts the reading thread there
            again = task.streams["train"].batch(step)
            for a, b in zip(in_order[step], again, strict=True):
                assert torch.equal(a, b), step
    finally:
        task.close()


def test_bootstrap_weights_are_a_fixed_fraction_per_member() -> None:
    rows = torch.arange(20_000)
    weights = bootstrap_weights(7, range(3), rows, 0.8)
    assert weights.shape == (3, 20_000)
    assert ((weights == 0) | (weights == 1)).all()
    np.testing.assert_allclose(weights.mean(dim=1).numpy(), 0.8, atol=0.01)
    assert not torch.equal(weights[0], weights[1])  # members differ
    # A sample's membership depends on the sample, not on the batch it arrives in.
    part = bootstrap_weights(7, range(1, 3), rows[5000:5100].flip(0), 0.8)
    assert torch.equal(part, weights[1:, 5000:5100].flip(1))


# --- the loader choice -------------------------------------------------------------------------


def test_auto_streams_a_store_over_the_budget_and_says_why(
    tmp_path: Path, stores: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    need = SplitReader(open_store(stores["hf"]), "train", ["t", "q", "ps"]).row_bytes * 160
    assert need > 0
    small = config_of(tmp_path, stores, "mlp", "data.memory_gb=1e-6", steps=3)
    assert run(small, tmp_path / "streamed") == 0
    err = capsys.readouterr().err
    assert "data loader: streaming (data.loader=auto: train split(s)" in err
    assert "over the budget 1e-06 GiB (data.memory_gb)" in err
    assert checkpoint.load(tmp_path / "streamed")["spec"]["loader"] == "streaming"
    large = config_of(tmp_path, stores, "mlp", "data.memory_gb=1", steps=3)
    assert run(large, tmp_path / "memory") == 0
    assert "data loader: memory (data.loader=auto" in capsys.readouterr().err
    # The default budget (half the available memory) takes a tiny store into memory.
    assert task_from_stores(config_of(tmp_path, stores, "mlp")).spec["loader"] == "memory"
    # A resumed run keeps its checkpoint's loader, whatever the budget says now.
    longer = config_of(tmp_path, stores, "mlp", "data.memory_gb=1", steps=5)
    assert run(longer, tmp_path / "streamed", resume=True) == 0
    assert "data loader: streaming (the checkpoint's loader" in capsys.readouterr().err


# --- exact resume ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_streamed_run_interrupted_mid_epoch_resumes_bit_for_bit(
    tmp_path: Path, stores: dict[str, Path], kind: str
) -> None:
    # 10 steps per epoch, 3 chunks per shuffle buffer: step 7 is mid-epoch and mid-buffer.
    config = config_of(tmp_path, stores, kind, *STREAMING)
    assert run(config, tmp_path / "whole") == 0
    assert run(config, tmp_path / "parts", max_steps=7) == 0
    assert checkpoint.load(tmp_path / "parts")["step"] == 7
    assert run(config, tmp_path / "parts", resume=True) == 0
    whole, parts = checkpoint.load(tmp_path / "whole"), checkpoint.load(tmp_path / "parts")
    assert_same_state(whole, parts)
    assert metric_rows(tmp_path / "whole") == metric_rows(tmp_path / "parts")
    assert [int(r["step"]) for r in metric_rows(tmp_path / "whole")][-1] == 20
    assert (tmp_path / "parts" / MODEL_FILE).is_file()


def test_sigterm_mid_epoch_of_a_streamed_run_resumes_bit_for_bit(
    tmp_path: Path, stores: dict[str, Path]
) -> None:
    settings = {"steps": 1_000_000, "checkpoint_every": 1_000_000, "log_every": 1}
    path = write_config(tmp_path / "long.yaml", run_config("rpn", stores, **settings))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "paramlib", "train", str(path), "--out", str(out)]
    process = subprocess.Popen([*command, *STREAMING], stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        deadline = time.monotonic() + 60
        while not (out / METRICS_FILE).is_file() or len(metric_rows(out)) < 13:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "training did not start within 60 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == REQUEUE_EXIT, stderr
    stopped = checkpoint.load(out)["step"]
    assert stopped >= 13  # the second epoch or later
    steps = [f"train.steps={stopped + 6}", *STREAMING]
    assert run(load_config(path, steps), out, resume=True) == 0
    assert run(load_config(path, steps), tmp_path / "whole") == 0
    assert_same_state(checkpoint.load(tmp_path / "whole"), checkpoint.load(out))


# --- a store larger than the budget ------------------------------------------------------------


# Peak resident memory a training adds to a process that imported the trainer: the kernel's
# high-water mark (VmHWM) is reset to the current RSS (clear_refs 5) just before training.
GROWTH = """
import re, sys
from paramlib import cli
import paramlib.train.loop

def status(key):
    return int(re.search(key + r':\\s+(\\d+)', open('/proc/self/status').read()).group(1))

with open('/proc/self/clear_refs', 'w') as handle:
    handle.write('5')
start = status('VmRSS')
code = cli.main(sys.argv[1:])
print(f'rss_growth_kib {status("VmHWM") - start}', file=sys.stderr)
sys.exit(code)
"""


def rss_growth(*argv: str) -> tuple[int, str]:
    """(peak resident bytes added by ``paramlib ARGV``, stderr), in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-c", GROWTH, *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return int(done.stderr.split("rss_growth_kib ")[-1]) * 1024, done.stderr


def test_store_three_times_the_budget_streams_in_bounded_memory_and_resumes_exactly(
    tmp_path: Path, stores: dict[str, Path]
) -> None:
    samples = 700_000  # 22 float32 per sample the run reads: 62 MB
    big = feature_store(
        tmp_path / "big.zarr", "lf", chunk=4096, splits={"train": samples, "val": 512}
    )
    names = ["t", "q", "ps", "heating", "moistening", "precip"]
    split = SplitReader(open_store(big), "train", names).row_bytes * samples
    budget = split / 3  # the store is 3x the budget: auto must stream
    settings = {"steps": 40, "batch_size": 128, "checkpoint_every": 100, "log_every": 5}
    path = write_config(tmp_path / "big.yaml", run_config("mlp", {"hf": big}, **settings))
    options = [f"data.memory_gb={budget / GIB}", "data.shuffle_chunks=2"]
    out = tmp_path / "parts"
    train_big = ("train", str(path), "--out", str(out), *options)
    interrupted, err = rss_growth(*train_big, "--max-steps", "15")
    assert "data loader: streaming (data.loader=auto" in err
    resumed, _ = rss_growth(*train_big, "--resume")
    # The same run on a tiny store in memory: what torch, zarr and the model add anyway.
    tiny = write_config(tmp_path / "tiny.yaml", run_config("mlp", stores, **settings))
    baseline, _ = rss_growth(
        "train", str(tiny), "--out", str(tmp_path / "tiny"), "--max-steps", "15"
    )
    assert max(interrupted, resumed) - baseline < budget, (interrupted, resumed, baseline, budget)
    assert run(load_config(path, options), tmp_path / "whole") == 0
    assert_same_state(checkpoint.load(tmp_path / "whole"), checkpoint.load(out))
    assert metric_rows(tmp_path / "whole") == metric_rows(out)


# --- the benchmark ---------------------------------------------------------------------------


def test_benchmark_quick_run_prints_its_table_and_writes_its_keys(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "streaming_training.py"
    out = tmp_path / "bench" / "streaming_training.json"
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--json", str(out), "--tmp", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "streaming / in-memory" in done.stdout
    report = json.loads(out.read_text())
    assert report["machine"]["intra_op_threads"] == 1
    for key in ("steps_per_s_in_memory", "steps_per_s_streaming", "ratio_vs_in_memory"):
        assert isinstance(report[key], float) and report[key] > 0, key

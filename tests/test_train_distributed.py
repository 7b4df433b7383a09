"""Distributed training: placement from torchrun and SLURM variables, and real 2-rank gloo
runs under torchrun (DDP for a single model, member-parallel for an ensemble) compared with
one process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_stores import feature_store, run_config, write_config

from paramlib.export import load_metadata
from paramlib.train import checkpoint
from paramlib.train.config import load_config
from paramlib.train.distributed import DEFAULT_PORT, Placement, first_host, placement_from_env
from paramlib.train.loop import MODEL_FILE, member_slice, train


def test_first_host_of_slurm_node_lists() -> None:
    assert first_host("node7") == "node7"
    assert first_host("gpu[03-05,07],cpu1") == "gpu03"
    assert first_host("a-b[12,2]") == "a-b12"
    assert first_host("c1,c2") == "c1"


def test_placement_from_torchrun_variables() -> None:
    env = {
        "RANK": "3",
        "WORLD_SIZE": "4",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "h",
        "MASTER_PORT": "7",
    }
    # torchrun's variables win when both launchers' are present (torchrun inside a SLURM job).
    env |= {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"}
    assert placement_from_env(env) == Placement(3, 4, 1, "h", 7, "torchrun")


def test_placement_from_srun_variables() -> None:
    env = {
        "SLURM_PROCID": "5",
        "SLURM_STEP_NUM_TASKS": "8",
        "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "1",
        "SLURM_STEP_NODELIST": "gpu[03-04]",
        "SLURM_JOB_ID": "123456",
    }
    hosts: list[str] = []

    def resolve(nodelist: str) -> str:
        hosts.append(nodelist)
        return "gpu03"

    placement = placement_from_env(env, resolve)
    assert placement == Placement(5, 8, 1, "gpu03", DEFAULT_PORT + 456, "slurm")
    assert hosts == ["gpu[03-04]"]
    assert placement_from_env(env | {"MASTER_PORT": "4000"}, resolve).master_port == 4000
    # The batch script itself (no srun step): one process, whatever --ntasks says.
    batch = {"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_NODELIST": "gpu[03-04]"}
    assert placement_from_env(batch, resolve) == Placement()


def test_member_slices_cover_the_ensemble_once() -> None:
    assert [member_slice(5, r, 2) for r in range(2)] == [(0, 2), (2, 3)]
    assert [member_slice(4, r, 4) for r in range(4)] == [(r, 1) for r in range(4)]
    with pytest.raises(ValueError, match="3 members cannot be shared by 4 ranks"):
        member_slice(3, 0, 4)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train_stores")
    return {
        "hf": feature_store(root / "hf.zarr", "hf"),
        "lf": feature_store(root / "lf.zarr", "lf", seed=1),
    }


def torchrun(config: Path, out: Path, *options: str) -> None:
    """``paramlib train CONFIG --out OUT OPTIONS`` as 2 ranks under torchrun (gloo, CPU)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node=2", "-m", "paramlib", "train", str(config)]
    done = subprocess.run(
        [*command, "--out", str(out), *options],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_ddp_on_two_ranks_equals_one_process_on_the_same_global_batches(
    tmp_path: Path, stores: dict[str, Path]
) -> None:
    # Each rank takes half of every global batch; the averaged gradients are the global ones.
    path = write_config(tmp_path / "mlp.yaml", run_config("mlp", stores, steps=12))
    torchrun(path, tmp_path / "two")
    assert train(load_config(path), tmp_path / "one", placement=Placement()) == 0
    two, one = checkpoint.load(tmp_path / "two"), checkpoint.load(tmp_path / "one")
    assert len(two["ranks"]) == 2 and two["step"] == 12
    for key, value in one["model"].items():
        scale = float(value.abs().max())
        torch.testing.assert_close(two["model"][key], value, rtol=0, atol=1e-5 * scale)
    assert (tmp_path / "two" / MODEL_FILE).is_file()


def test_member_parallel_on_two_ranks_equals_one_process(
    tmp_path: Path, stores: dict[str, Path]
) -> None:
    # 3 members over 2 ranks (slices of 1 and 2): every member, its LF partner, its bootstrap
    # subsets and its optimizer moments are those of a one-process run, to the bit. The
    # two-rank run resumes a one-process checkpoint (slices taken from the whole ensemble) and
    # writes the whole ensemble back (slices gathered on rank 0).
    path = write_config(tmp_path / "mf.yaml", run_config("mfrpn", stores, steps=12))
    config = load_config(path)
    assert train(config, tmp_path / "one", placement=Placement()) == 0
    assert train(config, tmp_path / "two", max_steps=6, placement=Placement()) == 0
    torchrun(path, tmp_path / "two", "--resume")
    two, one = checkpoint.load(tmp_path / "two"), checkpoint.load(tmp_path / "one")
    assert len(two["ranks"]) == 2 and two["step"] == 12
    assert two["model"]["hf.trainable.layers.0.weight"].shape[0] == 3
    for key, value in one["model"].items():
        assert torch.equal(two["model"][key], value), key
    for index, moments in one["optimizer"]["state"].items():
        for key, value in moments.items():
            assert torch.equal(two["optimizer"]["state"][index][key], value), (index, key)
    assert load_metadata(tmp_path / "two" / MODEL_FILE)["provenance"]["members_trained"] == 3

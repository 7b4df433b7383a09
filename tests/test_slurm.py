"""training/slurm/ on a real single-node SLURM (tests/slurm_cluster.py): a 2-rank CPU run
through `sbatch --wait`, and a SIGUSR1 -> checkpoint -> requeue -> resume cycle that ends
equal to the uninterrupted run."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from slurm_cluster import SlurmCluster, paramlib_env, slurm_cluster  # noqa: F401 - the fixture
from train_stores import feature_store, run_config, write_config

from paramlib.train import REQUEUE_EXIT

# CPU ranks on the local node; every option overrides a line of the scripts' GPU headers.
CPU_RANKS = ("--gpus-per-node=0", "--ntasks-per-node=2", "--cpus-per-task=1", "--time=10")
# Long enough (about 5 s on 2 ranks here) for a signal to land mid-run, short for a test.
STEPS = 2500
JOB_TIMEOUT_S = 120.0
REVOKE_MARGIN_S = 2.0


@dataclass(frozen=True)
class Run:
    config: Path
    out: Path
    log: Path


def sbatch_command(repo_root: Path, script: str, run: Run, *options: str) -> list[str]:
    return [
        "sbatch",
        "--wait",
        "--parsable",
        *CPU_RANKS,
        f"--output={run.log}",
        *options,
        str(repo_root / "training" / "slurm" / script),
        str(run.config),
        str(run.out),
    ]


def make_run(root: Path, name: str, config: Path) -> Run:
    root.mkdir(parents=True, exist_ok=True)
    return Run(config=config, out=root / name, log=root / f"{name}.log")


def describe(cluster: SlurmCluster, run: Run) -> str:
    log = run.log.read_text(errors="replace") if run.log.exists() else "(no job log)"
    return f"job log {run.log}:\n{log}\n{cluster.logs()}"


def load_checkpoint(out: Path) -> dict:
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # An RPN ensemble of 3 members: member-parallel over 2 ranks, the exact-resume case.
    root = tmp_path_factory.mktemp("slurm_stores")
    stores = {"hf": feature_store(root / "hf.zarr", "hf")}
    settings = run_config("rpn", stores, steps=STEPS, log_every=10, checkpoint_every=500)
    return write_config(root / "rpn.yaml", settings)


@pytest.fixture(scope="module")
def finished_run(
    slurm_cluster: SlurmCluster,  # noqa: F811
    repo_root: Path,
    config: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Run:
    """One uninterrupted run of train_1node.sbatch, waited for with `sbatch --wait`."""
    run = make_run(tmp_path_factory.mktemp("slurm_runs"), "uninterrupted", config)
    done = slurm_cluster.run(
        sbatch_command(repo_root, "train_1node.sbatch", run),
        env=paramlib_env(),
        timeout=JOB_TIMEOUT_S,
        cwd=run.log.parent,
    )
    assert done.returncode == 0, f"sbatch --wait exited {done.returncode}: {done.stderr}\n" + (
        describe(slurm_cluster, run)
    )
    return run


def test_two_rank_cpu_run_finishes_and_its_checkpoint_loads(
    slurm_cluster: SlurmCluster,  # noqa: F811
    finished_run: Run,
) -> None:
    log = finished_run.log.read_text()
    assert "2 task(s)" in log and "training exited with status 0" in log, describe(
        slurm_cluster, finished_run
    )
    state = load_checkpoint(finished_run.out)
    assert state["step"] == STEPS
    assert len(state["ranks"]) == 2  # both ranks' RNG states: one process group of two
    model = torch.jit.load(str(finished_run.out / "model.pt"))
    assert model is not None


def job_field(cluster: SlurmCluster, job_id: str, field: str) -> str:
    done = cluster.run(["scontrol", "show", "job", "--oneliner", job_id], timeout=15)
    match = re.search(rf"\b{field}=(\S+)", done.stdout)
    return match.group(1) if match else ""


def wait_for(
    what: str, condition: Callable[[], bool], job: subprocess.Popen[str], timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if job.poll() is not None:
            raise AssertionError(f"sbatch --wait exited {job.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def test_usr1_checkpoints_requeues_and_resumes_to_the_uninterrupted_result(
    slurm_cluster: SlurmCluster,  # noqa: F811
    repo_root: Path,
    config: Path,
    finished_run: Run,
    tmp_path: Path,
) -> None:
    # The multi-node script on one node (its body is the same); SIGUSR1 as --signal sends it
    # before the time limit, here at once through scancel.
    run = make_run(tmp_path, "requeued", config)
    command = sbatch_command(repo_root, "train_multinode.sbatch", run, "--nodes=1")
    job = subprocess.Popen(
        command,
        env={**slurm_cluster.env, **paramlib_env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    job_id = ""
    try:
        assert job.stdout is not None
        job_id = job.stdout.readline().strip().split(";")[0]
        assert job_id.isdigit(), f"sbatch printed {job_id!r}"

        # The signal handler is in place once the loop has written a metrics row.
        metrics = run.out / "metrics.csv"
        wait_for(
            "the first metrics row",
            lambda: metrics.is_file() and len(metrics.read_text().splitlines()) > 1,
            job,
        )
        slurm_cluster.run(["scancel", "--signal=USR1", job_id], check=True)

        # Slurm holds a requeued job back for about 2 minutes; release it sooner.
        wait_for(
            "the requeued job to pend",
            lambda: (
                job_field(slurm_cluster, job_id, "JobState") == "PENDING"
                and job_field(slurm_cluster, job_id, "Restarts") == "1"
            ),
            job,
        )
        # Not in the second of the requeue: slurmd revoked the job's credential then, and a
        # launch credential of that same second (whole seconds) would count as revoked.
        time.sleep(REVOKE_MARGIN_S)
        slurm_cluster.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)
        _, stderr = job.communicate(timeout=JOB_TIMEOUT_S)
    finally:
        if job.poll() is None:
            job.kill()
            if job_id:
                slurm_cluster.run(["scancel", "--full", job_id], timeout=15)
            job.wait()
    assert job.returncode == 0, f"sbatch --wait exited {job.returncode}: {stderr}\n" + describe(
        slurm_cluster, run
    )

    log = run.log.read_text()
    checks = (
        f"training exited with status {REQUEUE_EXIT}",
        f"requeueing job {job_id}",
        f"paramlib job {job_id} (restart 1)",
        "training exited with status 0",
    )
    assert all(check in log for check in checks), describe(slurm_cluster, run)
    resumed, uninterrupted = load_checkpoint(run.out), load_checkpoint(finished_run.out)
    assert resumed["step"] == uninterrupted["step"] == STEPS
    for key, value in uninterrupted["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    assert (run.out / "model.pt").is_file()

"""`paramlib dataset build --slurm` on a real single-node SLURM (tests/slurm_cluster.py): dask
workers run as SLURM jobs (this repository's venv Python) and build the store the default
LocalCluster builds; a refused job, a job that never starts and a stop signal while waiting are
one line each, and no job is left in the queue afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from slurm_cluster import SlurmCluster, paramlib_env, slurm_cluster  # noqa: F401 - the fixture

from paramlib.data.workers import JOB_NAME, SlurmOptions
from paramlib.data.workers import slurm_cluster as worker_cluster
from paramlib.paths import REPO_ROOT
from paramlib.train import REQUEUE_EXIT

RECIPE = REPO_ROOT / "training" / "recipes" / "mfrpn_lf_testbed.yaml"
# Two one-core jobs fit the local node (2 CPUs, RealMemory 1000 MB).
SMALL_JOBS = ("--jobs", "2", "--cores", "1", "--memory", "900MB")
BUILD_TIMEOUT_S = 150.0
QUEUE_EMPTY_TIMEOUT_S = 20.0  # cancelled jobs pass through COMPLETING first


def build_command(out: Path, *options: str) -> list[str]:
    command = [sys.executable, "-m", "paramlib", "dataset", "build", str(RECIPE)]
    return [*command, "--out", str(out), *options]


def build_env(cluster: SlurmCluster, testbed: Path) -> dict[str, str]:
    return {**cluster.env, "PARAMLIB_TESTBED": str(testbed), "PYTHONWARNINGS": "ignore"}


def queued(cluster: SlurmCluster) -> list[str]:
    done = cluster.run(["squeue", "--noheader", "--format=%i %j %T"], timeout=15)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")[:-1]


def wait_queue_empty(cluster: SlurmCluster) -> list[str]:
    """The jobs still queued after QUEUE_EMPTY_TIMEOUT_S (empty when all are gone)."""
    deadline = time.monotonic() + QUEUE_EMPTY_TIMEOUT_S
    while (jobs := queued(cluster)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return jobs


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("paramlib dataset build:")]


def store_contents(path: Path) -> tuple[dict, dict]:
    """Root attributes, and per array of every group its zarr metadata and values."""
    root = zarr.open_group(str(path), mode="r")
    arrays = {
        f"{split}/{name}": (array.metadata.to_dict(), array[...])
        for split, group in root.groups()
        for name, array in group.arrays()
    }
    return dict(root.attrs), arrays


def assert_same_store(path: Path, expected: Path) -> None:
    attrs, arrays = store_contents(path)
    expected_attrs, expected_arrays = store_contents(expected)
    assert attrs == expected_attrs  # no scheduler is recorded in the provenance
    assert arrays.keys() == expected_arrays.keys() and arrays
    for key, (metadata, values) in arrays.items():
        assert metadata == expected_arrays[key][0], key
        np.testing.assert_array_equal(values, expected_arrays[key][1], err_msg=key)


@pytest.fixture(scope="module")
def local_store(small_testbed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The store built on the default LocalCluster."""
    out = tmp_path_factory.mktemp("local") / "local.zarr"
    env = {**os.environ, "PARAMLIB_TESTBED": str(small_testbed), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(build_command(out), capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    return out


def slurm_build(
    cluster: SlurmCluster, testbed: Path, cwd: Path, out: Path, *options: str, timeout: float
) -> subprocess.CompletedProcess:
    """`paramlib dataset build --out OUT OPTIONS` run to its end in this cluster's environment."""
    return subprocess.run(
        build_command(out, *options),
        capture_output=True,
        text=True,
        env=build_env(cluster, testbed),
        cwd=cwd,
        timeout=timeout,
    )


def test_slurm_workers_build_the_store_the_local_cluster_builds(
    slurm_cluster: SlurmCluster,  # noqa: F811
    small_testbed: Path,
    local_store: Path,
    tmp_path: Path,
) -> None:
    out, scratch, logs = tmp_path / "slurm.zarr", tmp_path / "scratch", tmp_path / "logs"
    logs.mkdir()
    options = ("--slurm-scratch", str(scratch), "--sbatch", f"output={logs}/worker-%j.out")
    done = slurm_build(
        slurm_cluster,
        small_testbed,
        tmp_path,
        out,
        "--slurm",
        *SMALL_JOBS,
        *options,
        timeout=BUILD_TIMEOUT_S,
    )
    assert done.returncode == 0, f"{done.stderr}\n{slurm_cluster.logs()}"
    assert wait_queue_empty(slurm_cluster) == []

    # The work ran in SLURM jobs: their output went where the extra directive said, the
    # workers spilled under --slurm-scratch, and the job ran this venv's Python.
    worker_logs = [path.read_text() for path in logs.glob("worker-*.out")]
    assert worker_logs and all("Starting Worker" in log for log in worker_logs), worker_logs
    assert (scratch / "dask-scratch-space").is_dir()
    assert_same_store(out, local_store)


def test_a_worker_job_lost_mid_build_is_replaced_and_the_store_is_the_same(
    slurm_cluster: SlurmCluster,  # noqa: F811
    small_testbed: Path,
    local_store: Path,
    tmp_path: Path,
) -> None:
    out, logs, printed = tmp_path / "replaced.zarr", tmp_path / "logs", tmp_path / "stdout"
    logs.mkdir()
    one_job = ("--jobs", "1", "--cores", "1", "--memory", "900MB")
    with printed.open("w") as stdout:
        build = subprocess.Popen(
            build_command(out, "--slurm", *one_job, "--sbatch", f"output={logs}/worker-%j.out"),
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env=build_env(slurm_cluster, small_testbed),
            cwd=tmp_path,
        )
    try:
        # Cancel the only worker's job once the build has begun (it prints its stages).
        deadline = time.monotonic() + 60
        while "[paramlib dataset]" not in printed.read_text():
            assert build.poll() is None and time.monotonic() < deadline, "the build did not begin"
            time.sleep(0.1)
        (first,) = [path.stem.removeprefix("worker-") for path in logs.glob("worker-*.out")]
        slurm_cluster.run(["scancel", first], check=True)
        _, stderr = build.communicate(timeout=BUILD_TIMEOUT_S)
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    assert build.returncode == 0, stderr
    assert len(list(logs.glob("worker-*.out"))) >= 2  # a second job finished the build
    assert wait_queue_empty(slurm_cluster) == []
    assert_same_store(out, local_store)


def test_dataset_build_sbatch_runs_the_scheduler_in_a_job_of_its_own(
    slurm_cluster: SlurmCluster,  # noqa: F811
    small_testbed: Path,
    local_store: Path,
    tmp_path: Path,
) -> None:
    # One CPU for the scheduler's job, one for its worker's: both fit the 2-CPU node.
    out, log = tmp_path / "job.zarr", tmp_path / "scheduler.out"
    script = REPO_ROOT / "training" / "slurm" / "dataset_build.sbatch"
    worker = ("--jobs", "1", "--cores", "1", "--memory", "900MB", "--slurm-wait", "60")
    done = slurm_cluster.run(
        ["sbatch", "--wait", "--cpus-per-task=1", "--mem=500M", f"--output={log}"]
        + [str(script), str(RECIPE), str(out), *worker],
        env={"PARAMLIB_TESTBED": str(small_testbed), **paramlib_env()},
        timeout=BUILD_TIMEOUT_S,
        cwd=tmp_path,
    )
    text = log.read_text() if log.exists() else "(no job log)"
    assert done.returncode == 0, f"{done.stderr}\n{text}\n{slurm_cluster.logs()}"
    assert "built in" in text, text
    assert wait_queue_empty(slurm_cluster) == []
    assert_same_store(out, local_store)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (("--queue", "nosuch"), "partition nosuch"),
        (("--jobs", "1", "--cores", "64", "--memory", "900MB"), "64 cores"),
    ],
    ids=["unknown-partition", "more-cores-than-a-node"],
)
def test_a_refused_worker_job_is_one_line_and_nothing_is_queued(
    slurm_cluster: SlurmCluster,  # noqa: F811
    small_testbed: Path,
    tmp_path: Path,
    options: tuple[str, ...],
    expected: str,
) -> None:
    out = tmp_path / "never.zarr"
    done = slurm_build(slurm_cluster, small_testbed, tmp_path, out, "--slurm", *options, timeout=60)
    assert done.returncode == 1, done.stderr
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "sbatch refuses a worker job" in lines[0], done.stderr
    assert expected in lines[0]
    assert "Traceback" not in done.stderr
    assert queued(slurm_cluster) == [] and not out.exists()


def test_no_worker_in_time_names_what_squeue_says_and_cancels_the_jobs(
    slurm_cluster: SlurmCluster,  # noqa: F811
    small_testbed: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "never.zarr"
    # Held jobs stay pending: the queue never lets them start.
    held = ("--sbatch", "hold", "--slurm-wait", "3", "--queue", "debug")
    done = slurm_build(
        slurm_cluster, small_testbed, tmp_path, out, "--slurm", *SMALL_JOBS, *held, timeout=60
    )
    assert done.returncode == 1, done.stderr
    lines = error_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    assert "no worker started within 3 s (--slurm-wait) on partition debug" in lines[0]
    assert lines[0].count("PENDING (JobHeldUser)") == 2, lines[0]
    assert wait_queue_empty(slurm_cluster) == [] and not out.exists()


def test_workers_that_cannot_start_fail_at_once_with_their_output(
    slurm_cluster: SlurmCluster,  # noqa: F811
    small_testbed: Path,
    tmp_path: Path,
) -> None:
    # A scratch folder that cannot be created: every worker exits at start and its job ends.
    (tmp_path / "a-file").write_text("")
    broken = ("--slurm-scratch", str(tmp_path / "a-file" / "scratch"), "--slurm-wait", "100")
    started = time.monotonic()
    done = slurm_build(
        slurm_cluster,
        small_testbed,
        tmp_path,
        tmp_path / "never.zarr",
        "--slurm",
        *SMALL_JOBS,
        *broken,
        timeout=100,
    )
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < 60  # not the 100 s of --slurm-wait
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "ended before a worker connected" in lines[0], done.stderr
    assert f"{tmp_path}/slurm-" in lines[0] and "Not a directory" in lines[0], lines[0]
    assert wait_queue_empty(slurm_cluster) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_stop_signal_while_waiting_cancels_the_jobs_and_exits_requeue(
    slurm_cluster: SlurmCluster,  # noqa: F811
    small_testbed: Path,
    tmp_path: Path,
    signum: signal.Signals,
) -> None:
    out = tmp_path / "never.zarr"
    held = ("--sbatch", "hold", "--slurm-wait", "120")
    build = subprocess.Popen(
        build_command(out, "--slurm", *SMALL_JOBS, *held),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=build_env(slurm_cluster, small_testbed),
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while len([job for job in queued(slurm_cluster) if JOB_NAME in job]) < 2:
            assert build.poll() is None and time.monotonic() < deadline, "no job was queued"
            time.sleep(0.2)
        build.send_signal(signum)
        _, stderr = build.communicate(timeout=60)
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    assert build.returncode == REQUEUE_EXIT, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1 and f"{signum.name}: stopped" in lines[0], stderr
    assert wait_queue_empty(slurm_cluster) == [] and not out.exists()


def test_worker_job_script_has_the_options_and_this_python() -> None:
    options = SlurmOptions(
        jobs=2,
        cores=4,
        memory="16GB",
        walltime="00:30:00",
        queue="compute",
        account="proj1",
        scratch="$TMPDIR",
        directives=("--qos=debug", "--constraint=cpu"),
    )
    with worker_cluster(options) as cluster:
        script = cluster.job_script()
    assert script.startswith("#!/usr/bin/env bash")
    for line in (
        f"#SBATCH -J {JOB_NAME}",
        "#SBATCH -p compute",
        "#SBATCH -A proj1",
        "#SBATCH -t 00:30:00",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=15G",
        "#SBATCH --qos=debug",
        "#SBATCH --constraint=cpu",
    ):
        assert line in script.splitlines(), line
    worker = script.splitlines()[-1]
    assert worker.startswith(f"{sys.executable} -m distributed.cli.dask_worker")
    assert "--nthreads 4" in worker and "--local-directory $TMPDIR" in worker


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("--memory", "lots", "expected a size such as 32GB"),
        ("--jobs", "0", "expected a whole number >= 1"),
        ("--slurm-wait", "-1", "expected a number of seconds > 0"),
        ("--sbatch", "", "expected one sbatch option"),
    ],
)
def test_bad_slurm_option_is_one_line_naming_it(
    option: str, value: str, expected: str, tmp_path: Path
) -> None:
    done = subprocess.run(
        build_command(tmp_path / "never.zarr", "--slurm", f"{option}={value}"),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        timeout=60,
    )
    assert done.returncode == 2
    assert f"argument {option}" in done.stderr and expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_an_unwritable_store_path_fails_before_any_job_is_submitted(tmp_path: Path) -> None:
    taken = tmp_path / "taken.zarr"
    taken.write_text("a file, not a store")
    # SLURM unreachable: any submission would fail with another message.
    env = {**os.environ, "SLURM_CONF": str(tmp_path / "no-slurm.conf")}
    done = subprocess.run(
        build_command(taken, "--slurm"), capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 1, done.stderr
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and f"{taken} exists and is not a folder" in lines[0], done.stderr
    assert taken.read_text() == "a file, not a store"

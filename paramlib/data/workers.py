"""Set-up of dask.distributed workers that run pipeline tasks: the per-worker plugin, and
workers started as SLURM jobs through dask-jobqueue.

SLURM workers: the scheduler runs inside the process that builds (``paramlib dataset build
--slurm``, on a login node or in a small job of its own); each SLURM job runs one worker
process, started with this process's Python (the same virtual environment), that connects back
to it. The cluster is closed, its jobs cancelled, whichever way the build ends.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import netCDF4
import xarray as xr
from distributed import Client, Worker, WorkerPlugin

from paramlib.data.pipeline import NETCDF_CHUNK_CACHE_BYTES, OPEN_FILES, BuildInterrupted
from paramlib.train.signals import StopRequest

# Importing dask_jobqueue sets SIGINT to sys.exit() (its runner module): a Ctrl-C would end a
# build with exit status 0. Import it here, once, and put back the handler that was there.
_sigint = signal.getsignal(signal.SIGINT)
from dask_jobqueue import SLURMCluster  # noqa: E402

signal.signal(signal.SIGINT, _sigint)

JOB_NAME = "paramlib-dataset"
POLL_S = 0.5
QUEUE_CHECK_S = 5.0  # squeue at most this often: slurmctld serves every user
SLURM_COMMAND_TIMEOUT_S = 30.0


class BoundedFileMemory(WorkerPlugin):
    """The pipeline's limits on memory per open file (``bounded_file_memory``) in every worker
    process, for good: a worker serves the build alone. Workers that join later (SLURM jobs
    start when the queue lets them) get it too."""

    def setup(self, worker: Worker) -> None:
        netCDF4.set_chunk_cache(NETCDF_CHUNK_CACHE_BYTES)
        xr.set_options(file_cache_maxsize=OPEN_FILES)


class SlurmError(RuntimeError):
    """SLURM refused the worker jobs, or none started in time; one line saying which and why."""


@dataclass(frozen=True)
class SlurmOptions:
    """What each worker job asks SLURM for (``paramlib dataset build --slurm`` options)."""

    jobs: int = 2
    cores: int = 8
    memory: str = "32GB"
    walltime: str = "01:00:00"
    queue: str | None = None  # partition; None: the cluster's default
    account: str | None = None
    scratch: str | None = None  # worker spill folder on the node; None: $TMPDIR there
    directives: tuple[str, ...] = ()  # extra sbatch options, e.g. "--constraint=cpu"
    interface: str | None = None  # network interface for scheduler and workers, e.g. ib0
    wait_s: float = 600.0  # for the first worker to connect

    @property
    def where(self) -> str:
        partition = f"partition {self.queue}" if self.queue else "the default partition"
        return partition + (f", account {self.account}" if self.account else "")


def slurm_cluster(options: SlurmOptions) -> SLURMCluster:
    """A dask-jobqueue SLURMCluster whose jobs each run one worker process of ``cores``
    threads; nothing is submitted until it is scaled. Options not given here come from dask's
    ``jobqueue.slurm`` configuration (e.g. ``local-directory``, ``interface``)."""
    return SLURMCluster(
        cores=options.cores,
        processes=1,
        memory=options.memory,
        walltime=options.walltime,
        queue=options.queue,
        account=options.account,
        job_name=JOB_NAME,
        job_extra_directives=list(options.directives),
        local_directory=options.scratch,
        interface=options.interface,
        # The interpreter (and so the virtual environment) of this process, by absolute path:
        # the job finds paramlib even where the site's sbatch does not pass on PATH.
        python=sys.executable,
    )


def _slurm_command(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SlurmError(
            f"--slurm: {name} not found on PATH; run the build where SLURM's client commands"
            " work (a login node, or inside a job)"
        )
    return found


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def check_submission(cluster: SLURMCluster, options: SlurmOptions) -> None:
    """``sbatch --test-only`` on the worker job script: a partition, account, walltime or
    resource request SLURM refuses is one line now, before anything is queued."""
    sbatch = _slurm_command("sbatch")
    with tempfile.TemporaryDirectory(prefix="paramlib-slurm-") as folder:
        script = Path(folder) / "worker.sh"
        script.write_text(cluster.job_script())
        done = subprocess.run(
            [sbatch, "--test-only", str(script)],
            capture_output=True,
            text=True,
            timeout=SLURM_COMMAND_TIMEOUT_S,
            check=False,
        )
    if done.returncode != 0:
        raise SlurmError(
            f"--slurm: sbatch refuses a worker job on {options.where} ({options.cores} cores,"
            f" {options.memory}, walltime {options.walltime}): {_last_line(done.stderr)}"
        )


def job_ids(cluster: SLURMCluster) -> list[str]:
    return sorted(
        (str(job.job_id) for job in cluster.workers.values() if getattr(job, "job_id", None)),
        key=int,
    )


def queued(ids: list[str]) -> list[str]:
    """'JOBID PARTITION STATE (REASON)' for each of ``ids`` still in the queue."""
    done = subprocess.run(
        [
            _slurm_command("squeue"),
            "--noheader",
            "--format=%i %P %T (%r)",
            f"--jobs={','.join(ids)}",
        ],
        capture_output=True,
        text=True,
        timeout=SLURM_COMMAND_TIMEOUT_S,
        check=False,
    )
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 and not lines and "Invalid job id" not in done.stderr:
        raise SlurmError(f"--slurm: squeue failed: {_last_line(done.stderr)}")
    return lines


def ended_report(ids: list[str]) -> str:
    """The jobs left the queue without a worker connecting: where their output is, and its last
    line (SLURM's default output file; --sbatch output=... puts it elsewhere)."""
    output = Path.cwd() / f"slurm-{ids[0]}.out"
    last = f": {_last_line(output.read_text(errors='replace'))}" if output.is_file() else ""
    return (
        f"jobs {', '.join(ids)} ended before a worker connected; see their output ({output}{last})"
    )


def squeue_report(ids: list[str]) -> str:
    if not ids:
        return "no job was submitted (sbatch failed; see the messages above)"
    jobs = queued(ids)
    return f"squeue: {'; '.join(jobs)}" if jobs else ended_report(ids)


def wait_for_workers(
    client: Client, cluster: SLURMCluster, options: SlurmOptions, stop: StopRequest
) -> None:
    """Return once a worker has connected (the others join as the queue lets them). A stop
    signal meanwhile raises `BuildInterrupted`; SlurmError as soon as every job has ended
    without a worker (a worker that cannot start), or when none connected after
    ``options.wait_s`` (with what squeue says)."""
    deadline = time.monotonic() + options.wait_s
    next_check = time.monotonic() + QUEUE_CHECK_S
    while not client.scheduler_info(n_workers=1)["workers"]:
        if stop.signal is not None:
            raise BuildInterrupted(stop.name)
        now = time.monotonic()
        if now >= deadline:
            raise SlurmError(
                f"--slurm: no worker started within {options.wait_s:g} s (--slurm-wait) on"
                f" {options.where}; {squeue_report(job_ids(cluster))}"
            )
        if now >= next_check:
            next_check = now + QUEUE_CHECK_S
            ids = job_ids(cluster)
            if len(ids) == options.jobs and not queued(ids):
                raise SlurmError(f"--slurm: {ended_report(ids)}")
        time.sleep(POLL_S)


@contextmanager
def slurm_client(options: SlurmOptions, stop: StopRequest) -> Iterator[Client]:
    """A client of a SLURMCluster scaled to ``options.jobs`` jobs, with a worker connected;
    a job that ends during the build (its walltime, a lost node) is replaced by a new one,
    and the scheduler recomputes what its worker held. On leaving (normally, on an error, or
    after a stop signal) the jobs are cancelled."""
    cluster = slurm_cluster(options)
    try:
        check_submission(cluster, options)
        cluster.scale(jobs=options.jobs)
        with Client(cluster) as client:
            wait_for_workers(client, cluster, options, stop)
            # Only now: before a worker has run, replacing jobs that end would resubmit a
            # worker that cannot start, again and again, instead of failing.
            cluster.adapt(minimum_jobs=options.jobs, maximum_jobs=options.jobs)
            yield client
    finally:
        cluster.close()  # scancel of every job it submitted

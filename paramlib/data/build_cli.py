"""``paramlib dataset build RECIPE.yaml``: build a training store from a recipe.

Where it runs:
  default               a dask.distributed LocalCluster in this process (processes=False: the
                        netCDF, zarr and numpy work releases the GIL, and one process does not
                        duplicate memory; --workers N threads, default 2, for a 2-core machine)
  --scheduler ADDRESS   an existing dask.distributed scheduler (tcp://host:8786)
  --scheduler threads   dask's threaded scheduler, no distributed: on one small machine the
                        fastest (16 files of the large testbed's Bi-LSTM store, 2 workers: 9.5 s
                        against 11.7 s on the LocalCluster, docs/performance.md)
  --scheduler synchronous   one thread, for debugging
  --slurm               workers as SLURM jobs (dask-jobqueue's SLURMCluster): --jobs jobs, each one
                        worker of --cores threads and --memory, for --walltime, on --queue /
                        --account; the scheduler runs in this process and the jobs connect to it
                        (training/slurm/dataset_build.sbatch runs this process in a job too).
                        sbatch --test-only vets the job first; the build starts when the first
                        worker connects (else one line with what squeue says after --slurm-wait,
                        or at once when every job ended without a worker); a job that ends
                        mid-build is replaced; every job is cancelled when the build ends, fails
                        or is stopped. After a SIGKILL the running workers exit within seconds
                        (connection lost); jobs still queued exit 60 s after they start
                        (dask's death timeout).

Interruption: SIGTERM (SLURM preemption, scancel), SIGUSR1 (sbatch --signal) and SIGINT (Ctrl-C)
stop the build after the compute under way (one batch of chunks); its temporary store is
removed, what was at the target stays, and the exit status is `REQUEUE_EXIT` (99, as for
`paramlib train`: run the same command again, it builds from the start). A build killed
outright (SIGKILL) leaves its temporary store; the next build for the same target removes it.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

from paramlib.cli import Subparsers
from paramlib.guards import check_output_path
from paramlib.train import REQUEUE_EXIT
from paramlib.train.signals import StopRequest

if TYPE_CHECKING:
    from paramlib.data.workers import SlurmOptions

STORE_SUFFIX = ".zarr"
LOCAL_SCHEDULERS = ("threads", "synchronous")


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("dataset", help="training stores (zarr) from recipes")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build",
        help="build a training store from RECIPE.yaml (a no-op when up to date)",
        description="Read the recipe's catalog entries, QC, sample, split and normalise them, and"
        " write a zarr store with provenance. Does nothing when the store at the target was built"
        " from the same recipe and source files.",
    )
    build.add_argument("recipe", help="recipe YAML (see training/recipes/)")
    build.add_argument("--out", help="store path (default: NAME.zarr in the current folder)")
    build.add_argument("--catalog-dir", help="catalog folder (default: data_catalog/)")
    build.add_argument("--root", help="data root of the catalog paths")
    build.add_argument("--force", action="store_true", help="rebuild even when up to date")
    build.add_argument(
        "--rehash",
        action="store_true",
        help="hash every source file again instead of taking the sha256 remembered for a file"
        " whose inode, size and times are unchanged ($PARAMLIB_CACHE_DIR, default"
        " ~/.cache/paramlib)",
    )
    where = build.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help=f"an existing dask scheduler, or one of {', '.join(LOCAL_SCHEDULERS)} (no cluster)",
    )
    where.add_argument("--slurm", action="store_true", help="workers as SLURM jobs")
    build.add_argument("--workers", type=int, default=2, help="local threads (default 2)")
    slurm = build.add_argument_group(
        "SLURM (with --slurm)",
        "Each job runs one dask worker with this Python (its virtual environment); the scheduler"
        " runs in this process, so the compute nodes must reach this machine (see --interface)."
        " Other worker settings come from dask's jobqueue.slurm configuration.",
    )
    slurm.add_argument("--jobs", type=positive_int, default=2, help="SLURM jobs (default 2)")
    slurm.add_argument("--cores", type=positive_int, default=8, help="cores per job (default 8)")
    slurm.add_argument(
        "--memory", type=memory_size, default="32GB", help="memory per job (default 32GB)"
    )
    slurm.add_argument(
        "--walltime", default="01:00:00", help="time limit per job, [D-]HH:MM:SS (default 1 h)"
    )
    slurm.add_argument("--queue", "--partition", dest="queue", help="SLURM partition")
    slurm.add_argument("--account", help="SLURM account")
    slurm.add_argument(
        "--slurm-scratch",
        metavar="DIR",
        help="node-local folder for the workers' spill and temporary files (e.g. /local/scratch;"
        " quote '$TMPDIR' to expand it on the node; default: the node's temporary folder)",
    )
    slurm.add_argument(
        "--sbatch",
        metavar="OPTION",
        action="append",
        type=sbatch_directive,
        default=[],
        help="extra sbatch option for the worker jobs, repeatable: --sbatch qos=debug"
        " --sbatch constraint=cpu (a leading -- is added)",
    )
    slurm.add_argument(
        "--interface",
        help="network interface of the scheduler and workers (e.g. ib0), where the default"
        " route's address is not reachable from the compute nodes",
    )
    slurm.add_argument(
        "--slurm-wait",
        type=positive_float,
        default=600.0,
        metavar="SECONDS",
        help="how long to wait for the first worker before giving up (default 600)",
    )
    build.set_defaults(func=_build)


class BuildStop(StopRequest):
    """`StopRequest` that also catches SIGINT: Ctrl-C stops the build as cleanly as SIGTERM
    (a KeyboardInterrupt could land while dask threads still write the temporary store)."""

    def __enter__(self) -> BuildStop:
        super().__enter__()
        self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._handle)
        return self


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text}")
    return value


def memory_size(text: str) -> str:
    from dask.utils import parse_bytes

    try:
        parse_bytes(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 32GB or 4000MB, got {text!r}"
        ) from None
    return text


def sbatch_directive(text: str) -> str:
    text = text.strip()
    if not text or "\n" in text:
        raise argparse.ArgumentTypeError(
            f"expected one sbatch option such as qos=debug, got {text!r}"
        )
    return text if text.startswith("-") else f"--{text}"


def slurm_options(args: argparse.Namespace) -> SlurmOptions:
    from paramlib.data.workers import SlurmOptions

    return SlurmOptions(
        jobs=args.jobs,
        cores=args.cores,
        memory=args.memory,
        walltime=args.walltime,
        queue=args.queue,
        account=args.account,
        scratch=args.slurm_scratch,
        directives=tuple(args.sbatch),
        interface=args.interface,
        wait_s=args.slurm_wait,
    )


def _build(args: argparse.Namespace) -> int:
    from paramlib.data.pipeline import BuildInterrupted, build_store
    from paramlib.data.recipe import RecipeError, load_recipe
    from paramlib.data.workers import SlurmError

    try:
        recipe = load_recipe(args.recipe)
    except RecipeError as error:
        print(f"paramlib dataset build: invalid recipe:\n{error}", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else Path(recipe.name + STORE_SUFFIX)

    def build() -> None:
        build_store(
            recipe,
            out,
            catalog_dir=args.catalog_dir,
            root=args.root,
            force=args.force,
            rehash=args.rehash,
            stop=stop,
        )

    try:
        if args.slurm:  # before any job is queued (the build checks it again, later)
            check_output_path(out, "store path", "dir")
        with BuildStop() as stop:
            _run_build(args, build, stop)
    except BuildInterrupted as interrupted:
        print(
            f"paramlib dataset build: {interrupted.signal_name}: stopped; the temporary store was"
            f" removed and {out} is as it was; exit {REQUEUE_EXIT} (run the same command again)",
            file=sys.stderr,
        )
        return REQUEUE_EXIT
    # Catalog, reader, recipe and pipeline errors are ValueErrors naming file and variable;
    # SlurmError: the worker jobs were refused or did not start (their jobs are cancelled).
    except (ValueError, OSError, SlurmError) as error:
        print(f"paramlib dataset build: {args.recipe}: {error}", file=sys.stderr)
        return 1
    return 0


def _run_build(args: argparse.Namespace, build: Callable[[], None], stop: StopRequest) -> None:
    """``build()`` on the scheduler the arguments ask for."""
    import dask

    if args.scheduler in LOCAL_SCHEDULERS:
        with dask.config.set(scheduler=args.scheduler, num_workers=args.workers):
            build()
        return
    from distributed import Client, LocalCluster

    from paramlib.data.workers import BoundedFileMemory, slurm_client

    with ExitStack() as stack:
        if args.slurm:
            client = stack.enter_context(slurm_client(slurm_options(args), stop))
        elif args.scheduler:
            client = stack.enter_context(Client(args.scheduler))
        else:
            cluster = stack.enter_context(
                LocalCluster(
                    n_workers=1,
                    threads_per_worker=args.workers,
                    processes=False,
                    dashboard_address=None,
                )
            )
            client = stack.enter_context(Client(cluster))
        client.register_plugin(BoundedFileMemory())
        build()

"""Training-store pipeline throughput and memory against a plain xarray read of the same data.

For each input size (the first N files of a wrfout set), two fresh processes:

  raw       opens each file with xarray and loads the variables the wrfout reader reads, one
            file at a time (the floor: bytes off disk into numpy, nothing else);
  pipeline  `paramlib dataset build` of the Bi-LSTM recipe (training/recipes/bilstm_testbed_wrf,
            its source pointed at those files) on the default LocalCluster, or --scheduler;
            --workers threads.

MB/s counts the same input bytes (the raw variables' sizes) for both, so
ratio_vs_raw_read = raw seconds / pipeline seconds. Each child imports its libraries before its
clock starts and reports that time apart (``*_import_seconds``); the build's clock includes
starting its LocalCluster. --repeat N runs both N times, alternating, and keeps the fastest of
each (the machine is shared: other jobs' load is recorded). Peak RSS is each child's own
maximum resident set, VmHWM of /proc/self/status read in the child (workers are threads of the
build process, so it covers them); not getrusage: Linux carries a process's ru_maxrss across
exec, so a child of this script would report this script's peak (7.4 GB after generating the
testbed). By default the `large` testbed WRF set (64 x 64 x 44, 192 frames in 16 hourly files)
is generated once into build/bench/pipeline/ (about 2 minutes) and reused.

The build hashes its sources (sha256, for the store's provenance) unless it remembers their
hashes (paramlib.data.hashes): by default every build gets an empty hash cache, as a first build
of new data does; --hash-cache warm gives the builds one cache, filled before the clocks run,
as a rebuild after a recipe change sees it.

    .venv/bin/python benchmarks/pipeline_throughput.py --json build/bench/pipeline_throughput.json
    .venv/bin/python benchmarks/pipeline_throughput.py --files 1 2 4 8 16 --repeat 3 \
        --scheduler threads --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing paramlib
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_json import write_json  # noqa: E402

from paramlib.data.hashes import sha256_files  # noqa: E402
from paramlib.paths import CACHE_ENV, build_dir  # noqa: E402

RECIPE = ROOT / "training" / "recipes" / "bilstm_testbed_wrf.yaml"
ENTRY = "bench_wrf"
TARGET_RATIO = 0.5  # reported, not asserted
TARGET_RSS_MB = 2048.0

# Defined in each child: its own peak resident set in MB (see the module docstring).
PEAK_RSS = """
def peak_rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
"""
# Run in a child process: prints {"seconds", "import_seconds", "bytes", "peak_rss_mb"} as its
# last line. Each child imports its libraries before its clock starts (xarray for the raw read;
# paramlib's pipeline with xarray, dask, zarr and distributed, and the `paramlib` parser, which
# imports every subcommand's module, for the build) and reports that time apart: the clocks
# compare the work, not Python's start-up (1.5-5 s here for the build on a loaded machine).
RAW_READ = (
    PEAK_RSS
    + """
import json, sys, time
started = time.perf_counter()
import xarray as xr
from paramlib.data.readers.wrfout import READ
start, cpu, size = time.perf_counter(), time.process_time(), 0
for path in sys.argv[1:]:
    with xr.open_dataset(path, engine="netcdf4", decode_times=False) as ds:
        loaded = ds[[n for n in READ if n in ds]].load()
        size += sum(v.nbytes for v in loaded.data_vars.values())
print(json.dumps({"seconds": time.perf_counter() - start, "import_seconds": start - started,
                  "cpu_seconds": time.process_time() - cpu, "bytes": size,
                  "peak_rss_mb": peak_rss_mb()}))
"""
)
BUILD = (
    PEAK_RSS
    + """
import json, sys, time
started = time.perf_counter()
import distributed
import paramlib.data.pipeline, paramlib.data.workers
from paramlib.cli import build_parser
parser = build_parser()  # imports every subcommand's module
start, cpu = time.perf_counter(), time.process_time()
args = parser.parse_args(["dataset", "build", *sys.argv[1:]])
code = args.func(args)
print(json.dumps({"seconds": time.perf_counter() - start, "import_seconds": start - started,
                  "cpu_seconds": time.process_time() - cpu, "code": code,
                  "peak_rss_mb": peak_rss_mb()}))
sys.exit(code)
"""
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wrf-dir", type=Path, help="wrfout_d01_* files (default: generate)")
    parser.add_argument(
        "--files",
        type=int,
        nargs="+",
        help="input sizes as numbers of files (default: half and all of them)",
    )
    parser.add_argument(
        "--scheduler", help="passed to `paramlib dataset build` (default: its LocalCluster)"
    )
    parser.add_argument(
        "--workers", type=int, help="passed to `paramlib dataset build` (default: its default)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a 2-file 12 x 12 set instead of `large` (tests)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs per input size; the fastest of each kind counts, the largest peak RSS"
        " (default 1; on a shared machine 3)",
    )
    parser.add_argument(
        "--hash-cache",
        choices=("cold", "warm"),
        default="cold",
        help="cold: each build hashes every source (a first build); warm: the sources' hashes"
        " are remembered (a rebuild); default cold",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    return parser.parse_args()


def wrf_set(args: argparse.Namespace) -> list[Path]:
    """The wrfout files: given, or generated once (deterministic, seed 0) and reused."""
    import numpy as np

    from paramlib.testbed.generate import SIZES
    from paramlib.testbed.wrf_set import GridForcing, WrfSetConfig, make_wrf_set

    if args.wrf_dir is not None:
        directory = args.wrf_dir
    else:
        name = "wrf_quick" if args.quick else "wrf_large"
        directory = build_dir() / "bench" / "pipeline" / name
        done = directory / ".complete"
        if not done.exists():
            config = (
                WrfSetConfig(nx=12, ny=12, spin_up_days=0.1, hours=2.0)
                if args.quick
                else SIZES["large"].wrf
            )
            print(f"generating the wrfout set in {directory} ...", flush=True)
            make_wrf_set(directory, config, GridForcing.draw(config, np.random.default_rng(0)))
            done.touch()
    files = sorted(directory.glob("wrfout_d01_*"))
    if not files:
        raise SystemExit(f"--wrf-dir {directory}: no wrfout_d01_* files")
    return files


def run_child(code: str, argv: list[str], cwd: Path, cache: Path | None = None) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if cache is not None:
        env[CACHE_ENV] = str(cache)
    result = subprocess.run(
        [sys.executable, "-c", code, *argv], cwd=cwd, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"benchmark child failed:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(
    files: list[Path],
    scheduler: str | None,
    workers: int | None,
    repeat: int,
    warm: bool,
    work: Path,
) -> dict[str, Any]:
    """Raw read and pipeline build of ``files``, ``repeat`` times each, alternating; the store
    is built into ``work``, with a hash cache that is ``warm`` or empty for each build."""
    catalog = work / "catalog"
    catalog.mkdir(parents=True)
    entry = {
        "description": "pipeline benchmark input",
        "format": "wrfout",
        "fidelity": "high",
        "scenario": "historical",
        "paths": [str(p) for p in files],
        "levels": {"coordinate": "eta", "units": "1", "count": 44},
        "options": {},
        "variables": {},
    }
    (catalog / "bench.yaml").write_text(yaml.safe_dump({"entries": {ENTRY: entry}}))
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["sources"] = [ENTRY]
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe))

    build_args = [str(work / "recipe.yaml"), "--out", str(work / "store.zarr")]
    build_args += ["--catalog-dir", str(catalog), "--force"]  # --force: every repeat builds
    if scheduler:
        build_args += ["--scheduler", scheduler]
    if workers:
        build_args += ["--workers", str(workers)]
    if warm:
        sha256_files(files)  # the ones not yet remembered (CACHE_ENV was set in main())
    raws, builds = [], []
    for k in range(repeat):
        raws.append(run_child(RAW_READ, [str(p) for p in files], work))
        cache = None if warm else work / f"empty_hash_cache_{k}"
        builds.append(run_child(BUILD, build_args, work, cache))
    raw = min(raws, key=lambda run: run["seconds"])
    built = min(builds, key=lambda run: run["seconds"])
    mb = raw["bytes"] / 1e6
    return {
        "files": len(files),
        "input_mb": mb,
        "raw_seconds": raw["seconds"],
        "raw_mb_per_s": mb / raw["seconds"],
        "raw_peak_rss_mb": max(run["peak_rss_mb"] for run in raws),
        "pipeline_seconds": built["seconds"],
        "pipeline_mb_per_s": mb / built["seconds"],
        "peak_rss_mb": max(run["peak_rss_mb"] for run in builds),
        "ratio_vs_raw_read": raw["seconds"] / built["seconds"],
        "all_raw_seconds": [run["seconds"] for run in raws],
        "all_pipeline_seconds": [run["seconds"] for run in builds],
        # CPU seconds of all the child's threads, less sensitive to other jobs than the clock
        "raw_cpu_seconds": raw["cpu_seconds"],
        "pipeline_cpu_seconds": built["cpu_seconds"],
        "raw_import_seconds": raw["import_seconds"],
        "pipeline_import_seconds": built["import_seconds"],
    }


def main() -> int:
    args = parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # numpy in the children: no thread fights
    if args.repeat < 1:
        raise SystemExit(f"--repeat {args.repeat}: expected 1 or more")
    files = wrf_set(args)
    if args.hash_cache == "warm":  # one cache of the benchmark's own, for all builds
        os.environ[CACHE_ENV] = str(build_dir() / "bench" / "pipeline" / "hash_cache")
    counts = args.files or sorted({max(1, len(files) // 2), len(files)})
    load_before = os.getloadavg()[0]
    rows = []
    for count in counts:
        with tempfile.TemporaryDirectory(prefix="pipeline_bench_") as work:
            print(f"input: first {count} of {len(files)} files ...", flush=True)
            rows.append(
                measure(
                    files[:count],
                    args.scheduler,
                    args.workers,
                    args.repeat,
                    args.hash_cache == "warm",
                    Path(work),
                )
            )
    header = ("files", "input MB", "raw MB/s", "pipeline MB/s", "ratio", "peak RSS MB")
    print("\n" + " | ".join(f"{h:>13}" for h in header))
    for row in rows:
        cells = (row["files"], row["input_mb"], row["raw_mb_per_s"], row["pipeline_mb_per_s"])
        cells += (row["ratio_vs_raw_read"], row["peak_rss_mb"])
        print(" | ".join(f"{c:>13.3g}" if isinstance(c, float) else f"{c:>13}" for c in cells))
    result = {
        "benchmark": "pipeline_throughput",
        "recipe": str(RECIPE.relative_to(ROOT)),
        "scheduler": args.scheduler or "LocalCluster (paramlib dataset build default)",
        "workers": args.workers or "paramlib dataset build default",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            # Other jobs' load, 1-minute average at the start and the end.
            "loadavg": [load_before, os.getloadavg()[0]],
        },
        "repeat": args.repeat,
        "hash_cache": args.hash_cache,
        "targets": {"ratio_vs_raw_read": TARGET_RATIO, "peak_rss_mb": TARGET_RSS_MB},
        # The headline ratio is the largest input's; every size's is in `sizes`.
        "ratio_vs_raw_read": rows[-1]["ratio_vs_raw_read"],
        "peak_rss_mb": [
            {"files": r["files"], "input_mb": r["input_mb"], "peak_rss_mb": r["peak_rss_mb"]}
            for r in rows
        ],
        "sizes": rows,
    }
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The MF-RPN comparison end to end, from nothing: testbed, stores, training, evaluation.

    paramlib evaluate --compare --variant medium --work DIR [--seeds 0 1 2] [--jobs 2]

builds, under ``DIR``, the testbed of the variant's size (``paramlib.testbed.generate.SIZES``;
kept when its summary already has this size and seed), the three testbed stores the compared
configs read (``stores/``; a store is rebuilt only when its recipe or sources changed), trains
every compared config's variant for every seed (``runs/``; finished runs are kept, ``jobs``
processes at a time) and writes the comparison report (``report/``). Each stage's wall time
goes to ``DIR/timings.json``. The ``small`` variant is the demo's; ``medium`` is the science
size of the README's "The medium study".
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from paramlib.atomic import write_atomic
from paramlib.paths import RECIPES, TESTBED_ENV

# The stores the compared configs read (`paramlib.evaluate.compare.COMPARED`).
STUDY_RECIPES = tuple(
    RECIPES / f"{name}.yaml"
    for name in ("mfrpn_lf_testbed", "mfrpn_hf_testbed", "mfrpn_hf_oracle_testbed")
)


def ensure_testbed(folder: Path, size: str, seed: int, log: Callable[[str], None]) -> None:
    """The testbed of `size` and `seed` in `folder`, generated unless it is already there."""
    from paramlib.testbed.generate import SIZES, SUMMARY, generate

    if size not in SIZES:
        raise ValueError(f"variant {size!r}: no testbed size of that name ({', '.join(SIZES)})")
    summary = folder / SUMMARY
    current = json.loads(summary.read_text()) if summary.is_file() else {}
    if current.get("seed") == seed and current.get("size") == size:
        log(f"testbed {folder}: up to date ({size}, seed {seed})")
        return
    generate(folder, size=size, seed=seed, log=log)


def build_stores(
    testbed: Path, stores: Path, recipes: Sequence[Path], log: Callable[[str], None]
) -> None:
    """The stores of the testbed `recipes` (files) from `testbed` into `stores`, each named as
    its recipe file (a no-op when up to date), with dask's threads in this process: the
    quickest way on a small node."""
    import dask

    from paramlib.data.pipeline import build_store
    from paramlib.data.recipe import load_recipe

    os.environ[TESTBED_ENV] = str(testbed)  # the catalog's testbed entries
    with dask.config.set(scheduler="threads"):
        for path in recipes:
            result = build_store(load_recipe(path), stores / f"{path.stem}.zarr")
            built = f"{result.samples} samples in {result.seconds:.1f} s"
            log(f"{path.stem}: {'up to date' if result.up_to_date else built}")


def run_study(
    work: str | os.PathLike[str],
    variant: str,
    seeds: Sequence[int],
    *,
    jobs: int = 1,
    testbed_seed: int = 0,
    log: Callable[[str], None] = print,
) -> Path:
    """Every stage of the module docstring under `work`; returns the report's path."""
    from paramlib.evaluate.compare import compare_models

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def stage(name: str, action: Callable[[], object]) -> object:
        started = time.perf_counter()
        result = action()
        timings[name] = round(time.perf_counter() - started, 1)
        log(f"[study] {name}: {timings[name]:.0f} s")
        return result

    stage("testbed", lambda: ensure_testbed(work / "testbed", variant, testbed_seed, log))
    stage("stores", lambda: build_stores(work / "testbed", work / "stores", STUDY_RECIPES, log))
    report = stage(
        "training and evaluation",
        lambda: compare_models(
            work / "stores",
            work / "runs",
            seeds,
            work / "report",
            variant=variant,
            jobs=jobs,
            log=log,
        ),
    )
    timings["total"] = round(sum(timings.values()), 1)
    text = (json.dumps(timings, indent=2) + "\n").encode()
    write_atomic(work / "timings.json", lambda f: f.write(text))
    log(f"[study] total {timings['total']:.0f} s; {work / 'timings.json'}")
    return Path(str(report))

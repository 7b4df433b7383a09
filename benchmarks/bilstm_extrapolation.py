"""Does the Bi-LSTM MSKF emulator survive a regime it was not trained on? Leave-one-run-out.

Every fold holds one case out of training and scores on it alone, beside the baselines that
`paramlib evaluate` adds for MSKF emulators (persistence, climatology):

- ``qv110``, ``shear2x``, ``ctl``: the shared real WRF runs (recipe bilstm_wrf_mskf with its
  split replaced: train on the other three runs, validation from their last frames, test on the
  held-out one; qv090 triggers in ~1 % of columns and is never a test run);
- ``testbed_plus4k``: the testbed's WRF-format sets, train on the historical one, test on +4K
  (recipe bilstm_testbed_wrf_plus4k; needs the testbed under $PARAMLIB_TESTBED).

Each representation (`REPRESENTATIONS`: overrides of training/configs/bilstm_*.yaml) trains
once per seed through ``paramlib train`` (one torch thread, ``--jobs`` runs at a time), and one
``paramlib evaluate`` per fold scores every model on the fold's test split. The table gives,
per fold and model, trigger F1 and the heating (RTHCUTEN) R² on the truly triggered columns,
mean ± std over the seeds (metric definitions: paramlib/evaluate/metrics.py).

    .venv/bin/python benchmarks/bilstm_extrapolation.py --out build/extrapolation \\
        --json build/extrapolation/extrapolation.json

Stores, runs and reports stay under --out; a finished run (its model.pt exists) is reused, so
an interrupted experiment resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_json import write_json  # noqa: E402

PARAMLIB = [sys.executable, "-m", "paramlib"]
THERMODYNAMIC = "[t,th,qv,p,rho,pi]"  # host inputs the invariant features replace
REPRESENTATIONS: dict[str, list[str]] = {
    "physical": ["model.representation=physical", "model.scaling=level"],
    "physical_field": ["model.representation=physical", "model.scaling=field"],
    "invariant": [
        "model.representation=invariant",
        "model.scaling=field",
        f"model.drop_inputs={THERMODYNAMIC}",
    ],
}
WRF_RUNS = ("ctl", "qv090", "qv110", "shear2x")
BASELINES = ("persistence", "climatology")


@dataclass(frozen=True)
class Fold:
    name: str
    recipe: Path
    config: Path
    test_run: str | None  # the WRF run held out; None: the recipe's own split


def fold(name: str) -> Fold:
    if name == "testbed_plus4k":
        return Fold(
            name,
            ROOT / "training/recipes/bilstm_testbed_wrf_plus4k.yaml",
            ROOT / "training/configs/bilstm_testbed_wrf_plus4k.yaml",
            None,
        )
    if name not in WRF_RUNS or name == "qv090":
        raise SystemExit(f"--folds: {name!r} is not one of qv110, shear2x, ctl, testbed_plus4k")
    return Fold(
        name,
        ROOT / "training/recipes/bilstm_wrf_mskf.yaml",
        ROOT / "training/configs/bilstm_wrf_mskf.yaml",
        f"wrf_mskf_{name}",
    )


def run(command: Sequence[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}); see {log}")


def build_store(spec: Fold, out: Path) -> Path:
    store = out / "stores" / f"{spec.name}.zarr"
    if store.exists():
        return store
    recipe = yaml.safe_load(spec.recipe.read_text())
    if spec.test_run is not None:
        runs = [f"wrf_mskf_{r}" for r in WRF_RUNS]
        recipe["split"]["train"] = [r for r in runs if r != spec.test_run]
        recipe["split"]["test"] = [spec.test_run]
    recipe["name"] = f"{recipe['name']}_{spec.name}"
    path = out / "recipes" / f"{spec.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    run(
        [*PARAMLIB, "dataset", "build", str(path), "--out", str(store)],
        out / "logs" / f"{spec.name}_store.log",
    )
    return store


def train(spec: Fold, store: Path, rep: str, seed: int, args: argparse.Namespace) -> Path:
    folder = args.out / "runs" / spec.name / f"{rep}_s{seed}"
    if (folder / "model.pt").exists():
        return folder / "model.pt"
    overrides = [
        f"data.store={store}",
        f"train.seed={seed}",
        f"train.steps={args.steps}",
        "train.threads=1",
        *REPRESENTATIONS[rep],
        *args.set,
    ]
    resume = ["--resume"] if (folder / "checkpoint.pt").exists() else []  # an interrupted run
    start = time.monotonic()
    run(
        [*PARAMLIB, "train", str(spec.config), *overrides, "--out", str(folder), *resume],
        args.out / "logs" / f"{spec.name}_{rep}_s{seed}.log",
    )
    print(f"  {spec.name} {rep} seed {seed}: {time.monotonic() - start:.0f} s", flush=True)
    return folder / "model.pt"


def evaluate(spec: Fold, store: Path, models: dict[str, Path], out: Path) -> dict[str, Any]:
    report = out / "eval" / spec.name
    labels = [f"--label={label}={path}" for label, path in models.items()]
    run(
        [*PARAMLIB, "evaluate", *map(str, models.values()), *labels, "--dataset", str(store)]
        + ["--split", "test", "--out", str(report)],
        out / "logs" / f"{spec.name}_evaluate.log",
    )
    return json.loads((report / "metrics.json").read_text())


def scores(metrics: dict[str, Any], label: str) -> dict[str, float]:
    test = metrics["scores"][label]["test"]["all"]
    return {
        "trigger_f1": float(test["trigger"]["f1"][0]),
        "heating_r2_triggered": float(test["rthcuten_triggered"]["r2_all_levels"]),
    }


def summary(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="stores, runs and reports")
    parser.add_argument("--folds", default="qv110,shear2x,ctl,testbed_plus4k")
    parser.add_argument("--reps", default=",".join(REPRESENTATIONS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=1200, help="training steps per run")
    parser.add_argument("--jobs", type=int, default=2, help="training runs at a time")
    parser.add_argument(
        "--set", action="append", default=[], help="another config override for every run"
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    args.out = args.out.absolute()
    folds = [fold(name) for name in args.folds.split(",")]
    reps = args.reps.split(",")
    unknown = [r for r in reps if r not in REPRESENTATIONS]
    if unknown:
        raise SystemExit(f"--reps: unknown {unknown}; have {', '.join(REPRESENTATIONS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    results: dict[str, Any] = {"steps": args.steps, "seeds": seeds, "overrides": args.set}
    rows = []
    for spec in folds:
        store = build_store(spec, args.out)
        jobs = [(rep, seed) for rep in reps for seed in seeds]
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = [pool.submit(train, spec, store, rep, seed, args) for rep, seed in jobs]
            paths = [future.result() for future in futures]
        models = {f"{rep}_s{seed}": path for (rep, seed), path in zip(jobs, paths, strict=True)}
        metrics = evaluate(spec, store, models, args.out)
        per_fold: dict[str, Any] = {}
        labels = {rep: [f"{rep}_s{s}" for s in seeds] for rep in reps}
        labels.update({b: [b] for b in BASELINES if b in metrics["scores"]})
        for name, members in labels.items():
            each = [scores(metrics, label) for label in members]
            per_fold[name] = {key: summary([e[key] for e in each]) for key in each[0]}
            per_fold[name]["runs"] = each
            cells = [
                f"{per_fold[name][k]['mean']:.3f} ± {per_fold[name][k]['std']:.3f}"
                for k in ("trigger_f1", "heating_r2_triggered")
            ]
            rows.append([spec.name, name, *cells])
        results[spec.name] = per_fold

    print("\n| held out | model | trigger F1 | heating R² (triggered) |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

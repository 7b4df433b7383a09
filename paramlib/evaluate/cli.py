"""``paramlib evaluate``: score model files or training runs on a store, or run the MF-RPN
comparison (`paramlib.evaluate.compare`). torch and matplotlib are imported in the handler."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from paramlib.cli import Subparsers
from paramlib.guards import UserInputError, check_output_path
from paramlib.paths import default_stores, demo_dir

SPLITS = ("val", "test")  # the testbed's historical and +4K


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score models on a store's splits: metrics.json, report.md/.html, figures",
        description="Score model files, run directories or checkpoints (ensembles exported"
        " with their members) on a training store's splits, streamed in chunks; or, with"
        " --compare, train and compare the MF-RPN configurations over several seeds.",
    )
    parser.add_argument(
        "models", nargs="*", metavar="MODEL", help="model file (.pt), run directory or checkpoint"
    )
    parser.add_argument("--dataset", help="store path or name (under $PARAMLIB_STORES)")
    parser.add_argument("--out", help="report directory (--work: WORK/report)")
    parser.add_argument(
        "--split",
        type=lambda text: text.split(","),
        help="comma-separated splits (default: val,test, those the store has)",
    )
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="LABEL=MODEL",
        help="name MODEL (as given) LABEL in the report (default: its run directory or stem)",
    )
    parser.add_argument("--workers", type=int, default=2, help="dask threads (default 2)")
    parser.add_argument(
        "--chunk-samples", type=int, default=4096, help="samples per chunk (default 4096)"
    )
    parser.add_argument(
        "--baseline",
        action="append",
        default=[],
        choices=("persistence", "climatology"),
        help="score this baseline beside the models (repeatable; MODELs may then be left out;"
        " default: both when a model is an MSKF emulator and the store has the *_prev fields)",
    )
    parser.add_argument(
        "--no-baselines", action="store_true", help="no default baselines for MSKF emulators"
    )
    parser.add_argument(
        "--ood-bands",
        type=int,
        default=4,
        help="level bands of the out-of-distribution report (default 4)",
    )
    parser.add_argument(
        "--compare", action="store_true", help="the MF-RPN comparison instead of MODELs"
    )
    parser.add_argument(
        "--runs-dir",
        default=str(demo_dir() / "runs"),
        help="--compare: run directories, trained where missing (default build/demo/runs)",
    )
    parser.add_argument(
        "--stores",
        help="--compare: store folder (default $PARAMLIB_STORES, else build/demo/stores)",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="--compare: seeds (default 0 1 2)"
    )
    parser.add_argument(
        "--variant", default="small", help="--compare: config variant (default small)"
    )
    parser.add_argument(
        "--work",
        help="--compare from nothing: the variant's testbed, stores, runs and report under WORK"
        " (paramlib.evaluate.study)",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="--compare: training processes at a time (default 1)"
    )
    parser.set_defaults(func=_evaluate)


def _labels(pairs: list[str], models: list[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        label, sep, model = pair.partition("=")
        if not sep or model not in models:
            raise ValueError(f"--label {pair}: expected LABEL=MODEL with MODEL one of {models}")
        labels[model] = label
    return labels


def _evaluate(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)  # dask's threads run the chunks in parallel
    try:
        if args.compare:
            from paramlib.evaluate.compare import compare_models

            if args.models or args.dataset:
                raise ValueError("--compare trains and picks its models and store itself")
            if args.jobs < 1:
                raise UserInputError(f"--jobs {args.jobs}: expected at least 1")
            if args.work:
                from paramlib.evaluate.study import run_study

                if args.out or args.stores:
                    raise UserInputError("--work: the report and stores go under WORK")
                run_study(args.work, args.variant, args.seeds, jobs=args.jobs)
                return 0
            stores = args.stores or default_stores()
            out = _required_out(args)
            compare_models(
                stores, args.runs_dir, args.seeds, out, variant=args.variant, jobs=args.jobs
            )
            return 0
        return _score(args)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as error:
        print(f"paramlib evaluate: {error}", file=sys.stderr)
        return 2


def _required_out(args: argparse.Namespace) -> str:
    if not args.out:
        raise UserInputError("--out: the report directory is required (or --compare --work)")
    return str(args.out)


def _score(args: argparse.Namespace) -> int:
    import zarr

    from paramlib.evaluate.baselines import BASELINES, available
    from paramlib.evaluate.engine import evaluate
    from paramlib.evaluate.report import write_report
    from paramlib.evaluate.sources import Predictor, load_model, resolve_store

    if not (args.models or args.baseline) or not args.dataset:
        raise UserInputError("give MODEL(s) or --baseline, and --dataset (or --compare)")
    if args.baseline and args.no_baselines:
        raise UserInputError("--baseline and --no-baselines: give one of them")
    if args.ood_bands < 1:
        raise UserInputError(f"--ood-bands {args.ood_bands}: expected at least 1")
    check_output_path(_required_out(args), "--out", "dir")
    labels = _labels(args.label, args.models)
    store = resolve_store(args.dataset)
    groups = set(zarr.open_group(str(store), mode="r").group_keys())
    splits = args.split or [s for s in SPLITS if s in groups]
    if not splits:
        raise UserInputError(f"--dataset {store}: no val or test split; name one with --split")
    models: list[Predictor] = [load_model(model, labels.get(model)) for model in args.models]
    names = list(dict.fromkeys(args.baseline))
    if not names and not args.no_baselines and any(model.is_mskf for model in models):
        names = available(store, splits[0])
    models += [BASELINES[name](store, splits[0]) for name in names]
    results = evaluate(
        models,
        store,
        splits,
        chunk_samples=args.chunk_samples,
        workers=args.workers,
        ood_bands=args.ood_bands,
    )
    report = write_report(results, args.out)
    print(f"[paramlib evaluate] {report}, {Path(args.out) / 'report.md'}, metrics.json")
    return 0

"""``paramlib couple``: coupled runs of the column host model ``paramlib_scm``.

    paramlib couple reference --scenario historical|plus4k [--columns N --days D --dt S
                              --output-every K --seed S --spinup-days D] --out DIR
    paramlib couple run [MODEL.pt] --scenario historical|plus4k --mode physics|ml|hybrid|stochastic
                        [--reference DIR | --columns N --days D --dt S ...] [--spread-max W
                        --ood-margin F --member-seed S --no-fix-water --no-fix-precip
                        --p-zero-above PA --allow-missing-model --sha256 HEX] [--ranks N
                        --threads N --chunk-size N --device cpu|cuda] [--out DIR]
    paramlib couple report RUN... [--reference DIR ...] --out DIR
    paramlib couple study --work DIR [--seeds S ...] [--models CONFIG ...] [--columns N --days D]

``--testbed DIR`` (default $PARAMLIB_TESTBED, else build/demo/testbed) is the testbed the model
was trained on: its tuned Betts-Miller, WTG reference SST and spin-up. Exit status: 0 done,
1 a run failed (its messages are printed; a run that stopped after it began keeps the records it
wrote, and its run_status says why), 2 bad arguments (an --out that cannot be written included).
In hybrid mode a model file with the output ``ood_score`` (``paramlib ood calibrate``) falls back
where that score is above 1, and --spread-max / --ood-margin are unused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from paramlib.cli import Subparsers
from paramlib.guards import UserInputError, check_output_path
from paramlib.ood_settings import THRESHOLD_SOURCES


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("couple", help="coupled runs of the column host paramlib_scm")
    commands = parser.add_subparsers(dest="couple_command", metavar="COMMAND", required=True)

    reference = commands.add_parser(
        "reference", help="the high-fidelity reference (Emanuel, stepped from Python)"
    )
    _scenario(reference)
    _setup(reference)
    reference.add_argument("--spinup-days", type=float, help="default: the testbed's spin-up")
    reference.add_argument("--out", type=Path, required=True, help="directory to write")
    reference.set_defaults(func=_reference)

    run = commands.add_parser("run", help="one coupled run of paramlib_scm")
    run.add_argument("model", nargs="?", type=Path, help="model file (not needed for physics)")
    _scenario(run)
    run.add_argument(
        "--sha256",
        default="",
        help="the model file's expected SHA-256 (`paramlib export` prints it): checked before"
        " the file is loaded",
    )
    run.add_argument("--mode", required=True, choices=("physics", "ml", "hybrid", "stochastic"))
    run.add_argument(
        "--reference",
        type=Path,
        help="a `couple reference` directory: its columns, start, length and step",
    )
    _setup(run)
    run.add_argument(
        "--spread-max",
        type=float,
        default=200.0,
        help="hybrid, a model without an ood_score output: column spread (W m-2) above which"
        " physics runs (default 200); a model with one falls back where ood_score > 1",
    )
    run.add_argument(
        "--ood-margin",
        type=float,
        default=0.0,
        help="hybrid, a model without an ood_score output: widen each training range by this"
        " fraction of its width (default 0)",
    )
    run.add_argument("--member-seed", type=int, default=0, help="stochastic: the draws' seed")
    run.add_argument(
        "--allow-missing-model",
        action="store_true",
        help="hybrid: run Betts-Miller alone when the model file does not exist (default: error)",
    )
    run.add_argument("--no-fix-water", action="store_true", help="allow negative humidity")
    run.add_argument(
        "--no-fix-precip",
        action="store_true",
        help="keep the model's precipitation (not -int dq/dt dp / g)",
    )
    run.add_argument(
        "--p-zero-above",
        type=float,
        default=0.0,
        help="zero the tendencies where p is below this (Pa; 0: off)",
    )
    run.add_argument("--ranks", type=int, default=1, help="MPI ranks (mpirun -n)")
    run.add_argument("--threads", type=int, default=1, help="OpenMP threads per rank")
    run.add_argument("--chunk-size", type=int, default=16, help="columns per interface call")
    run.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    run.add_argument("--out", type=Path, help="default runs/couple/<model>-<scenario>-<mode>")
    run.set_defaults(func=_run)

    report = commands.add_parser("report", help="plots and the drift / fallback table")
    report.add_argument("runs", nargs="+", type=Path, help="run directories or output files")
    report.add_argument(
        "--reference",
        type=Path,
        action="append",
        default=[],
        help="reference directory (one per scenario)",
    )
    report.add_argument("--out", type=Path, required=True)
    report.set_defaults(func=_report)

    study = commands.add_parser(
        "study",
        help="the models of `paramlib evaluate --compare --work DIR` online, every seed"
        " (paramlib.couple.study)",
    )
    study.add_argument("--work", type=Path, required=True, help="the study's folder")
    study.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    study.add_argument(
        "--models",
        nargs="+",
        metavar="CONFIG",
        help="configs whose runs to couple (default rpn_hf_only mfrpn_hf_of_bm_and_x)",
    )
    study.add_argument(
        "--ood",
        choices=THRESHOLD_SOURCES,
        default="host",
        help="hybrid threshold: on the historical ml run's own scores (host, default) or the"
        " offline validation split (val)",
    )
    _setup(study)
    study.set_defaults(func=_study)


def _scenario(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", required=True, choices=("historical", "plus4k"))
    parser.add_argument(
        "--testbed",
        type=Path,
        help="the model's testbed (default $PARAMLIB_TESTBED, else build/demo/testbed)",
    )


def _setup(parser: argparse.ArgumentParser) -> None:
    from paramlib.couple.inputs import RunSetup

    d = RunSetup()
    parser.add_argument("--columns", type=int, default=d.ncol, help=f"default {d.ncol}")
    parser.add_argument("--days", type=float, default=d.days, help=f"default {d.days:g}")
    parser.add_argument("--dt", type=float, default=d.dt_s, help=f"step, s (default {d.dt_s:g})")
    parser.add_argument(
        "--output-every",
        type=int,
        default=d.output_every,
        help=f"steps per output record (default {d.output_every})",
    )
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of the column draw")


def _run_setup(args: argparse.Namespace) -> object:
    from paramlib.couple.inputs import RunSetup

    return RunSetup(
        ncol=args.columns,
        days=args.days,
        dt_s=args.dt,
        output_every=args.output_every,
        seed=args.seed,
    )


def _reference(args: argparse.Namespace) -> int:
    from paramlib.couple.inputs import CoupleError, TestbedClimate
    from paramlib.couple.reference import reference
    from paramlib.paths import default_testbed

    try:
        check_output_path(args.out, "--out", "dir")
        climate = TestbedClimate.read(args.testbed or default_testbed())
        out = reference(args.out, args.scenario, _run_setup(args), climate, args.spinup_days)
    except (CoupleError, UserInputError) as error:
        print(f"paramlib couple reference: {error}", file=sys.stderr)
        return 2
    print(f"[paramlib couple] reference {args.scenario}: {out}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from paramlib.couple.inputs import CoupleError, Coupling, model_name
    from paramlib.couple.scm import run_coupled

    try:
        coupling = Coupling(
            mode=args.mode,
            model=args.model,
            allow_missing_model=args.allow_missing_model,
            model_sha256=args.sha256,
            spread_max=args.spread_max,
            ood_margin=args.ood_margin,
            seed=args.member_seed,
            fix_water=not args.no_fix_water,
            fix_precip=not args.no_fix_precip,
            p_zero_above=args.p_zero_above,
        )
        setup = None if args.reference else _run_setup(args)
        model = "physics" if args.model is None else model_name(args.model)
        out = args.out or Path("runs") / "couple" / f"{model}-{args.scenario}-{args.mode}"
        check_output_path(out, "--out", "dir")
    except (CoupleError, UserInputError) as error:
        print(f"paramlib couple run: {error}", file=sys.stderr)
        return 2
    try:
        result = run_coupled(
            out,
            args.scenario,
            coupling,
            setup=setup,
            reference=args.reference,
            testbed=args.testbed,
            ranks=args.ranks,
            threads=args.threads,
            chunk_size=args.chunk_size,
            device=args.device,
            check=False,
        )
    except CoupleError as error:
        print(f"paramlib couple run: {error}", file=sys.stderr)
        return 1
    sys.stdout.write(result.stdout)
    if result.stderr:
        sys.stderr.write(result.stderr)
    data = result.open()
    # Steps a failed run never reached hold netCDF's integer fill value (negative).
    steps = data["nonfinite_step"]
    nonfinite = int(steps.where(steps >= 0, 0).sum())
    print(
        f"[paramlib couple] {result.output}: {data.sizes['time']} records, fallback fraction "
        f"{float(data['fallback_fraction'].mean()):.3f}, "
        + (f"{nonfinite} column steps with NaN/Inf model outputs, " if nonfinite else "")
        + f"{data.attrs.get('run_status')}"
    )
    return 0 if result.completed else 1


def _report(args: argparse.Namespace) -> int:
    from paramlib.couple.inputs import CoupleError
    from paramlib.couple.report import markdown_table, report

    try:
        check_output_path(args.out, "--out", "dir")
        rows = report(args.runs, args.out, args.reference)
    except (CoupleError, UserInputError) as error:
        print(f"paramlib couple report: {error}", file=sys.stderr)
        return 2
    print(markdown_table(rows), end="")
    print(f"[paramlib couple] plots and table in {args.out}")
    return 0


def _study(args: argparse.Namespace) -> int:
    from paramlib.couple.inputs import CoupleError
    from paramlib.couple.study import MODELS, online_study

    models = {name: name for name in args.models} if args.models else MODELS
    missing = [
        str(args.work / "runs" / config / "model.pt")
        for config in models.values()
        if not (args.work / "runs" / config / "model.pt").is_file()
    ]
    try:
        if not (args.work / "testbed").is_dir() or missing:
            raise UserInputError(
                f"--work {args.work}: no testbed or no trained run"
                f" ({', '.join(missing) or 'testbed'}); run `paramlib evaluate --compare"
                " --variant VARIANT --work DIR` first"
            )
        summary = online_study(args.work, args.seeds, models, _run_setup(args), ood=args.ood)
    except (CoupleError, UserInputError) as error:
        print(f"paramlib couple study: {error}", file=sys.stderr)
        return 2
    print(summary.read_text(), end="")
    print(f"[paramlib couple] study summary: {summary}")
    return 0

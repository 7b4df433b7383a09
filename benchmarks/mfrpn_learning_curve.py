"""Learning curve of the MF-RPN comparison: do more steps, more data or wider nets change it?

Every point FRACTION:STEPS[:WIDTH] trains the compared configs (`--configs`) for every seed on
the first FRACTION of the historical HF run's frames (its validation split the last 20 % of
those; the +4K test split and the LF and oracle stores stay whole), for STEPS steps, with
WIDTH x 3 hidden layers when given (else the variant's), and scores them as
``paramlib evaluate --compare`` does (one report per point under WORK/curve/). The table gives
the +4K R² of the column-integrated heating per config (mean ± std over seeds) and the fraction
of the HF-only -> oracle gap each MF composition closes, for the column and per level band.

    .venv/bin/paramlib evaluate --compare --variant medium --work build/study_medium --jobs 2
    .venv/bin/python benchmarks/mfrpn_learning_curve.py --work build/study_medium \\
        --points 1:1000 1:3000 1:9000 0.25:3000 0.5:3000 1:3000:256 --jobs 2 \\
        --json build/study_medium/curve.json

`--set KEY=VALUE` (repeatable) overrides every run of every point, e.g. the input
representation (``--set model.representation=invariant --set model.scaling=field --tag
invariant``); its runs and reports carry ``--tag``. The point at the variant's own steps, width
and all data, without --set, reuses the study's runs (WORK/runs); finished runs are kept, so an
interrupted curve resumes. With --json, the figure goes beside it (``.png``). The testbed and
stores are built first when WORK lacks them (`paramlib.evaluate.study`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from bench_json import publish

from paramlib.evaluate.compare import BANDS, compare_models
from paramlib.evaluate.study import STUDY_RECIPES, build_stores, ensure_testbed
from paramlib.paths import CONFIGS, RECIPES
from paramlib.train.config import load_config

HF_RECIPE, HF_SOURCE = "mfrpn_hf_testbed", "testbed_hf_historical"
CONFIGS_DEFAULT = ("rpn_hf_only", "mfrpn_hf_of_lf_and_x", "mfrpn_hf_of_bm_and_x", "rpn_oracle")
TITLE = "R² column +4K"


def parse_point(text: str) -> tuple[float, int, int | None]:
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        fraction, steps = float(parts[0]), int(parts[1])
        width = int(parts[2]) if len(parts) == 3 else None
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected FRACTION:STEPS[:WIDTH], e.g. 0.5:3000 or 1:3000:256"
        ) from None
    if not 0 < fraction <= 1 or steps < 1 or (width is not None and width < 1):
        raise argparse.ArgumentTypeError(f"{text!r}: fraction in (0, 1], steps and width >= 1")
    return fraction, steps, width


def fraction_stores(work: Path, fraction: float) -> Path:
    """A stores folder whose HF store holds the first `fraction` of the historical HF frames
    (the other stores linked from WORK/stores)."""
    if fraction == 1:
        return work / "stores"
    folder = work / "curve" / f"stores-f{fraction:g}"
    folder.mkdir(parents=True, exist_ok=True)
    for path in STUDY_RECIPES:
        link = folder / f"{path.stem}.zarr"
        if path.stem != HF_RECIPE and not link.exists():
            link.symlink_to((work / "stores" / link.name).resolve())
    recipe = yaml.safe_load((RECIPES / f"{HF_RECIPE}.yaml").read_text())
    recipe.setdefault("source_fractions", {})[HF_SOURCE] = {"stop": fraction}
    path = folder / f"{HF_RECIPE}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    build_stores(work / "testbed", folder, [path], print)
    return folder


def run_point(
    work: Path,
    point: tuple[float, int, int | None],
    configs: list[str],
    variant: str,
    seeds: list[int],
    jobs: int,
    settings: list[str],
    tag_prefix: str,
) -> dict[str, Any]:
    fraction, steps, width = point
    paths = [CONFIGS / f"{name}.yaml" for name in configs]
    own = load_config(paths[0], [], variant)
    hidden = list(own.model.hidden) if width is None else [width] * 3
    own_point = (
        fraction == 1 and steps == own.train.steps and hidden == own.model.hidden and not settings
    )
    tag = tag_prefix + f"f{fraction:g}-s{steps}" + ("" if width is None else f"-w{width}")
    overrides = [f"train.steps={steps}", f"model.hidden={json.dumps(hidden)}", *settings]
    out = work / "curve" / f"report-{tag}"
    compare_models(
        fraction_stores(work, fraction),
        work / "runs" if own_point else work / "curve" / f"runs-{tag}",
        seeds,
        out,
        configs=paths,
        variant=variant,
        jobs=jobs,
        overrides=overrides,
        log=lambda text: print(f"[{tag}] {text}", flush=True),
    )
    comparison = json.loads((out / "metrics.json").read_text())["comparison"]
    return {
        "point": tag,
        "settings": settings,
        "fraction": fraction,
        "steps": steps,
        "hidden": hidden,
        "r2_column_plus4k": {
            name: {k: row[TITLE][k] for k in ("mean", "std")}
            for name, row in comparison["table"].items()
        },
        "gap_closed": comparison["gap_closed"],
        "gap_closed_bands": comparison["gap_closed_bands"],
        "report": str(out / "report.md"),
    }


def plot(report: dict[str, Any], path: Path) -> None:
    """R² column +4K per config at every point, mean ± std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = report["points"]
    figure, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(points)), 3.6))
    width = 0.8 / len(report["configs"])
    for i, config in enumerate(report["configs"]):
        cells = [p["r2_column_plus4k"].get(config, {}) for p in points]
        means = [c.get("mean") if c.get("mean") is not None else float("nan") for c in cells]
        stds = [c.get("std") or 0.0 for c in cells]
        x = [j + (i - (len(report["configs"]) - 1) / 2) * width for j in range(len(points))]
        ax.bar(x, means, width, yerr=stds, capsize=2, label=config)
    ax.set_xticks(range(len(points)), [p["point"] for p in points], fontsize=7)
    ax.set_ylabel("R² column heating, +4K")
    ax.set_ylim(bottom=max(-1.0, ax.get_ylim()[0]))
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    print(f"wrote {path}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def print_table(report: dict[str, Any]) -> None:
    configs = report["configs"]
    mf = [c for c in configs if c.startswith("mfrpn")]
    head = ["point", *(f"R² col +4K {c}" for c in configs)]
    head += [f"gap {c} (col/{'/'.join(BANDS)})" for c in mf]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in report["points"]:
        cells = [row["point"]]
        for c in configs:
            r2 = row["r2_column_plus4k"].get(c, {})
            cells.append(f"{_fmt(r2.get('mean'))} ± {_fmt(r2.get('std'))}")
        for c in mf:
            gaps = [row["gap_closed"].get(c)]
            gaps += [row["gap_closed_bands"][band].get(c) for band in BANDS]
            cells.append(" / ".join(_fmt(g) for g in gaps))
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="the study's folder")
    parser.add_argument("--variant", default="medium", help="config variant (default medium)")
    parser.add_argument("--points", type=parse_point, nargs="+", required=True)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS_DEFAULT))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="training processes at a time")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override every run"
    )
    parser.add_argument("--tag", default="", help="names the runs and reports of --set")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if args.set and not args.tag:
        parser.error("--set needs --tag (its runs must not mix with the plain ones)")
    if not {"rpn_hf_only", "rpn_oracle"} <= set(args.configs):
        parser.error("--configs must include rpn_hf_only and rpn_oracle (the gap's two ends)")
    ensure_testbed(args.work / "testbed", args.variant, 0, print)
    build_stores(args.work / "testbed", args.work / "stores", STUDY_RECIPES, print)
    points = [
        run_point(
            args.work,
            point,
            args.configs,
            args.variant,
            args.seeds,
            args.jobs,
            args.set,
            f"{args.tag}-" if args.tag else "",
        )
        for point in args.points
    ]
    report: dict[str, Any] = {
        "variant": args.variant,
        "seeds": args.seeds,
        "configs": args.configs,
        "settings": args.set,
    }
    report["points"] = points
    if args.json:
        plot(report, args.json.with_suffix(".png"))
    return publish(report, print_table, args.json)


if __name__ == "__main__":
    sys.exit(main())

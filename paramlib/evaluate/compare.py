"""The MF-RPN paper's headline comparison, reproduced on the testbed (Bhouri et al. 2023).

LF-RPN, HF-only RPN, the deterministic MLP, the three MF-RPN compositions and the oracle are
trained (the small variants by default, one run per seed; finished runs are kept) and scored on the
``mfrpn_hf_testbed`` store: its val split is the historical climate (the last frames of the
historical HF run, never trained on) and its test split +4K (the last 40 % of the +4K run;
the oracle trains on the first half). One table and one figure give each configuration's
mean ± standard deviation over the seeds, and the fraction of the HF-only -> oracle gap each
MF composition closes at +4K:

    gap closed = (R²_MF - R²_HF-only) / (R²_oracle - R²_HF-only)

in R² of column-integrated heating (sum cp heating dp/g, W m-2), from the seed means. On one
test set R² = 1 - MSE / variance, so this is also the fraction of the mean squared error
gap closed. 1: as good as the oracle; 0: no better than HF-only; < 0: worse.

Run directories: ``RUNS/NAME`` for a config's own seed (where `paramlib train` and the demo
put it) and ``RUNS/NAME-seedS`` for the others.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from paramlib.evaluate.engine import ALL, evaluate
from paramlib.evaluate.report import (
    Figure,
    Heading,
    Paragraph,
    Table,
    fmt,
    level_mean,
    render_markdown,
    write_report,
)
from paramlib.evaluate.sources import Model, load_model, resolve_store
from paramlib.paths import CONFIGS, STORES_ENV
from paramlib.train.config import Config, load_config
from paramlib.train.distributed import Placement
from paramlib.train.loop import train

# (config name, what it is), in the order of the table.
COMPARED: tuple[tuple[str, str], ...] = (
    ("rpn_lf_only", "LF-RPN (Betts-Miller data only)"),
    ("rpn_hf_only", "HF-only RPN"),
    ("mlp_hf", "deterministic MLP (HF)"),
    ("mfrpn_hf_of_lf", "MF-RPN HF(LF(x))"),
    ("mfrpn_hf_of_lf_and_x", "MF-RPN HF([LF(x), x])"),
    ("mfrpn_hf_of_bm_and_x", "MF-RPN HF([BM(x), x])"),
    ("rpn_oracle", "oracle RPN (trained on +4K too)"),
)
DATASET = "mfrpn_hf_testbed"
HISTORICAL, PLUS4K = "val", "test"
BANDS = ("lower", "mid", "upper")  # thirds of the levels, surface first (engine.R2_BANDS)
FIELD = "heating"
# (column title, split, field, score)
COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("R² hist.", HISTORICAL, FIELD, "r2"),
    ("R² +4K", PLUS4K, FIELD, "r2"),
    ("R² column hist.", HISTORICAL, FIELD + "_column", "r2"),
    ("R² column +4K", PLUS4K, FIELD + "_column", "r2"),
    ("RMSE +4K (W m-2)", PLUS4K, FIELD, "rmse"),
    ("CRPS +4K (W m-2)", PLUS4K, FIELD, "crps"),
    ("cov. 90 % +4K", PLUS4K, FIELD, "coverage90"),
    ("spread/skill +4K", PLUS4K, FIELD, "spread_skill_ratio"),
)
# R² over each band's levels (engine.R2_BANDS), in a table of their own
BAND_COLUMNS = tuple(
    (f"R² +4K {band}", PLUS4K, FIELD, f"r2_band{i}") for i, band in enumerate(BANDS)
)
GAP = (PLUS4K, FIELD + "_column", "r2")
TICKS = (-100.0, -10.0, -1.0, -0.5, 0.0, 0.5, 1.0)


def run_dir(runs_root: Path, name: str, seed: int, own_seed: int) -> Path:
    return runs_root / (name if seed == own_seed else f"{name}-seed{seed}")


def _train_one(config: Config, folder: Path) -> int:
    return train(config, folder, resume=True, placement=Placement())


def train_runs(
    configs: Sequence[Path],
    seeds: Sequence[int],
    runs_root: Path,
    variant: str | None,
    log: Callable[[str], None],
    jobs: int = 1,
    overrides: Sequence[str] = (),
) -> dict[str, dict[int, Path]]:
    """Train what is missing, `jobs` runs at a time (each in its own process when jobs > 1),
    with the command-line style `overrides` after the variant: {config name: {seed: run
    directory}}."""
    runs: dict[str, dict[int, Path]] = {}
    todo: list[tuple[Config, Path]] = []
    for path in configs:
        own = load_config(path, [], variant)
        for seed in seeds:
            config = load_config(
                path, [*overrides, f"train.seed={seed}", "train.progress=false"], variant
            )
            folder = run_dir(runs_root, own.name, seed, own.train.seed)
            todo.append((config, folder))
            runs.setdefault(own.name, {})[seed] = folder
    if jobs > 1:
        # spawn: a forked child would inherit this process's torch threads and locks
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=context) as pool:
            statuses = list(pool.map(_train_one, *zip(*todo, strict=True)))
    else:
        statuses = [_train_one(config, folder) for config, folder in todo]
    for (_, folder), status in zip(todo, statuses, strict=True):
        if status != 0:
            raise RuntimeError(f"training {folder} exited with status {status}")
    for name, by_seed in runs.items():
        log(f"{name}: seeds {', '.join(map(str, by_seed))} in {runs_root}")
    return runs


def label(name: str, seed: int) -> str:
    return f"{name}/seed{seed}"


def _nan(value: float | None) -> float:
    return np.nan if value is None else float(value)


def _combine(values: Sequence[Any]) -> Any:
    """The seeds' results merged: numbers (None = undefined) by their mean, lists element by
    element, mappings key by key."""
    first = values[0]
    if isinstance(first, Mapping):
        return {k: _combine([v[k] for v in values]) for k in first}
    if isinstance(first, list):
        return [_combine(list(items)) for items in zip(*values, strict=True)]
    if isinstance(first, str):
        return first
    numbers = np.array([_nan(v) for v in values])
    finite = numbers[np.isfinite(numbers)]
    return float(finite.mean()) if finite.size else None


def _score(scores: Mapping[str, Any], field: str, score: str) -> float | None:
    """`level_mean`'s number, or for ``r2_bandI`` the R² over band I's levels."""
    if score.startswith("r2_band"):
        bands = scores.get(field, {}).get("r2_bands")
        return bands[int(score.removeprefix("r2_band"))]["r2"] if bands else None
    return level_mean(scores, field, score)


def seed_statistics(
    results: Mapping[str, Any], runs: Mapping[str, Mapping[int, Path]]
) -> dict[str, dict[str, dict[str, Any]]]:
    """{config: {column title: {"mean", "std", "seeds": [per seed]}}} for `COLUMNS`; std over
    seeds with ddof 1."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for name, by_seed in runs.items():
        table[name] = {}
        for title, split, field, score in (*COLUMNS, *BAND_COLUMNS):
            values = [
                _score(results["scores"][label(name, s)][split][ALL], field, score) for s in by_seed
            ]
            numbers = np.array([_nan(v) for v in values])
            finite = numbers[np.isfinite(numbers)]
            table[name][title] = {
                "mean": float(finite.mean()) if finite.size else None,
                "std": float(finite.std(ddof=1)) if finite.size > 1 else None,
                "seeds": values,
            }
    return table


def gap_closed(
    table: Mapping[str, Mapping[str, Mapping[str, Any]]],
    baseline: str,
    oracle: str,
    gap: Sequence[str] = GAP,
) -> dict[str, float | None]:
    """Per config, (m - m_baseline) / (m_oracle - m_baseline) of the `gap` score's seed means
    (module docstring); only when both ends are in the table."""
    title = next(t for t, *rest in (*COLUMNS, *BAND_COLUMNS) if tuple(rest) == tuple(gap))
    if baseline not in table or oracle not in table:
        return {}
    low, high = table[baseline][title]["mean"], table[oracle][title]["mean"]
    if low is None or high is None or high == low:
        return {}
    return {
        name: None if row[title]["mean"] is None else (row[title]["mean"] - low) / (high - low)
        for name, row in table.items()
        if name not in (baseline, oracle)
    }


def _figure(
    table: Mapping[str, Mapping[str, Mapping[str, Any]]], names: Mapping[str, str], path: Path
) -> None:
    import matplotlib.pyplot as plt  # the report module chose the Agg backend

    configs = list(table)
    panels = (
        ("R² over all levels", ("R² hist.", "R² +4K")),
        ("R² of the column integral", ("R² column hist.", "R² column +4K")),
    )
    figure, axes = plt.subplots(1, len(panels), figsize=(12, 4.6))
    x = np.arange(len(configs))
    for ax, (heading, pair) in zip(axes, panels, strict=True):
        for offset, title in zip((-0.2, 0.2), pair, strict=True):
            means = [_nan(table[c][title]["mean"]) for c in configs]
            stds = [_nan(table[c][title]["std"]) for c in configs]
            ax.bar(x + offset, means, 0.4, yerr=stds, label=title, capsize=2)
        # Linear in [-1, 1], logarithmic beyond: +4K R² of -10 and 0.6 on one axis.
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_yticks(TICKS, [f"{t:g}" for t in TICKS])
        ax.set_ylim(top=1.05)
        ax.set_xticks(x, [names.get(c, c) for c in configs], rotation=35, ha="right", fontsize=7)
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.legend(fontsize=7, loc="lower left")
        ax.set_title(f"{FIELD}: {heading} (mean ± std over seeds)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def compare_models(
    stores_dir: str | os.PathLike[str],
    runs_root: str | os.PathLike[str],
    seeds: Sequence[int],
    out: str | os.PathLike[str],
    *,
    configs: Sequence[str | os.PathLike[str]] | None = None,
    variant: str | None = "small",
    dataset: str = DATASET,
    baseline: str = "rpn_hf_only",
    oracle: str = "rpn_oracle",
    log: Callable[[str], None] = print,
    progress: bool = False,
    jobs: int = 1,
    overrides: Sequence[str] = (),
) -> Path:
    """Train the missing runs (`configs`, default the `COMPARED` ones; stores read from
    `stores_dir`, set as $PARAMLIB_STORES), score them on `dataset`'s historical and +4K
    splits, write the report into `out`, print the table; returns report.html's path."""
    os.environ[STORES_ENV] = str(stores_dir)  # the configs' store folder
    paths = (
        [Path(c) for c in configs] if configs else [CONFIGS / f"{n}.yaml" for n in dict(COMPARED)]
    )
    runs = train_runs(paths, seeds, Path(runs_root), variant, log, jobs, overrides)
    models: list[Model] = [
        load_model(folder, label(name, seed))
        for name, by_seed in runs.items()
        for seed, folder in by_seed.items()
    ]
    store = resolve_store(Path(stores_dir) / f"{dataset}.zarr")
    results = evaluate(models, store, [HISTORICAL, PLUS4K], progress=progress)
    table = seed_statistics(results, runs)
    gaps = gap_closed(table, baseline, oracle)
    names = dict(COMPARED)
    headers = ["model", "config", *(t for t, *_ in COLUMNS), "gap closed +4K"]
    rows = [
        [
            names.get(name, name),
            name,
            *(fmt(row[t]["mean"], row[t]["std"]) for t, *_ in COLUMNS),
            fmt(gaps.get(name)),
        ]
        for name, row in table.items()
    ]
    band_gaps = {
        band: gap_closed(table, baseline, oracle, rest)
        for band, (_, *rest) in zip(BANDS, BAND_COLUMNS, strict=True)
    }
    band_headers = [
        "model",
        *(t for t, *_ in BAND_COLUMNS),
        *(f"gap closed {band}" for band in BANDS),
    ]
    band_rows = [
        [
            names.get(name, name),
            *(fmt(row[t]["mean"], row[t]["std"]) for t, *_ in BAND_COLUMNS),
            *(fmt(band_gaps[band].get(name)) for band in BANDS),
        ]
        for name, row in table.items()
    ]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _figure(table, names, out / "compare.png")
    splits = results["splits"]
    extra = [
        Heading("Historical vs +4K: the MF-RPN comparison"),
        Paragraph(
            f"{len(seeds)} seeds ({', '.join(map(str, seeds))}) per configuration, variant"
            f" {variant or 'full'}; mean ± standard deviation over seeds. Historical:"
            f" {splits[HISTORICAL]['label']}, {splits[HISTORICAL]['samples']} samples; +4K:"
            f" {splits[PLUS4K]['label']}, {splits[PLUS4K]['samples']} samples. Scores of"
            f" {FIELD} in W m-2 per layer (x cp x dp/g); R² over all levels and of the column"
            f" integral; RMSE, CRPS, coverage and spread/skill are means over levels. Gap"
            f" closed: (R²_MF - R²_HF-only) / (R²_oracle - R²_HF-only) of the column-integrated"
            f" {FIELD} at +4K, from the seed means. The score tables and figures further"
            f" down show each configuration's mean over its seeds."
        ),
        Table(headers, rows),
        Paragraph(
            f"By level band: R² of {FIELD} over the band's levels at +4K (thirds of the levels,"
            " surface first: lower, middle and upper troposphere) and the gap closed there."
        ),
        Table(band_headers, band_rows),
        Figure("compare.png", f"{FIELD} R², historical and +4K, mean ± std over seeds"),
    ]
    by_config = {
        **results,
        "models": {
            name: {
                **results["models"][label(name, next(iter(by_seed)))],
                "source": f"{Path(runs_root) / name}[-seedS], seeds {list(by_seed)}",
            }
            for name, by_seed in runs.items()
        },
        "scores": {
            name: _combine([results["scores"][label(name, s)] for s in by_seed])
            for name, by_seed in runs.items()
        },
    }
    metrics = {
        "comparison": {
            "seeds": list(seeds),
            "table": table,
            "gap_closed": gaps,
            "gap": GAP,
            "gap_closed_bands": band_gaps,
        },
        "evaluation": results,
    }
    report = write_report(by_config, out, extra, metrics)
    log(render_markdown([Table(headers, rows), Table(band_headers, band_rows)]))
    log(f"report: {report}")
    return report

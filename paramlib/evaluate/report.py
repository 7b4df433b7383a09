"""The evaluation report: DIR/metrics.json (every number), DIR/report.md and DIR/report.html
(the same content, built once as a list of blocks) and PNG figures (matplotlib, Agg backend).

Figures: R^2 and bias against level per model with the splits side by side (the testbed's
val split is the historical climate, its test split +4K), the splits' mean-over-levels R^2 as
bars, spread against RMSE per level (ensembles), and rank histograms (ensembles).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on build machines and clusters

import matplotlib.pyplot as plt  # noqa: E402  (after the backend choice)
import numpy as np  # noqa: E402

from paramlib.atomic import write_atomic  # noqa: E402
from paramlib.evaluate.engine import ALL  # noqa: E402
from paramlib.train import kinds  # noqa: E402

R2_FLOOR = -1.0  # profiles show R^2 from here to 1; lower values are drawn at the floor


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[str]]


@dataclass(frozen=True)
class Figure:
    file: str  # relative to the report
    caption: str


Block = Heading | Paragraph | Table | Figure


def render_markdown(blocks: Iterable[Block]) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(block.headers) + " |")
            lines.append("|" + "---|" * len(block.headers))
            lines += ["| " + " | ".join(row) + " |" for row in block.rows]
            lines.append("")
        else:
            lines += [f"![{block.caption}]({block.file})", "", f"*{block.caption}*", ""]
    return "\n".join(lines)


def render_html(blocks: Iterable[Block], title: str) -> str:
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in block.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        else:
            body.append(
                f'<figure><img src="{html.escape(block.file)}" alt="{html.escape(block.caption)}">'
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
            )
    style = (
        "body{font-family:sans-serif;max-width:80em;margin:auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;"
        "text-align:right}img{max-width:100%}"
    )
    return (
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def fmt(value: float | None, spread: float | None = None) -> str:
    """A score for a table: 3 significant digits, '-' when undefined, '± spread' if given."""
    if value is None or not math.isfinite(value):
        return "-"
    text = f"{value:.3g}"
    if spread is not None and math.isfinite(spread):
        text += f" ± {spread:.2g}"
    return text


def level_mean(scores: Mapping[str, Any], field: str, metric: str) -> float | None:
    """A field's score as one number: R^2 over all levels (`metrics.r2_all_levels`), other
    scores' mean over levels, or the value on its one level."""
    entry = scores.get(field)
    if entry is None or metric not in entry:
        return None
    if metric == "r2" and "r2_all_levels" in entry:
        return entry["r2_all_levels"]
    if "mean_over_levels" in entry:
        return entry["mean_over_levels"].get(metric)
    return entry[metric][0]


def _array(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def _profile_fields(results: Mapping[str, Any]) -> list[str]:
    return [name for name, info in results["fields"].items() if info["levels"]]


def _split_title(results: Mapping[str, Any], split: str) -> str:
    return results["splits"][split]["label"]


def _group(results: Mapping[str, Any], label: str, split: str) -> Mapping[str, Any]:
    """One model's scores on a split (all runs), by field; {} when it has none."""
    return results["scores"][label].get(split, {}).get(ALL, {})


def save_figure(figure: Any, legend_axes: Any, path: Path, fontsize: float = 7) -> bool:
    """Legend on `legend_axes`, tight layout, PNG at `path`, figure closed; True (drawn)."""
    legend_axes.legend(fontsize=fontsize)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def _profiles(results: Mapping[str, Any], metric: str, xlabel: str, path: Path) -> bool:
    """Per-level `metric` of each model: a row per field, a column per split."""
    fields = [f for f in _profile_fields(results) if not f.endswith("_triggered")]
    splits = list(results["splits"])
    if not fields or not splits:
        return False
    figure, axes = plt.subplots(
        len(fields), len(splits), figsize=(4.2 * len(splits), 3.6 * len(fields)), squeeze=False
    )
    for row, field in enumerate(fields):
        info = results["fields"][field]
        for col, split in enumerate(splits):
            ax = axes[row][col]
            for label in results["scores"]:
                scores = _group(results, label, split).get(field, {})
                if not scores:
                    continue
                values = _array(scores[metric])
                if metric == "r2":
                    values = np.maximum(values, R2_FLOOR)
                ax.plot(values, info["levels"][: len(values)], marker=".", label=label)
            ax.invert_yaxis()
            ax.axvline(1.0 if metric == "r2" else 0.0, color="grey", lw=0.5)
            if metric == "r2":
                ax.set_xlim(R2_FLOOR - 0.05, 1.05)
            ax.set_title(f"{field}: {_split_title(results, split)}", fontsize=9)
            ax.set_xlabel(xlabel.format(units=info["units"]))
            ax.set_ylabel(f"level ({info['level_units']})")
    return save_figure(figure, axes[0][0], path)


def _overview(results: Mapping[str, Any], path: Path) -> bool:
    """R^2 (all levels) per model and field, the splits side by side (bars)."""
    fields = [f for f in results["fields"] if not f.endswith("_triggered")]
    splits = list(results["splits"])
    labels = list(results["scores"])
    if not fields or not splits:
        return False
    figure, axes = plt.subplots(1, len(fields), figsize=(3.2 * len(fields), 3.4), squeeze=False)
    width = 0.8 / len(splits)
    for ax, field in zip(axes[0], fields, strict=True):
        for i, split in enumerate(splits):
            values = [level_mean(_group(results, label, split), field, "r2") for label in labels]
            heights = np.maximum(_array(values), R2_FLOOR)
            ax.bar(np.arange(len(labels)) + i * width, heights, width, label=split)
        ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels, rotation=60, ha="right")
        ax.set_ylim(R2_FLOOR, 1.0)
        ax.set_title(field, fontsize=9)
        ax.axhline(0.0, color="grey", lw=0.5)
    axes[0][0].set_ylabel("R² (all levels)")
    return save_figure(figure, axes[0][0], path)


def _ensemble_labels(results: Mapping[str, Any]) -> list[str]:
    return [label for label, info in results["models"].items() if info["members"] > 1]


def _spread_skill(results: Mapping[str, Any], path: Path) -> bool:
    """Spread against RMSE of the mean, one point per level and field, a panel per split
    (log axes: levels where both are 0, above the highest cloud, are left out)."""
    labels, splits = _ensemble_labels(results), list(results["splits"])
    fields = [f for f in _profile_fields(results) if not f.endswith("_triggered")]
    if not labels or not fields:
        return False
    figure, axes = plt.subplots(1, len(splits), figsize=(4.2 * len(splits), 4), squeeze=False)
    markers = "o^sv<>Dp"
    for ax, split in zip(axes[0], splits, strict=True):
        points = []
        for color, label in enumerate(labels):
            for k, field in enumerate(fields):
                scores = _group(results, label, split).get(field, {})
                if "spread" not in scores:
                    continue
                rmse, spread = _array(scores["rmse"]), _array(scores["spread"])
                shown = (rmse > 0) & (spread > 0)
                points += [rmse[shown], spread[shown]]
                ax.scatter(
                    rmse[shown],
                    spread[shown],
                    s=12,
                    color=f"C{color}",
                    marker=markers[k % len(markers)],
                    label=f"{label}: {field}",
                )
        if points:
            values = np.concatenate(points)
            ax.plot(*[[values.min(), values.max()]] * 2, color="grey", lw=0.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("RMSE of the ensemble mean (energy units)")
        ax.set_ylabel("ensemble spread")
        ax.set_title(_split_title(results, split), fontsize=9)
    return save_figure(figure, axes[0][0], path, 6)


def _rank_histograms(results: Mapping[str, Any], path: Path) -> bool:
    """Rank histograms (frequency x (M + 1): 1 is flat), a row per field, a column per split."""
    labels, splits = _ensemble_labels(results), list(results["splits"])
    fields = [f for f in results["fields"] if not f.endswith(("_triggered", "_column"))]
    if not labels or not fields:
        return False
    figure, axes = plt.subplots(
        len(fields), len(splits), figsize=(4 * len(splits), 2.6 * len(fields)), squeeze=False
    )
    for row, field in enumerate(fields):
        for col, split in enumerate(splits):
            ax = axes[row][col]
            for label in labels:
                scores = _group(results, label, split).get(field, {})
                if "rank_histogram" not in scores:
                    continue
                frequency = _array(scores["rank_histogram"])
                ax.step(
                    np.arange(len(frequency)), frequency * len(frequency), where="mid", label=label
                )
            ax.axhline(1.0, color="grey", lw=0.5)
            ax.set_title(f"{field}: {_split_title(results, split)}", fontsize=9)
            ax.set_xlabel("rank of the target among the members")
    axes[0][0].set_ylabel("frequency x (M + 1)")
    return save_figure(figure, axes[0][0], path)


FIGURES: tuple[tuple[str, Callable[[Mapping[str, Any], Path], bool], str], ...] = (
    (
        "r2_levels.png",
        lambda r, p: _profiles(r, "r2", "R²", p),
        f"R² per level, splits side by side (values below {R2_FLOOR:g} drawn at {R2_FLOOR:g})",
    ),
    (
        "bias_levels.png",
        lambda r, p: _profiles(r, "bias", "bias ({units})", p),
        "Bias (prediction - target) per level, splits side by side",
    ),
    (
        "r2_splits.png",
        _overview,
        f"R² (over all levels: 1 - sum SSE / sum SST) per model, splits side by side"
        f" (floored at {R2_FLOOR:g})",
    ),
    (
        "spread_skill.png",
        _spread_skill,
        "Spread against RMSE of the ensemble mean, one point per level (1:1 line: calibrated)",
    ),
    (
        "rank_histogram.png",
        _rank_histograms,
        "Rank histograms, pooled over levels (flat at 1 when calibrated; U: under-dispersed)",
    ),
)

# After R² and R² column: scores shown by their mean over levels, in SUMMARY_HEADERS' order.
SUMMARY_SCORES = (
    "mae",
    "rmse",
    "bias",
    "crps",
    "spread_skill_ratio",
    "spread_skill_corr",
    "coverage50",
    "coverage90",
)
SUMMARY_HEADERS = (
    "model",
    "field",
    "units",
    "R²",
    "R² column",
    "MAE",
    "RMSE",
    "bias",
    "CRPS",
    "spread/skill",
    "spread-skill corr",
    "cov. 50 %",
    "cov. 90 %",
)


def _summary_rows(results: Mapping[str, Any], split: str) -> list[list[str]]:
    rows = []
    fields = [f for f in results["fields"] if not f.endswith(("_column", "_triggered"))]
    for label in results["scores"]:
        scores = _group(results, label, split)
        for field in fields:
            if field not in scores:
                continue
            rows.append(
                [
                    label,
                    field,
                    results["fields"][field]["units"],
                    fmt(level_mean(scores, field, "r2")),
                    fmt(level_mean(scores, field + "_column", "r2")),
                    *(fmt(level_mean(scores, field, m)) for m in SUMMARY_SCORES),
                ]
            )
    return rows


def _trigger_blocks(results: Mapping[str, Any]) -> list[Block]:
    labels = [
        label
        for label, by_split in results["scores"].items()
        if any("trigger" in s[ALL] for s in by_split.values())
    ]
    if not labels:
        return []
    profiles = [f.removesuffix("_triggered") for f in results["fields"] if f.endswith("_triggered")]
    flux = [
        f
        for f, info in results["fields"].items()
        if not info["levels"] and info["units"] == "W m-2" and not f.endswith("_column")
    ]
    headers = ["model", "split", "run", "accuracy", "precision", "recall", "F1", "triggered / n"]
    headers += [f"R² {f} (triggered)" for f in profiles]
    headers += [h for f in flux for h in (f"R² {f}", f"bias {f} (W m-2)")]
    rows = []
    for label in labels:
        for split, by_group in results["scores"][label].items():
            groups = {ALL: by_group[ALL], **by_group["runs"]}
            for run, scores in groups.items():
                trigger = {k: v[0] for k, v in scores["trigger"].items()}
                rows.append(
                    [
                        label,
                        split,
                        run,
                        *(fmt(trigger[k]) for k in ("accuracy", "precision", "recall", "f1")),
                        f"{trigger['triggered']:.0f} / {trigger['n']:.0f}",
                        *(fmt(level_mean(scores, f + "_triggered", "r2")) for f in profiles),
                        *(fmt(level_mean(scores, f, m)) for f in flux for m in ("r2", "bias")),
                    ]
                )
    return [
        Heading("Convection trigger (MSKF emulators)"),
        Paragraph(
            "Trigger scores (the trigger rule: paramlib/evaluate/metrics.py); tendency R² (all"
            " levels) on the columns that truly triggered; precipitation on all columns. Per WRF"
            " run of each split, and all. Baselines (persistence, climatology:"
            " paramlib/evaluate/baselines.py) are scored the same way, on the same columns."
        ),
        Table(headers, rows),
    ]


DEFINITIONS = (
    "Every score, the energy units, the trigger rule and the out-of-distribution counts are"
    " defined once, in the docstring of paramlib/evaluate/metrics.py; the baselines in"
    " paramlib/evaluate/baselines.py. In the tables, a profile's R² is over all levels (1 - sum"
    " SSE / sum SST), its other scores their mean over levels; 'R² column' scores the column"
    " integral (W m-2)."
)


def _ood_blocks(results: Mapping[str, Any]) -> list[Block]:
    """The out-of-distribution table; models whose tables are equal (same training range)
    share rows."""
    shared: dict[str, list[str]] = {}
    for label, table in results.get("ood", {}).items():
        key = json.dumps(table, sort_keys=True)
        shared.setdefault(key, []).append(label)
    if not shared:
        return []
    headers = ["models", "split", "input", "levels", "outside / n", "fraction"]
    headers += ["median excess (σ)", "max excess (σ)"]
    rows = []
    for labels in shared.values():
        for split, by_field in results["ood"][labels[0]].items():
            for name, bands in by_field.items():
                rows += [
                    [
                        ", ".join(labels),
                        split,
                        name,
                        "{}-{}".format(*band["levels"]),
                        f"{band['outside']:.0f} / {band['n']:.0f}",
                        fmt(band["fraction"]),
                        fmt(band["median_sigma"]),
                        fmt(band["max_sigma"]),
                    ]
                    for band in bands
                ]
    return [
        Heading("Out of distribution"),
        Paragraph(
            "Per split, input field and band of levels: the columns with any level outside the"
            " model's training range (its valid_range), and by how far beyond it, in training"
            " standard deviations of the level (the store's normalisation): median and largest"
            " excess of those columns (definitions: paramlib/evaluate/metrics.py)."
        ),
        Table(headers, rows),
    ]


def report_blocks(results: Mapping[str, Any], out: Path) -> list[Block]:
    """The report's content; figures are written into `out` as they are made."""
    blocks: list[Block] = [
        Heading(f"Evaluation on {results['store']}", 1),
        Paragraph(
            f"Store {results['dataset']}; layer mass: {results.get('layer_mass', 'n/a')}."
            " Splits: "
            + "; ".join(
                f"{info['label']}, {info['samples']} samples" for info in results["splits"].values()
            )
            + "."
        ),
        Table(
            ("model", "source", "kind", "members", "outputs"),
            [
                [
                    label,
                    info["source"],
                    info["kind"],
                    str(info["members"]),
                    ", ".join(info["outputs"]),
                ]
                for label, info in results["models"].items()
            ],
        ),
        Paragraph(DEFINITIONS),
    ]
    if any(
        info["members"] == 1 and getattr(kinds.exported(info["kind"]), "ensemble", False)
        for info in results["models"].values()
    ):
        blocks.append(
            Paragraph(
                "Ensembles with members = 1 were given as mean_spread model files: scored on"
                " their mean. Pass the run directory (or a --output members file) for the"
                " ensemble scores."
            )
        )
    for split, info in results["splits"].items():
        blocks += [
            Heading(f"Scores: {info['label']}"),
            Table(SUMMARY_HEADERS, _summary_rows(results, split)),
        ]
    blocks += _trigger_blocks(results)
    blocks += _ood_blocks(results)
    blocks.append(Heading("Figures"))
    for name, draw, caption in FIGURES:
        if draw(results, out / name):
            blocks.append(Figure(name, caption))
    return blocks


def jsonable(value: Any) -> Any:
    """Plain JSON values: non-finite floats as null, numpy scalars as Python ones."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return jsonable(value.item())
    return value


def write_report(
    results: Mapping[str, Any],
    out: str | Path,
    extra: Sequence[Block] = (),
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """metrics.json (`metrics`, default `results`), the figures, report.md and report.html in
    `out`, with `extra` blocks after the title; returns the path of report.html."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # Each file whole or not at all: an earlier report stays readable until replaced.
    text = json.dumps(jsonable(metrics or results), indent=1, allow_nan=False)
    write_atomic(out / "metrics.json", lambda handle: handle.write(text.encode()))
    blocks = report_blocks(results, out)
    blocks[1:1] = list(extra)
    markdown = render_markdown(blocks)
    write_atomic(out / "report.md", lambda handle: handle.write(markdown.encode()))
    title = blocks[0].text if isinstance(blocks[0], Heading) else "paramlib evaluation"
    page = render_html(blocks, title)
    write_atomic(out / "report.html", lambda handle: handle.write(page.encode()))
    return out / "report.html"

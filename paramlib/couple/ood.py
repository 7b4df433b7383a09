"""`paramlib ood calibrate` (registered from here by `paramlib.cli`): a model file that carries
a calibrated out-of-distribution score for the hybrid mode of the column interface.

    paramlib ood calibrate RUN_DIR --out DIR [--dataset STORE] [--rate 0.05] [--split val]
                           [--test-split test] [--test-dataset STORE] [--tolerance 0.5]
                           [--eig-floor 1e-3] [--error-quantile 0.9]
                           [--components mahalanobis,beyond_range] [--chunk-samples 4096]
                           [--host-output SCM.nc ...]

From a training run (an mlp, rpn or mfrpn checkpoint): the statistics of the normalised input
features of the store's training group (mean, covariance, range), the component scales chosen
on the historical validation split for a false-fallback rate (`paramlib.models.ood`), then

- DIR/model.pt   the run exported as mean_spread (mean for a single network) plus the output
                 ``ood_score`` (fallback where > 1); the calibration in provenance.ood;
- DIR/ood.json   fallback fractions per split (combined and per component) and the skill of
                 each as a detector of large error: ROC AUC of "column-integrated heating
                 error above X" (X: the validation errors' `error_quantile` quantile), per
                 split and pooled over both; where the store has Betts-Miller's heating
                 (bm_heating) also of "model error above Betts-Miller's", and the mean column
                 error of the model, Betts-Miller and the hybrid (Betts-Miller where score > 1);
- DIR/ood.md     the same as short tables.

With ``--host-output`` the threshold is set in the host's own historical climate instead: the
files are paramlib_scm outputs of an ``ml`` run of the model file this command writes without
the option (same run and settings: its thresholds are checked), whose ``ood_score_max`` is the
largest score of each record's steps; every scale is multiplied by the (1 - rate) quantile of
those maxima, so that at most a fraction `rate` of the host's column records (and so of its
column steps) score above 1. The offline split is not the host's climate: a coupled model's
states drift by fractions of a kelvin in tightly constrained levels, and the validation
calibration then falls back in most column steps online (docs/gcm-coupling.md).

Every file is written atomically. The store defaults to the run's data.store.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from paramlib.atomic import write_atomic
from paramlib.cli import Subparsers
from paramlib.constants import CP
from paramlib.guards import UserInputError, check_output_path
from paramlib.ood_settings import (
    COMPONENTS,
    DEFAULT_COMPONENTS,
    DEFAULT_EIG_FLOOR,
    DEFAULT_RATE,
    DEFAULT_TOLERANCE,
    OUTPUT_NAME,
)

DEFAULT_ERROR_QUANTILE = 0.9
HEATING = "heating"
BM_HEATING = "bm_heating"  # Betts-Miller's on the same state: the hybrid's alternative


def register(subparsers: Subparsers) -> None:
    group = subparsers.add_parser(
        "ood", help="out-of-distribution score: calibrate and export it with a model"
    )
    commands = group.add_subparsers(dest="ood_command", metavar="COMMAND", required=True)
    parser = commands.add_parser(
        "calibrate",
        help="export a run with an ood_score output calibrated for a false-fallback rate",
        description="Statistics of the run's training inputs, thresholds on the historical"
        " validation split for --rate, DIR/model.pt (ood_score: fall back where > 1),"
        " DIR/ood.json and DIR/ood.md (fallback fractions and detection AUC per split).",
    )
    parser.add_argument("run", type=Path, help="training run directory or its checkpoint.pt")
    parser.add_argument("--out", type=Path, required=True, help="directory to write")
    parser.add_argument("--dataset", help="store path or name (default: the run's data.store)")
    parser.add_argument(
        "--test-dataset",
        help="store of --test-split (default: --dataset), e.g. the +4K split of another store for"
        " a run trained with +4K data",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_RATE,
        help=f"false-fallback rate on --split (default {DEFAULT_RATE})",
    )
    parser.add_argument("--split", default="val", help="calibration split (default val)")
    parser.add_argument(
        "--test-split", default="test", help="split reported beside it, e.g. +4K (default test)"
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help="beyond_range: training std beyond the range a feature must be "
        f"(default {DEFAULT_TOLERANCE})",
    )
    parser.add_argument(
        "--eig-floor",
        type=float,
        default=DEFAULT_EIG_FLOOR,
        help=f"covariance eigenvalue floor, fraction of their mean (default {DEFAULT_EIG_FLOOR})",
    )
    parser.add_argument(
        "--error-quantile",
        type=float,
        default=DEFAULT_ERROR_QUANTILE,
        help="'large error': above this quantile of the calibration split's errors "
        f"(default {DEFAULT_ERROR_QUANTILE})",
    )
    parser.add_argument(
        "--components",
        type=lambda text: text.split(","),
        default=list(DEFAULT_COMPONENTS),
        metavar="C,C,...",
        help=f"components the score combines, of {','.join(COMPONENTS)} (default"
        f" {','.join(DEFAULT_COMPONENTS)}: see paramlib.models.ood on the spread)",
    )
    parser.add_argument(
        "--chunk-samples", type=int, default=4096, help="samples per chunk (default 4096)"
    )
    parser.add_argument(
        "--host-output",
        type=Path,
        nargs="+",
        metavar="SCM.nc",
        help="paramlib_scm outputs of an ml run (historical) of the model file written without"
        " this option: the threshold is set on their ood_score_max for --rate",
    )
    parser.set_defaults(func=_calibrate)


def _fraction(value: float, what: str) -> float:
    if not 0.0 < value < 1.0:
        raise UserInputError(f"{what}: expected a fraction between 0 and 1, got {value}")
    return value


def _calibrate(args: argparse.Namespace) -> int:
    from paramlib.export import ExportError
    from paramlib.train.checkpoint import CheckpointError
    from paramlib.train.data import DataError

    try:
        _fraction(args.rate, "--rate")
        _fraction(args.error_quantile, "--error-quantile")
        if not args.tolerance >= 0.0:
            raise UserInputError(f"--tolerance: expected >= 0, got {args.tolerance}")
        if not 0.0 < args.eig_floor < 1.0:
            raise UserInputError(
                f"--eig-floor: expected a fraction in (0, 1), got {args.eig_floor}"
            )
        unknown = sorted(set(args.components) - set(COMPONENTS))
        if unknown or not args.components:
            raise UserInputError(
                f"--components: expected some of {','.join(COMPONENTS)}, got {unknown or 'none'}"
            )
        if args.chunk_samples < 1:
            raise UserInputError(f"--chunk-samples: expected >= 1, got {args.chunk_samples}")
        check_output_path(args.out, "--out", "dir")
        missing = [str(path) for path in args.host_output or () if not path.is_file()]
        if missing:  # before the statistics, which take a while
            raise UserInputError(f"--host-output {', '.join(missing)}: no such file")
        report = calibrate(
            args.run,
            args.out,
            dataset=args.dataset,
            rate=args.rate,
            split=args.split,
            test_split=args.test_split,
            test_dataset=args.test_dataset,
            tolerance=args.tolerance,
            eig_floor=args.eig_floor,
            error_quantile=args.error_quantile,
            chunk=args.chunk_samples,
            components=args.components,
            host_outputs=args.host_output or (),
        )
    except (
        CheckpointError,
        DataError,
        ExportError,
        FileNotFoundError,
        UserInputError,
        ValueError,
    ) as error:
        print(f"paramlib ood calibrate: {error}", file=sys.stderr)
        return 2
    fractions = ", ".join(
        f"{name} {split['fallback']['combined']:.3f}" for name, split in report["splits"].items()
    )
    print(f"[paramlib ood] {args.out / 'model.pt'}: fallback fraction {fractions}")
    return 0


def _chunks(
    store: Path, split: str, inputs: list[Mapping[str, Any]], chunk: int, with_target: bool
) -> Iterator[tuple[list[Any], dict[str, np.ndarray]]]:
    """Per chunk of `split`: the model's input tensors and, when asked for, the heating
    target, Betts-Miller's heating (where the store has it) and the layer mass (where the
    store gives it) by name: HEATING, BM_HEATING, "mass"."""
    import torch

    from paramlib.evaluate.sources import layer_mass, levels, open_split

    ds = open_split(store, split, chunk)
    missing = [spec["name"] for spec in inputs if spec["name"] not in ds]
    if with_target and HEATING not in ds:
        missing.append(HEATING)
    if missing:
        raise UserInputError(f"--dataset {store}: split {split!r} has no {', '.join(missing)}")
    mass, _ = layer_mass(ds) if with_target else (None, "")
    wanted = [name for name in (HEATING, BM_HEATING) if with_target and name in ds]
    for start in range(0, ds.sizes["sample"], chunk):
        rows = slice(start, start + chunk)
        part = ds.isel(sample=rows)
        tensors = [
            torch.from_numpy(levels(part[spec["name"]].values, spec["nlev"]).astype(np.float32))
            for spec in inputs
        ]
        fields = {name: part[name].values for name in wanted}
        if mass is not None:
            fields["mass"] = mass.isel(sample=rows).values
        yield tensors, fields


def _input_statistics(module: Any, store: Path, split: str, inputs: list, chunk: int, floor: float):
    from paramlib.models.ood import Moments

    moments = Moments()
    for tensors, _ in _chunks(store, split, inputs, chunk, with_target=False):
        moments.add(module.features(tensors).double().numpy())
    return moments.statistics(floor)


def _score_split(
    module: Any, metadata: Mapping[str, Any], store: Path, split: str, chunk: int
) -> dict[str, np.ndarray]:
    """Per column of `split`: components, ood_score and the |column-integrated heating error|
    (cp sum (prediction - target) dp / g, W m-2; per unit mass where the store has no dp) of
    the model ("error") and, where the store has it, of Betts-Miller ("bm_error")."""
    import torch

    names = [spec["name"] for spec in metadata["outputs"]]
    nlev = metadata["outputs"][names.index(HEATING)]["nlev"]
    parts: dict[str, list[np.ndarray]] = {}
    for tensors, fields in _chunks(store, split, metadata["inputs"], chunk, True):
        with torch.inference_mode():
            outputs = module(*tensors)
            components = module.ood_components(tensors)
        shape = (len(components), nlev)
        weight = fields["mass"][:, :nlev] if "mass" in fields else np.ones(shape)
        target = np.asarray(fields[HEATING], np.float64).reshape(shape[0], -1)[:, :nlev]
        column = {
            "components": components.double().numpy(),
            "score": outputs[names.index(OUTPUT_NAME)].double().numpy()[:, 0],
            "error": _column_error(outputs[names.index(HEATING)].double().numpy(), target, weight),
        }
        if BM_HEATING in fields:
            bm = np.asarray(fields[BM_HEATING], np.float64).reshape(shape[0], -1)[:, :nlev]
            column["bm_error"] = _column_error(bm, target, weight)
        for key, value in column.items():
            parts.setdefault(key, []).append(value)
    return {key: np.concatenate(value) for key, value in parts.items()}


def _column_error(heating: np.ndarray, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """|cp sum_k (heating - target) weight_k| per column, all (ncol, nlev)."""
    return np.abs(CP * ((heating - target) * weight).sum(axis=1))


def _export(task: Any, net: Any, path: Path, output: str, provenance: dict, ood: Any) -> Any:
    import torch

    from paramlib.export import load_metadata

    task.export(net, path, output, 0, provenance, ood=ood)
    return torch.jit.load(str(path)), load_metadata(path)


def calibrate(
    run: Path,
    out: Path,
    *,
    dataset: str | None = None,
    rate: float = DEFAULT_RATE,
    split: str = "val",
    test_split: str | None = "test",
    test_dataset: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    eig_floor: float = DEFAULT_EIG_FLOOR,
    error_quantile: float = DEFAULT_ERROR_QUANTILE,
    chunk: int = 4096,
    components: Sequence[str] = DEFAULT_COMPONENTS,
    host_outputs: Sequence[Path] = (),
) -> dict[str, Any]:
    """The module docstring's files in `out`; returns what ood.json holds."""
    from paramlib.evaluate.sources import resolve_store
    from paramlib.models.ood import OodScore, calibrate_scales
    from paramlib.train import checkpoint
    from paramlib.train.config import config_from_dict
    from paramlib.train.loop import trained_network
    from paramlib.train.tasks import FeatureTask, task_from_spec

    state = checkpoint.load(run)
    config = config_from_dict(state["config"])
    task = task_from_spec(config, state["spec"])
    if not isinstance(task, FeatureTask):
        raise UserInputError(
            f"{run}: model kind {config.model.kind} has no OOD score (it needs flat input"
            " features: mlp, rpn, mfrpn)"
        )
    store = resolve_store(dataset or config.data.store)
    net = trained_network(task, state)
    output = "mean_spread" if task.members > 1 else "mean"
    provenance = {**state["provenance"], "steps": state["step"]}
    test_store = resolve_store(test_dataset) if test_dataset else store
    parts = {split: (split, store)}  # report label: (split, store)
    if test_split and (test_split != split or test_store != store):
        label = test_split if test_split != split else f"{test_split} of {test_store.name}"
        parts[label] = (test_split, test_store)
    splits = list(parts)
    with tempfile.TemporaryDirectory() as folder:
        base, metadata = _export(task, net, Path(folder) / "base.pt", output, provenance, None)
        inputs = list(metadata["inputs"])
        stats = _input_statistics(base, store, config.data.train_group, inputs, chunk, eig_floor)
        unit = OodScore(stats, tolerance, np.ones(len(COMPONENTS)))
        probe, metadata = _export(task, net, Path(folder) / "probe.pt", output, provenance, unit)
        if HEATING not in [spec["name"] for spec in metadata["outputs"]]:
            raise UserInputError(f"{run}: the model has no output {HEATING!r} to score errors on")
        calibration = _score_split(probe, metadata, store, split, chunk)["components"]
    scales = calibrate_scales(calibration, rate, stats.mean.size, components)
    host = _host_factor(host_outputs, scales, rate) if host_outputs else None
    if host is not None:
        scales = scales * host["factor"]
    settings = {
        "rate": rate,
        "calibration_split": split,
        "tolerance": tolerance,
        "eig_floor": eig_floor,
        "components": [c for c, s in zip(COMPONENTS, scales, strict=True) if np.isfinite(s)],
        # The value of each component alone that scores 1 (null: not used).
        "thresholds": {c: _number(s) for c, s in zip(COMPONENTS, scales, strict=True)},
        "training_samples": stats.samples,
        "eigenvalues_floored": stats.floored,
        "store": str(store),
        "test_store": str(test_store),
        **({"host": host} if host is not None else {}),
    }
    out.mkdir(parents=True, exist_ok=True)
    model, metadata = _export(
        task,
        net,
        out / "model.pt",
        output,
        {**provenance, "ood": settings},
        OodScore(stats, tolerance, scales),
    )
    scored = {
        label: _score_split(model, metadata, part_store, name, chunk)
        for label, (name, part_store) in parts.items()
    }
    large = float(np.quantile(scored[split]["error"], error_quantile))
    report = {
        **settings,
        "model": str(out / "model.pt"),
        "error": {
            "definition": "|cp sum_k (mean heating - target) dp_k / g| per column",
            "quantile": error_quantile,
            "large_above": large,
        },
        "splits": {name: _summary(values, scales, large) for name, values in scored.items()},
    }
    if len(splits) > 1:  # +4K columns may all have large errors: its own AUC is then undefined
        pooled = {key: np.concatenate([scored[s][key] for s in splits]) for key in scored[split]}
        both = _summary(pooled, scales, large)
        report["pooled_auc"] = {"splits": splits, **both["auc"]}
        if "auc_ml_worse_than_bm" in both:
            report["pooled_auc_ml_worse_than_bm"] = {
                "splits": splits,
                **both["auc_ml_worse_than_bm"],
            }
    text = json.dumps(report, indent=1, allow_nan=False)
    write_atomic(out / "ood.json", lambda handle: handle.write(text.encode()))
    markdown = _markdown(report)
    write_atomic(out / "ood.md", lambda handle: handle.write(markdown.encode()))
    return report


def _host_factor(outputs: Sequence[Path], scales: np.ndarray, rate: float) -> dict[str, Any]:
    """The factor on every scale that leaves a fraction `rate` of the host's column records
    above 1 (module docstring), with what it was taken from."""
    import xarray as xr

    from paramlib.export import load_metadata

    wanted = {c: _number(s) for c, s in zip(COMPONENTS, scales, strict=True)}
    maxima = []
    for path in outputs:
        if not Path(path).is_file():
            raise UserInputError(f"--host-output {path}: no such file")
        with xr.open_dataset(path) as ds:
            if ds.attrs.get("mode") != "ml":
                raise UserInputError(
                    f"--host-output {path}: expected a paramlib_scm run in mode ml (the host"
                    f" coupled to the model alone), got mode {ds.attrs.get('mode')!r}"
                )
            if "ood_score_max" not in ds:
                raise UserInputError(
                    f"--host-output {path}: no variable ood_score_max (written by paramlib_scm"
                    " since 2026-12-07)"
                )
            model = Path(str(ds.attrs.get("model_path", "")))
            values = np.asarray(ds["ood_score_max"].values, np.float64).ravel()
        ran = load_metadata(model)["provenance"].get("ood", {}).get("thresholds")
        if ran is None or any(
            (ran.get(c) is None) != (v is None)
            or (v is not None and not np.isclose(ran[c], v, rtol=1e-6))
            for c, v in wanted.items()
        ):
            raise UserInputError(
                f"--host-output {path}: its model {model} has ood thresholds {ran}, this"
                f" calibration {wanted}: run the host with the model file this command writes"
                " without --host-output (same run and settings)"
            )
        maxima.append(values)
    values = np.concatenate(maxima)
    if not values.size or not np.isfinite(values).any():
        raise UserInputError(f"--host-output: no scores in {', '.join(map(str, outputs))}")
    factor = float(np.quantile(values, 1.0 - rate, method="higher"))
    if not factor > 0.0:
        raise UserInputError(
            f"--host-output: the (1 - {rate:g}) quantile of the scores is {factor}; expected > 0"
        )
    return {
        "outputs": [str(path) for path in outputs],
        "records": int(values.size),
        "factor": factor,
        "fallback_before": float((values > 1.0).mean()),
        "fallback": float((values > factor).mean()),
    }


def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _summary(values: Mapping[str, np.ndarray], scales: np.ndarray, large: float) -> dict:
    from paramlib.models.ood import roc_auc

    ratios = values["components"] / scales
    per = {c: ratios[:, i] for i, c in enumerate(COMPONENTS) if np.isfinite(scales[i])}
    fallen = values["score"] > 1.0

    def auc(positive: np.ndarray) -> dict[str, float | None]:
        return {
            "combined": _number(roc_auc(values["score"], positive)),
            **{c: _number(roc_auc(r, positive)) for c, r in per.items()},
        }

    summary = {
        "columns": len(fallen),
        "large_error_fraction": float((values["error"] > large).mean()),
        "fallback": {
            "combined": float(fallen.mean()),
            **{c: float((r > 1.0).mean()) for c, r in per.items()},
        },
        "auc": auc(values["error"] > large),
        "error_of_fallen_back": _number(_mean(values["error"], fallen)),
        "error_of_kept": _number(_mean(values["error"], ~fallen)),
    }
    if "bm_error" in values:
        worse = values["error"] > values["bm_error"]
        summary["ml_worse_than_bm_fraction"] = float(worse.mean())
        summary["auc_ml_worse_than_bm"] = auc(worse)
        # What the hybrid's column error would be, against the model alone and Betts-Miller.
        hybrid = np.where(fallen, values["bm_error"], values["error"])
        summary["mean_error"] = {
            "model": float(values["error"].mean()),
            "betts_miller": float(values["bm_error"].mean()),
            "hybrid": float(hybrid.mean()),
        }
    return summary


def _mean(values: np.ndarray, where: np.ndarray) -> float:
    return float(values[where].mean()) if where.any() else float("nan")


def _markdown(report: Mapping[str, Any]) -> str:
    names = ["combined", *[c for c in COMPONENTS if report["thresholds"][c] is not None]]
    splits = report["splits"]

    def table(rows: Mapping[str, Mapping[str, float | None]], fmt: str) -> list[str]:
        lines = ["| split | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for name, values in rows.items():
            cells = ["n/a" if values[c] is None else format(values[c], fmt) for c in names]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return lines

    def with_pooled(key: str) -> dict[str, Mapping[str, Any]]:
        rows = {name: summary[key] for name, summary in splits.items() if key in summary}
        if f"pooled_{key}" in report:
            rows[" + ".join(report[f"pooled_{key}"]["splits"])] = report[f"pooled_{key}"]
        return rows

    lines = [
        "# Out-of-distribution score",
        "",
        f"Model file: `{report['model']}` (output `{OUTPUT_NAME}`: fall back where > 1).",
        f"Calibrated on split `{report['calibration_split']}` for a false-fallback rate of"
        f" {report['rate']:g}; beyond_range tolerance {report['tolerance']:g} training std;"
        f" {report['eigenvalues_floored']} covariance eigenvalues floored.",
        *_host_lines(report.get("host")),
        "",
        "## Fallback fraction (score > 1)",
        "",
        *table({name: summary["fallback"] for name, summary in splits.items()}, ".3f"),
        "",
        f"## Detection skill: ROC AUC of error > {report['error']['large_above']:.4g}"
        f" (the {report['error']['quantile']:g} quantile of {report['calibration_split']}'s"
        " column heating errors)",
        "",
        *table(with_pooled("auc"), ".3f"),
        "",
        "| split | columns | large-error fraction | mean error, fallen back | mean error, kept |",
        "|---|---|---|---|---|",
    ]
    for name, s in splits.items():
        cells = [_cell(s[key]) for key in ("error_of_fallen_back", "error_of_kept")]
        lines.append(
            f"| {name} | {s['columns']} | {s['large_error_fraction']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    if "auc_ml_worse_than_bm" in next(iter(splits.values())):
        lines += [
            "",
            "## Detection skill: ROC AUC of 'the model's column heating error exceeds"
            " Betts-Miller's'",
            "",
            *table(with_pooled("auc_ml_worse_than_bm"), ".3f"),
            "",
            "| split | model worse than BM | mean error: model | Betts-Miller | hybrid |",
            "|---|---|---|---|---|",
        ]
        for name, s in splits.items():
            e = s["mean_error"]
            lines.append(
                f"| {name} | {s['ml_worse_than_bm_fraction']:.3f} | {e['model']:.4g} |"
                f" {e['betts_miller']:.4g} | {e['hybrid']:.4g} |"
            )
    return "\n".join(lines) + "\n"


def _host_lines(host: Mapping[str, Any] | None) -> list[str]:
    if host is None:
        return []
    return [
        "",
        f"Threshold set on the host's own climate: {host['records']} column records of"
        f" {', '.join(host['outputs'])} scored above 1 in {host['fallback_before']:.3f} with the"
        f" validation calibration; every scale x {host['factor']:.4g} leaves"
        f" {host['fallback']:.3f} (the splits below are scored with these scales).",
    ]


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"

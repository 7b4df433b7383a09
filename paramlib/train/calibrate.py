"""Spread calibration: a small search over the prior scale (and member count) of an ensemble.

An RPN ensemble's spread comes from its members' different initialisations, fixed priors and
bootstrap subsets; ``prior_scale`` scales the prior and with it the spread away from the data
(the prototype's ensembles were under-dispersed, 90 % interval coverage 0.6-0.75). For each
setting, `calibrate` trains the config (one process, run directory
``OUT/prior_scale-S_members-M``, resumed if it is already there) and measures on the
validation split the empirical coverage of the central 90 % prediction interval, mean +- f x
spread (the standard deviation over members, as the model file's spread output; f from
Student's t for M members, `paramlib.evaluate.metrics.interval_factor`, the interval
`paramlib evaluate` scores): the fraction of (sample, output feature) pairs whose target
lies inside, over all outputs and per output field. The setting closest to 0.9 is chosen.
Results go to OUT/calibration.json.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from paramlib.atomic import write_atomic
from paramlib.evaluate.metrics import interval_factor
from paramlib.guards import FolderLock
from paramlib.train import checkpoint
from paramlib.train.config import Config, ConfigError
from paramlib.train.distributed import Placement
from paramlib.train.loop import train, trained_network
from paramlib.train.tasks import FeatureTask, task_from_stores

LEVEL = 0.9


def coverage(members: torch.Tensor, target: torch.Tensor, level: float = LEVEL) -> torch.Tensor:
    """Per feature, the fraction of samples whose target lies in the central `level`
    prediction interval mean +- f x std over the members (`interval_factor`); members
    (M, N, F), target (N, F) -> (F,)."""
    factor = interval_factor(members.shape[0], level)
    mean, spread = members.mean(dim=0), members.std(dim=0)
    return ((target - mean).abs() <= factor * spread).double().mean(dim=0)


def evaluate(config: Config, run_dir: Path) -> dict[str, Any]:
    """Coverage on the validation split of the run in `run_dir`, overall and per field, and
    the ensemble mean's mean squared error there (normalised units)."""
    task = task_from_stores(config)
    assert isinstance(task, FeatureTask)
    if "val" not in task.data:
        raise ConfigError(f"{config.data.store}: no validation samples to calibrate on")
    net = trained_network(task, checkpoint.load(run_dir))
    x, y = task.data["val"]
    members = task.predict(net, x, config.train.batch_size)
    per_feature = coverage(members, y)
    return {
        "coverage": float(per_feature.mean()),
        "per_field": {k: float(v.mean()) for k, v in task.outputs.split(per_feature).items()},
        # The price of a wider spread, if any: the ensemble mean's error (normalised units).
        "mse_of_mean": float((members.mean(dim=0) - y).square().mean()),
    }


def calibrate(
    config: Config,
    out: str | Path,
    prior_scales: Sequence[float],
    members: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Train and evaluate every (prior_scale, members) setting; write and return the table
    and the chosen setting (module docstring)."""
    if not config.ensemble:
        raise ConfigError(
            f"{config.name}: calibration needs an ensemble (rpn or mfrpn, members >= 2)"
        )
    out = Path(out)
    with FolderLock(out, "calibration directory"):  # its runs and calibration.json
        return _calibrate(config, out, prior_scales, members)


def _calibrate(
    config: Config, out: Path, prior_scales: Sequence[float], members: Sequence[int] | None
) -> dict[str, Any]:
    results = []
    for scale in prior_scales:
        for count in members or [config.model.members]:
            model = dataclasses.replace(config.model, prior_scale=scale, members=count)
            setting = dataclasses.replace(config, model=model)
            run_dir = out / f"prior_scale-{scale:g}_members-{count}"
            status = train(setting, run_dir, resume=True, placement=Placement())
            if status != 0:
                raise RuntimeError(f"training {run_dir} stopped with status {status}")
            result = {"prior_scale": scale, "members": count, **evaluate(setting, run_dir)}
            results.append(result)
            print(
                f"[paramlib calibrate] prior_scale {scale:g}, members {count}: "
                f"90% interval coverage {result['coverage']:.3f}, "
                f"MSE of the mean {result['mse_of_mean']:.3f}",
                flush=True,
            )
    chosen = min(results, key=lambda r: abs(r["coverage"] - LEVEL))
    report = {"level": LEVEL, "config": config.to_dict(), "results": results, "chosen": chosen}
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(
        out / "calibration.json", lambda handle: handle.write(json.dumps(report, indent=1).encode())
    )
    print(
        f"[paramlib calibrate] chosen: model.prior_scale={chosen['prior_scale']:g} "
        f"model.members={chosen['members']} (coverage {chosen['coverage']:.3f}); "
        f"{out / 'calibration.json'}"
    )
    return report

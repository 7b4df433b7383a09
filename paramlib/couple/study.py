"""The online half of the medium study: the models of ``paramlib evaluate --compare --work DIR``
coupled to the column host, historical and +4K, against the Emanuel reference, for every seed.

    paramlib couple study --work DIR [--seeds 0 1 2] [--models rpn_hf_only mfrpn_hf_of_bm_and_x]
                          [--ood host|val] [--columns 64 --days 30]

For each scenario the Emanuel reference runs once (``DIR/online/reference/SCENARIO``), then
Betts-Miller alone, and per seed and model (``DIR/runs/CONFIG[-seedS]``) the modes ``ml``,
``hybrid`` and ``stochastic``. ``ml`` runs the ensemble mean with the ``ood_score`` of
``paramlib ood calibrate`` (``DIR/online/ood/CONFIG-seedS``, calibrated for a 5 % fallback
rate on the historical validation split; in ``ml`` the score is only recorded). ``hybrid``
falls back to Betts-Miller where the score is above 1: with ``--ood host`` (the default) the
threshold is set again on the historical ``ml`` run's own scores (``--host-output``, into
``DIR/online/ood/CONFIG-seedS-host``), with ``--ood val`` the validation calibration is used
as it is. ``stochastic`` runs the run exported with its members (``DIR/online/members``; a
member drawn per column and call). Each seed's
report (plots, table) is ``DIR/online/seedS/report``; ``DIR/online/summary.md`` and
``summary.json`` give every run's days survived, T / PW / P bias and drift, and fallback as
mean ± std over the seeds.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from paramlib.atomic import write_atomic
from paramlib.couple.inputs import SCENARIOS, Coupling, RunSetup, TestbedClimate
from paramlib.couple.reference import reference
from paramlib.couple.report import report
from paramlib.couple.scm import run_coupled

MODELS = {"HF-only RPN": "rpn_hf_only", "MF-RPN HF([BM(x), x])": "mfrpn_hf_of_bm_and_x"}
MODES = ("ml", "hybrid", "stochastic")  # in this order: hybrid's threshold comes from ml
# What the summary averages over seeds (couple.report's row keys).
SCORES = ("days", "t_bias", "t_drift", "pw_bias", "pw_drift", "precip_bias", "precip_drift")
SCORES_ML = (*SCORES, "fallback")
PHYSICS = "Betts-Miller physics"


def online_study(
    work: str | os.PathLike[str],
    seeds: Sequence[int],
    models: Mapping[str, str] = MODELS,
    setup: RunSetup | None = None,
    log: Callable[[str], None] = print,
    ood: str = "host",
) -> Path:
    """The module docstring's runs under `work`/online (`setup`: default 64 columns, 30 days;
    `ood`: where the hybrid's threshold is set, of ood_settings.THRESHOLD_SOURCES); returns
    summary.md's path."""
    from paramlib.couple.ood import calibrate
    from paramlib.evaluate.compare import run_dir
    from paramlib.paths import CONFIGS
    from paramlib.train import checkpoint
    from paramlib.train.config import load_config
    from paramlib.train.loop import export_checkpoint

    setup = setup or RunSetup()
    work = Path(work)
    base = work / "online"
    testbed = work / "testbed"
    climate = TestbedClimate.read(testbed)
    refs = {sc: reference(base / "reference" / sc, sc, setup, climate) for sc in SCENARIOS}

    def run(out: Path, scenario: str, coupling: Coupling) -> Path:
        result = run_coupled(
            out, scenario, coupling, reference=refs[scenario], testbed=testbed, check=False
        )
        if not result.completed:
            log(f"{out.name}: stopped: {result.error.splitlines()[-1]}")
        return result.output

    physics = [run(base / f"betts_miller-{sc}", sc, Coupling(mode="physics")) for sc in SCENARIOS]
    rows: list[dict[str, object]] = []
    for seed in seeds:
        outputs = list(physics)
        for label, config in models.items():
            own_seed = load_config(CONFIGS / f"{config}.yaml").train.seed
            folder = run_dir(work / "runs", config, seed, own_seed)
            calibrated = base / "ood" / f"{config}-seed{seed}"
            if not (calibrated / "model.pt").is_file():
                calibrate(folder, calibrated)
            members = base / "members" / f"{config}-seed{seed}.pt"
            if not members.is_file():
                members.parent.mkdir(parents=True, exist_ok=True)
                export_checkpoint(checkpoint.load(folder), members, output="members")
            files = {"ml": calibrated / "model.pt", "hybrid": calibrated / "model.pt"}
            historical_ml = Path()
            for mode in MODES:
                if mode == "hybrid" and ood == "host":
                    host = base / "ood" / f"{config}-seed{seed}-host"
                    if not (host / "model.pt").is_file():
                        calibrate(folder, host, host_outputs=[historical_ml])
                    files[mode] = host / "model.pt"
                coupling = Coupling(mode=mode, model=files.get(mode, members), seed=seed)
                for scenario in SCENARIOS:
                    out = base / f"seed{seed}" / f"{config}-{scenario}-{mode}"
                    outputs.append(run(out, scenario, coupling))
                    if (mode, scenario) == ("ml", "historical"):
                        historical_ml = outputs[-1]
                    log(f"seed {seed}: {label} {mode} {scenario} done")
        for row in report(outputs, base / f"seed{seed}" / "report", list(refs.values())):
            rows.append({**row, "seed": seed})
    return _summary(rows, models, base)


def _label(row: Mapping[str, object], models: Mapping[str, str]) -> str:
    """The model's label and the mode; the run's model is named by its run directory or file
    (`couple.report.run_label`), CONFIG, CONFIG-seedS or CONFIG-seedS-host."""
    model = re.sub(r"-seed\d+(-host)?$", "", str(row["run"]).rsplit(" ", 1)[0])
    for label, config in models.items():
        if model == config:
            return f"{label} {row['mode']}"
    return PHYSICS


def _summary(rows: list[dict[str, object]], models: Mapping[str, str], base: Path) -> Path:
    """Mean ± std over seeds per (run, scenario); Betts-Miller (seed-free) once."""
    groups: dict[tuple[str, str], list[dict[str, object]]] = {}
    for row in rows:
        label = _label(row, models)
        if label == PHYSICS and row["seed"] != rows[0]["seed"]:
            continue  # the same run in every seed's report
        groups.setdefault((label, str(row["scenario"])), []).append(row)
    summary = []
    for (label, scenario), members in groups.items():
        entry: dict[str, object] = {
            "run": label,
            "scenario": scenario,
            "seeds": [m["seed"] for m in members],
            "completed": sum(bool(m["completed"]) for m in members),
        }
        for key in SCORES_ML:
            values = np.array([_number(m.get(key)) for m in members])
            entry[key] = {
                "mean": float(np.nanmean(values)) if np.isfinite(values).any() else None,
                "std": float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else None,
                "seeds": [None if np.isnan(v) else float(v) for v in values],
            }
        summary.append(entry)
    text = (json.dumps(summary, indent=2) + "\n").encode()
    write_atomic(base / "summary.json", lambda f: f.write(text))
    markdown = _markdown(summary).encode()
    path = base / "summary.md"
    write_atomic(path, lambda f: f.write(markdown))
    return path


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else np.nan


def _cell(score: object) -> str:
    assert isinstance(score, dict)
    mean, std = score["mean"], score["std"]
    if mean is None:
        return "n/a"
    return f"{mean:.3g}" + ("" if std is None else f" ± {std:.2g}")


def _markdown(summary: Sequence[Mapping[str, object]]) -> str:
    head = ["run", "scenario", "completed", *SCORES_ML]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in summary:
        seeds = entry["seeds"]
        assert isinstance(seeds, list)
        cells = [str(entry["run"]), str(entry["scenario"]), f"{entry['completed']}/{len(seeds)}"]
        cells += [_cell(entry[key]) for key in SCORES_ML]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

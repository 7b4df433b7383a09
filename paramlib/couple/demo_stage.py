"""The online experiment of ``make demo``: does a coupled model reproduce the high-fidelity
climate, and does it still at +4K?

For each scenario (historical, +4K) the Emanuel reference runs first (`reference`); then, from
its spun-up state, on the same columns, forcing and SSTs, paramlib_scm runs
    Betts-Miller alone (the low-fidelity physics),
    the MF-RPN, HF([BM, x]) (config mfrpn_hf_of_bm_and_x: its Betts-Miller inputs are what the
    host computes anyway), and the HF-only RPN (config rpn_hf_only), each in ``ml`` and
    ``hybrid`` mode.
Hybrid falls back to Betts-Miller where the model's out-of-distribution score is above 1, its
threshold set on the host's own historical ``ml`` run (`paramlib ood calibrate`, then again
with ``--host-output``: at most ``RATE`` of that run's column records above 1); the same
threshold serves at +4K. The ``ml`` runs use the score's model file, which records the score
without acting on it.

`online_experiment(demo)` prints the drift and fallback table (`report.markdown_table`) and
writes the plots and tables under ``demo.out / "couple"``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from paramlib.couple.inputs import SCENARIOS, CoupleError, Coupling, RunSetup, TestbedClimate
from paramlib.couple.reference import reference
from paramlib.couple.report import markdown_table, report
from paramlib.couple.scm import run_coupled
from paramlib.ood_settings import DEFAULT_RATE as RATE
from paramlib.paths import CONFIGS, STORES_ENV

MODELS = {"MF-RPN": "mfrpn_hf_of_bm_and_x", "HF-only RPN": "rpn_hf_only"}


@dataclasses.dataclass(frozen=True)
class ExperimentSize:
    ncol: int
    days: float
    dt_s: float = 1200.0
    output_every: int = 3


SIZES = {
    "small": ExperimentSize(ncol=16, days=4.0),  # make demo
    "full": ExperimentSize(ncol=64, days=30.0),  # the documented experiment
}


class DemoLike(Protocol):
    """What the experiment needs of paramlib.demo.Demo."""

    out: Path
    seed: int

    @property
    def testbed(self) -> Path: ...

    @property
    def stores(self) -> Path: ...


def model_file(demo: DemoLike, config: str, log: Callable[[str], None]) -> Path:
    """demo.out/runs/CONFIG/model.pt, trained (small variant, on demo.stores) when the demo has
    not trained it yet."""
    path = demo.out / "runs" / config / "model.pt"
    if path.is_file():
        return path
    from paramlib.train.config import load_config
    from paramlib.train.loop import train

    log(f"{config}: no trained model at {path}; training its small variant")
    saved = os.environ.get(STORES_ENV)
    os.environ[STORES_ENV] = str(demo.stores)  # the configs name their stores through it
    try:
        status = train(
            load_config(CONFIGS / f"{config}.yaml", [], "small"), path.parent, resume=True
        )
    finally:
        if saved is None:
            os.environ.pop(STORES_ENV)
        else:
            os.environ[STORES_ENV] = saved
    if status != 0 or not path.is_file():
        raise CoupleError(f"training {config} into {path.parent} exited with status {status}")
    return path


def online_experiment(
    demo: DemoLike,
    size: str | ExperimentSize = "small",
    log: Callable[[str], None] = print,
    threads: int = 1,
) -> list[dict[str, object]]:
    """Run the experiment of the module docstring (``size``: a name in SIZES or any
    ExperimentSize), under demo.out/couple/<size>; print and return the table rows."""
    from paramlib.couple.ood import calibrate

    if isinstance(size, str) and size not in SIZES:
        raise ValueError(f"size: expected one of {', '.join(SIZES)}, got {size!r}")
    s = SIZES[size] if isinstance(size, str) else size
    base = demo.out / "couple" / (size if isinstance(size, str) else "custom")
    climate = TestbedClimate.read(demo.testbed)
    setup = RunSetup(
        ncol=s.ncol, days=s.days, dt_s=s.dt_s, output_every=s.output_every, seed=demo.seed
    )
    refs = {}
    for scenario in SCENARIOS:
        refs[scenario] = reference(base / "reference" / scenario, scenario, setup, climate)
        log(f"reference (Emanuel) {scenario}: {refs[scenario]}")

    def run(name: str, scenario: str, coupling: Coupling) -> Path:
        out = base / f"{name}-{scenario}-{coupling.mode}"
        result = run_coupled(
            out,
            scenario,
            coupling,
            reference=refs[scenario],
            testbed=demo.testbed,
            threads=threads,
            check=False,  # a run that blows up is a result: the table shows how far it got
        )
        if not result.completed:
            log(f"{out.name}: stopped: {result.error.splitlines()[-1]}")
        return result.output

    outputs = [run("betts_miller", sc, Coupling(mode="physics")) for sc in SCENARIOS]
    for label, config in MODELS.items():
        run_dir = model_file(demo, config, log).parent
        scored = base / "ood" / "val" / config  # folders named by config: the report's labels
        calibrate(run_dir, scored, rate=RATE)
        ml = {
            sc: run(config, sc, Coupling(mode="ml", model=scored / "model.pt")) for sc in SCENARIOS
        }
        host = base / "ood" / "host" / config
        report_host = calibrate(run_dir, host, rate=RATE, host_outputs=[ml["historical"]])
        log(
            f"{label}: hybrid threshold on its historical ml run: ood_score x"
            f" {report_host['host']['factor']:.3g}, {report_host['host']['fallback_before']:.0%}"
            f" -> {report_host['host']['fallback']:.0%} of its column records above 1"
        )
        hybrid = Coupling(mode="hybrid", model=host / "model.pt")
        for scenario in SCENARIOS:
            outputs += [ml[scenario], run(config, scenario, hybrid)]
    rows = report(outputs, base / "report", list(refs.values()))
    log(
        f"online experiment ({s.ncol} columns, {s.days:g} days, {s.dt_s / 60:g}-minute steps), "
        f"against the Emanuel reference; plots and tables in {base / 'report'}"
    )
    log(markdown_table(rows).rstrip())
    return rows

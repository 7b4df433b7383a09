"""Betts-Miller on high-fidelity states, and the choice of its tau and reference RH.

``diagnose_betts_miller`` evaluates the Fortran Betts-Miller scheme (``ColumnModel.diagnose_bm``)
on every saved state of a run, at that run's pressures, without stepping anything.

``tune_betts_miller`` is the documented grid search: on the historical high-fidelity (Emanuel)
run, for every (tau, RH_BM) of ``TAU_GRID_S`` x ``RH_GRID``, Betts-Miller's heating on the saved
states is compared with Emanuel's heating on the same states. The score is the Pearson
correlation of the temperature tendencies (K s-1) over all (time, column, level) samples: every
saved time, every column, all 26 levels, unweighted. The largest correlation wins.

On fixed states the correlation cannot choose tau: Betts-Miller's tendencies are
(reference - state) / tau, its enthalpy shift and its branch decisions scale with 1/tau too, so
a change of tau multiplies every tendency by one factor. Among the candidates whose correlation
is the best (to within ``TIE``, i.e. the tau values of the best RH_BM) the one with the smallest
mean squared heating error wins: the magnitude match. The tau grid spans the relaxation times
used with this scheme (Frierson 2007 uses 2 h); on Emanuel's states the least-squares tau lies
above it (Emanuel's quasi-equilibrium keeps more instability than Betts-Miller's), so the largest
grid value is usually chosen, and a longer tau would leave the low-fidelity run's convection to
large-scale condensation.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from paramlib.testbed.column import ColumnModel
from paramlib.testbed.runs import ColumnRun, SchemeOutput, model_config
from paramlib.testbed.summary import finite_or_none, pearson

HOUR = 3600.0
TAU_GRID_S = (1.0 * HOUR, 2.0 * HOUR, 4.0 * HOUR, 8.0 * HOUR)
RH_GRID = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
TIE = 1e-9  # correlations equal to this are the same (tau only rescales the tendencies)
CRITERION = (
    "Pearson correlation of Betts-Miller and Emanuel temperature tendencies (K s-1) over all "
    "(time, column, level) samples of the historical high-fidelity run (all levels, unweighted); "
    "ties in correlation (tau only rescales Betts-Miller's tendencies on fixed states) broken by "
    "the smallest mean squared heating error"
)


@dataclasses.dataclass(frozen=True)
class Tuning:
    """The chosen Betts-Miller parameters and the score of every grid point."""

    tau_s: float
    rh: float
    correlation: float
    scores: list[dict[str, float]]  # one per (tau, rh): tau_s, rh, correlation, mse

    def as_dict(self) -> dict[str, object]:
        return {
            "tau_s": self.tau_s,
            "rh": self.rh,
            "heating_correlation": self.correlation,
            "criterion": CRITERION,
            "grid": {"tau_s": list(TAU_GRID_S), "rh": list(RH_GRID)},
            "scores": [{**s, "correlation": finite_or_none(s["correlation"])} for s in self.scores],
        }


def diagnose_betts_miller(run: ColumnRun, tau_s: float, rh: float) -> SchemeOutput:
    """Betts-Miller with ``tau_s`` and ``rh`` on every saved state of ``run``."""
    config = model_config(run.columns, run.wtg, run.timing.dt_s, run.t.shape[-1], tau_s, rh)
    with ColumnModel(config) as model:
        outputs = [model.diagnose_bm(t, q) for t, q in zip(run.t, run.q, strict=True)]
    return SchemeOutput(
        dtdt=np.stack([o.dtdt for o in outputs]),
        dqdt=np.stack([o.dqdt for o in outputs]),
        precip=np.stack([o.precip for o in outputs]),
    )


def tune_betts_miller(hf_run: ColumnRun) -> Tuning:
    """The grid search of the module docstring on the historical high-fidelity run."""
    emanuel = hf_run.convection.dtdt
    scores = []
    for tau in TAU_GRID_S:
        for rh in RH_GRID:
            heating = diagnose_betts_miller(hf_run, tau, rh).dtdt
            scores.append(
                {
                    "tau_s": tau,
                    "rh": rh,
                    "correlation": pearson(heating, emanuel),
                    "mse": float(np.mean((heating - emanuel) ** 2)),
                }
            )
    best = max(_score(s) for s in scores)
    chosen = min((s for s in scores if _score(s) >= best - TIE), key=lambda s: s["mse"])
    return Tuning(
        tau_s=chosen["tau_s"], rh=chosen["rh"], correlation=chosen["correlation"], scores=scores
    )


def _score(entry: dict[str, float]) -> float:
    """The correlation, with an undefined one (Betts-Miller never convects) ranked last."""
    return entry["correlation"] if math.isfinite(entry["correlation"]) else -math.inf

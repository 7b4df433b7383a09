"""Model files for the column interface's tests (ctest fixture scm_make_models):

    python make_coupling_models.py OUTDIR

Every model maps the host's fields to outputs a test can predict exactly: member m (1..M) gives
heating = m * HEATING at every level, moistening = -m * DRYING * q at the lowest level (the
same value at every level, so levels with little water go negative and the water fix must
act), precip = m * PRECIP (not the water removed, so the precipitation fix must act).

- members.pt       4 members, every one returned (ensemble_size 4), training ranges set;
- mean_spread.pt   the same ensemble as mean and <name>_spread outputs;
- mean.pt          the ensemble mean alone and no valid_range (hybrid: nothing to check);
- with_bm.pt       takes Betts-Miller's tendencies and returns them (2 identical members);
- bad_units.pt     heating in K day-1;  unknown_input.pt: an input "u";
- too_many_levels.pt  t on 40 levels (the tests' host has 26);
- runaway.pt       the ensemble mean with RUNAWAY heating: a host run leaves the physical range;
- nan_members.pt   members.pt with member 2's heating NaN in every third column of a call
                   (0-based 1, 4, 7, ...): mean and spread are NaN there;
- nan_spread.pt    mean_spread.pt with heating_spread NaN in those columns, the mean finite;
- ood_score.pt     mean_spread.pt plus the output ood_score = (t at the lowest level - OOD_T0) /
                   OOD_DT: a hybrid host falls back where that lowest level is above 300 K.
"""

# (no `from __future__ import annotations`: TorchScript reads the Final annotations)
import sys
from pathlib import Path
from typing import Final

import torch
from torch import Tensor, nn

from paramlib.export import FieldSpec, ModelMetadata, forward_source, save

NLEV = 26
NLEV_Q = 22
MEMBERS = 4
HEATING = 1.0e-5  # K s-1
DRYING = 2.0e-5  # s-1
PRECIP = 1.0e-4  # mm s-1
RUNAWAY = 2.0e-3  # K s-1: runaway.pt heats a host past 400 K within a day
OOD_T0, OOD_DT = 250.0, 50.0  # K: ood_score.pt's score is 1 at 300 K

STATE = (
    ("t", "K", NLEV),
    ("q", "kg kg-1", NLEV_Q),
    ("ps", "Pa", 1),
    ("solin", "W m-2", 1),
    ("shflx", "W m-2", 1),
    ("lhflx", "W m-2", 1),
)
BM = (
    ("bm_heating", "K s-1", NLEV),
    ("bm_moistening", "kg kg-1 s-1", NLEV_Q),
    ("bm_precip", "mm s-1", 1),
)
OUTPUTS = (
    ("heating", "K s-1", NLEV),
    ("moistening", "kg kg-1 s-1", NLEV_Q),
    ("precip", "mm s-1", 1),
)
RANGES = {
    "t": (150.0, 350.0),
    "q": (0.0, 0.05),
    "ps": (5.0e4, 1.1e5),
    "solin": (0.0, 600.0),
    "shflx": (-200.0, 400.0),
    "lhflx": (-200.0, 1500.0),
}


class MemberScaled(nn.Module):
    """The ensemble of the module docstring; ``mode`` members | mean | mean_spread |
    mean_spread_ood (and ood_score) | echo_bm (outputs = the bm_* inputs, for each of 2
    members)."""

    forward_source: Final[str]
    mode: Final[str]
    members: Final[int]
    q_index: Final[int]
    nlev: Final[int]
    nlev_q: Final[int]
    heating: Final[float]
    drying: Final[float]
    precip: Final[float]
    nan_in: Final[str]
    ood_t0: Final[float]
    ood_dt: Final[float]

    def __init__(
        self,
        n_inputs: int,
        n_outputs: int,
        mode: str,
        members: int,
        heating: float = HEATING,
        nan_in: str = "",
    ) -> None:
        super().__init__()
        self.mode = mode
        self.nan_in = nan_in
        self.members = members
        self.q_index = 1
        self.nlev = NLEV
        self.nlev_q = NLEV_Q
        self.heating = heating
        self.drying = DRYING
        self.precip = PRECIP
        self.ood_t0, self.ood_dt = OOD_T0, OOD_DT
        self.forward_source = forward_source(n_inputs, n_outputs)

    @torch.jit.export
    def forward_fields(self, fields: list[Tensor]) -> list[Tensor]:
        q = fields[self.q_index]
        ncol = q.shape[0]
        if self.mode == "echo_bm":
            n = len(fields)
            return [
                f.unsqueeze(0).expand(self.members, ncol, f.shape[1]).contiguous()
                for f in fields[n - 3 :]
            ]
        m = torch.arange(1, self.members + 1, dtype=torch.float32).view(self.members, 1, 1)
        heating = m * self.heating * torch.ones(1, ncol, self.nlev)
        nan_column = (torch.arange(ncol) % 3 == 1).view(ncol, 1)
        if self.nan_in == "members":
            nan = torch.full_like(heating, float("nan"))
            heating = torch.where((m == 2.0) & nan_column.unsqueeze(0), nan, heating)
        moistening = -m * self.drying * q[:, :1].unsqueeze(0).expand(1, ncol, self.nlev_q)
        precip = m * self.precip * torch.ones(1, ncol, 1)
        outputs = [heating, moistening, precip]
        if self.mode == "members":
            return outputs
        means = [y.mean(dim=0) for y in outputs]
        if self.mode == "mean":
            return means
        spreads = [y.std(dim=0) for y in outputs]
        if self.nan_in == "spread":
            nan = torch.full_like(spreads[0], float("nan"))
            spreads[0] = torch.where(nan_column, nan, spreads[0])
        if self.mode == "mean_spread_ood":
            return means + spreads + [(fields[0][:, :1] - self.ood_t0) / self.ood_dt]
        return means + spreads


def specs(fields: tuple[tuple[str, str, int], ...]) -> list[FieldSpec]:
    return [FieldSpec(name, units, nlev) for name, units, nlev in fields]


def ranges(inputs: list[FieldSpec]) -> dict[str, dict[str, list[float]]]:
    return {
        f.name: {"min": [RANGES[f.name][0]] * f.nlev, "max": [RANGES[f.name][1]] * f.nlev}
        for f in inputs
        if f.name in RANGES
    }


def write(
    out: Path,
    name: str,
    inputs: list[FieldSpec],
    outputs: list[FieldSpec],
    mode: str,
    members: int,
    with_ranges: bool = True,
    heating: float = HEATING,
    nan_in: str = "",
) -> None:
    module = torch.jit.script(
        MemberScaled(len(inputs), len(outputs), mode, members, heating, nan_in)
    )
    if not hasattr(module, "forward"):
        module.define(module.forward_source)
    ensemble = members if mode in ("members", "echo_bm") else 1
    metadata = ModelMetadata(
        model_kind="test",
        inputs=inputs,
        outputs=outputs,
        ensemble_size=ensemble,
        valid_range=ranges(inputs) if with_ranges else {},
    )
    save(module, out / f"{name}.pt", metadata)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    state, outputs = specs(STATE), specs(OUTPUTS)
    spreads = [FieldSpec(f"{f.name}_spread", f.units, f.nlev) for f in outputs]
    write(out, "members", state, outputs, "members", MEMBERS)
    write(out, "mean_spread", state, outputs + spreads, "mean_spread", MEMBERS)
    write(out, "mean", state, outputs, "mean", MEMBERS, with_ranges=False)
    write(out, "with_bm", state + specs(BM), outputs, "echo_bm", 2)
    bad_units = [FieldSpec("heating", "K day-1", NLEV), *outputs[1:]]
    write(out, "bad_units", state, bad_units, "members", MEMBERS)
    write(
        out,
        "unknown_input",
        [*state, FieldSpec("u", "m s-1", NLEV)],
        outputs,
        "members",
        MEMBERS,
        with_ranges=False,
    )
    too_many = [FieldSpec("t", "K", 40), *state[1:]]
    write(out, "too_many_levels", too_many, outputs, "members", MEMBERS, with_ranges=False)
    write(out, "runaway", state, outputs, "mean", MEMBERS, with_ranges=False, heating=RUNAWAY)
    write(out, "nan_members", state, outputs, "members", MEMBERS, nan_in="members")
    write(out, "nan_spread", state, outputs + spreads, "mean_spread", MEMBERS, nan_in="spread")
    score = FieldSpec("ood_score", "1", 1)
    write(out, "ood_score", state, outputs + spreads + [score], "mean_spread_ood", MEMBERS)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_coupling_models.py OUTDIR")
    main(Path(sys.argv[1]))

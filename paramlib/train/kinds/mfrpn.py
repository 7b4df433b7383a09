"""Kind ``mfrpn``: the multi-fidelity RPN ensemble (`MFRPN`): the HF store in ``data.store``,
the LF store in ``data.lf_store``; loss MSE_HF + alpha MSE_LF (`mf_loss`)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from paramlib.models import MFRPN
from paramlib.models.mfrpn import COMPOSITIONS
from paramlib.train.kinds import ModelKind, Problems, one_of, rpn, widths
from paramlib.train.kinds.rpn import RPNOptions, RPNTask

BM_COMPOSITION = "hf_of_bm_and_x"  # HF([BM(x), x]): the physics scheme stands in for the LF-RPN


@dataclass
class MFRPNOptions(RPNOptions):
    composition: str = "hf_of_lf"
    alpha: float = 1.0  # weight of the LF loss
    hf_hidden: list[int] | None = None  # default: hidden


def problems(options: MFRPNOptions) -> Problems:
    yield from rpn.problems(options)
    yield from one_of("model.composition", options.composition, COMPOSITIONS)
    yield from widths("model.hf_hidden", options.hf_hidden)
    if options.members < 2:
        yield "model.members", "an MF-RPN ensemble needs at least 2 members"


def trains_lf(options: MFRPNOptions) -> bool:
    return options.composition != BM_COMPOSITION


class MFRPNTask(RPNTask):
    @classmethod
    def with_lf(cls, options: MFRPNOptions) -> bool:
        return trains_lf(options)

    @classmethod
    def with_bm(cls, options: MFRPNOptions) -> bool:
        return not trains_lf(options)

    def network(self, first_member: int, count: int) -> nn.Module:
        n_x = self.spec["n_x"]
        return MFRPN.create(
            self.options.composition,
            n_x,
            self.outputs.size,
            n_bm=self.inputs.size - n_x,
            hidden=self.options.hidden,
            hf_hidden=self.options.hf_hidden,
            members=count,
            seed=self.config.train.seed,
            prior_scale=self.options.prior_scale,
            first_member=first_member,
        )


KIND = ModelKind(
    "mfrpn",
    MFRPNOptions,
    MFRPNTask,
    ensemble=True,
    normalisation="lf",
    problems=problems,
    needs_lf_store=trains_lf,
)

"""Kind ``rpn``: a randomized prior network ensemble (`RPN`) on one store — HF-only, LF-only or
the oracle, by the store the config names."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from paramlib.models import RPN
from paramlib.models.mlp import PAPER_HIDDEN
from paramlib.train.kinds import ModelKind, Problems, at_least_one, widths
from paramlib.train.tasks import FeatureOptions, FeatureTask, feature_problems


@dataclass
class RPNOptions(FeatureOptions):
    hidden: list[int] = field(default_factory=lambda: list(PAPER_HIDDEN))
    members: int = 32
    prior_scale: float = 1.0
    bootstrap_fraction: float = 0.8


def problems(options: RPNOptions) -> Problems:
    yield from feature_problems(options)
    yield from at_least_one("model.members", options.members)
    if not 0 < options.bootstrap_fraction <= 1:
        yield "model.bootstrap_fraction", f"expected in (0, 1], got {options.bootstrap_fraction}"
    yield from widths("model.hidden", options.hidden)


class RPNTask(FeatureTask):
    def bootstrap_fraction(self) -> float:
        return self.options.bootstrap_fraction

    def network(self, first_member: int, count: int) -> nn.Module:
        return RPN.create(
            self.inputs.size,
            self.outputs.size,
            self.options.hidden,
            count,
            seed=self.config.train.seed,
            prior_scale=self.options.prior_scale,
            first_member=first_member,
        )


KIND = ModelKind("rpn", RPNOptions, RPNTask, ensemble=True, problems=problems)

"""Kind ``mlp``: a deterministic MLP on flat normalised features (one `EnsembleMLP` member)."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from paramlib.models import EnsembleMLP
from paramlib.models.mlp import PAPER_HIDDEN
from paramlib.train.kinds import ModelKind, Problems, widths
from paramlib.train.tasks import FeatureOptions, FeatureTask, feature_problems


@dataclass
class MLPOptions(FeatureOptions):
    hidden: list[int] = field(default_factory=lambda: list(PAPER_HIDDEN))


def problems(options: MLPOptions) -> Problems:
    yield from feature_problems(options)
    yield from widths("model.hidden", options.hidden)


class MLPTask(FeatureTask):
    def network(self, first_member: int, count: int) -> nn.Module:
        n_in, n_out = self.inputs.size, self.outputs.size
        return EnsembleMLP.create(n_in, n_out, self.options.hidden, 1, seed=self.config.train.seed)


KIND = ModelKind("mlp", MLPOptions, MLPTask, problems=problems)

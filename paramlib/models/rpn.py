"""Randomized prior network (RPN) ensembles and the bootstrap subsets their members train on.

Each member = trainable MLP + ``prior_scale`` x a fixed random MLP of the same architecture
(Bhouri et al. 2023; DESIGN.md "RPN / MF-RPN"). Both are `EnsembleMLP` stacks, so the whole
ensemble is one batched computation and one optimizer over ``rpn.parameters()`` (the prior's
weights are buffers: never returned by ``parameters()``, never given gradients).

Training a step, as a trainer does it::

    sampler = BootstrapSampler(n_samples=len(x_train), members=rpn.members, seed=seed)
    index = sampler.batch(step, batch_size)        # (M, B): member m's rows of its subset
    loss = ensemble_mse(rpn(x_train[index]), y_train[index])   # x, y normalised
    optimizer.zero_grad(); loss.backward(); optimizer.step()
"""

from collections.abc import Sequence
from typing import Final, Self

import numpy as np
import torch
from torch import Tensor, nn

from paramlib.models.mlp import LEAKY_SLOPE, PAPER_HIDDEN, EnsembleMLP

TRAINABLE_STREAM = 0
PRIOR_STREAM = 1
BOOTSTRAP_FRACTION = 0.8  # each member's subset, drawn without replacement (the paper's)


class RPN(nn.Module):
    """M members: trainable(x) + prior_scale * prior(x), (B|M,B, n_in) -> (M, B, n_out)."""

    members: Final[int]
    prior_scale: Final[float]
    __jit_unused_properties__ = ["n_in", "n_out"]

    def __init__(self, trainable: EnsembleMLP, prior: EnsembleMLP, prior_scale: float = 1.0):
        super().__init__()
        if trainable.sizes != prior.sizes or trainable.members != prior.members:
            raise ValueError(
                f"prior {prior.members} x {prior.sizes} differs from the trainable network "
                f"{trainable.members} x {trainable.sizes}"
            )
        self.members = trainable.members
        self.prior_scale = float(prior_scale)
        self.trainable = trainable
        self.prior = prior
        for name, parameter in list(prior.named_parameters()):
            # Buffers rather than frozen parameters: no optimizer, clip_grad_norm_ or DDP
            # bucket can pick them up by accident, and they still save and load.
            owner = prior.get_submodule(name.rpartition(".")[0])
            leaf = name.rpartition(".")[2]
            delattr(owner, leaf)
            owner.register_buffer(leaf, parameter.detach())

    @classmethod
    def create(
        cls,
        n_in: int,
        n_out: int,
        hidden: Sequence[int] = PAPER_HIDDEN,
        members: int = 32,
        *,
        seed: int = 0,
        prior_scale: float = 1.0,
        first_member: int = 0,
        stream: int = 0,
        negative_slope: float = LEAKY_SLOPE,
    ) -> Self:
        """Members ``first_member .. first_member + members - 1`` of the ensemble that
        ``seed`` defines: trainable and prior weights come from separate per-member streams
        (``stream`` and ``stream + 1``; two RPNs from one seed need streams 2 apart)."""
        nets = [
            EnsembleMLP.create(
                n_in,
                n_out,
                hidden,
                members,
                seed=seed,
                stream=stream + offset,
                first_member=first_member,
                negative_slope=negative_slope,
            )
            for offset in (TRAINABLE_STREAM, PRIOR_STREAM)
        ]
        return cls(*nets, prior_scale=prior_scale)

    @classmethod
    def cat(cls, parts: Sequence["RPN"]) -> Self:
        """One RPN with the members of `parts` in order (member-parallel slices joined)."""
        scales = {p.prior_scale for p in parts}
        if len(scales) != 1:
            raise ValueError(f"parts have different prior scales {sorted(scales)}")
        return cls(
            EnsembleMLP.cat([p.trainable for p in parts]),
            EnsembleMLP.cat([p.prior for p in parts]),
            prior_scale=scales.pop(),
        )

    @property
    def n_in(self) -> int:
        return self.trainable.sizes[0]

    @property
    def n_out(self) -> int:
        return self.trainable.sizes[-1]

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            # The prior is fixed: no graph for it, even when x requires grad (MF-RPN's HF
            # input is the LF prediction), so its activations are freed at once.
            prior = self.prior(x)
        return self.trainable(x).add_(prior, alpha=self.prior_scale)


def ensemble_mse(prediction: Tensor, target: Tensor, weights: Tensor | None = None) -> Tensor:
    """Sum over members of each member's mean squared error.

    prediction (M, B, F); target (M, B, F) (per-member batches) or (B, F). The sum, not the
    mean, over members gives every member the gradient it would get if trained alone.
    weights (M, B) of 0 and 1: each member's mean over its samples only (streamed bootstrap
    subsets, where every member gets the same batch).
    """
    if weights is None:
        return (prediction - target).square().mean(dim=(-2, -1)).sum()
    per_sample = (prediction - target).square().mean(dim=-1)
    return ((per_sample * weights).sum(dim=-1) / weights.sum(dim=-1).clamp_min(1.0)).sum()


class BootstrapSampler:
    """Per-member bootstrap subsets and the minibatches drawn from them.

    Member m trains on ``subsets[m]``: ``round(fraction * n_samples)`` distinct indices
    drawn without replacement, fixed for the run. Minibatches go through each subset in a
    fresh per-member order every epoch (the last partial batch of an epoch is dropped).
    Everything derives from ``(seed, epoch)``, never from past calls: ``batch(step, ...)``
    for any step gives the same indices, so a resumed run only needs its step counter.
    ``first_member`` gives member-parallel ranks the subsets of their slice of members.
    Samplers over different data in one run (MF-RPN's LF and HF stores) take different
    seeds, so that their draws are unrelated.
    """

    def __init__(
        self,
        n_samples: int,
        members: int,
        fraction: float = BOOTSTRAP_FRACTION,
        seed: int = 0,
        first_member: int = 0,
    ) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction: expected in (0, 1], got {fraction}")
        size = round(fraction * n_samples)
        if size < 1:
            raise ValueError(f"a fraction {fraction} of {n_samples} samples is empty")
        self.n_samples, self.members, self.size, self.seed = n_samples, members, size, seed
        self.first_member = first_member
        self.subsets = torch.from_numpy(
            np.stack(
                [
                    np.random.default_rng([seed, 0, first_member + m]).choice(
                        n_samples, size, replace=False
                    )
                    for m in range(members)
                ]
            )
        )
        self._cached: tuple[int, Tensor] | None = None  # (epoch, its order): steps reuse it

    def steps_per_epoch(self, batch_size: int) -> int:
        if not 1 <= batch_size <= self.size:
            raise ValueError(
                f"batch_size: expected 1 .. {self.size} (the bootstrap subset size), "
                f"got {batch_size}"
            )
        return self.size // batch_size

    def epoch_order(self, epoch: int) -> Tensor:
        """(M, size): every member's subset in its order for `epoch`."""
        if self._cached is None or self._cached[0] != epoch:
            positions = [
                np.random.default_rng([self.seed, 1, epoch, self.first_member + m]).permutation(
                    self.size
                )
                for m in range(self.members)
            ]
            order = torch.gather(self.subsets, 1, torch.from_numpy(np.stack(positions)))
            self._cached = (epoch, order)
        return self._cached[1]

    def batch(self, step: int, batch_size: int) -> Tensor:
        """(M, batch_size) int64 sample indices for training step `step` (from 0)."""
        epoch, k = divmod(step, self.steps_per_epoch(batch_size))
        return self.epoch_order(epoch)[:, k * batch_size : (k + 1) * batch_size]

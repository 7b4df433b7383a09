"""Vectorized ensemble MLP: M members' weights stacked, one batched matmul per layer.

A deterministic MLP is the same class with ``members=1``. Members are initialised from
their own random streams, derived from ``(seed, stream, member index)``: members differ in
initialisation (the MF-RPN paper's public code seeds every member alike; DESIGN.md says not
to copy that), and member ``i`` gets the same weights whichever slice of the ensemble is
built, so member-parallel training can build only its slice and the slices concatenate
(`EnsembleMLP.cat`) into the ensemble one process would have built.
"""

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Final, Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

LEAKY_SLOPE = 0.15  # the MF-RPN networks' LeakyReLU slope
PAPER_HIDDEN: tuple[int, ...] = (512,) * 7  # 7 hidden layers x 512 (Bhouri et al. 2023)


def member_generator(seed: int, stream: int, member: int) -> torch.Generator:
    """An independent torch generator for one member of one stream (e.g. trainable, prior)."""
    state = np.random.SeedSequence([seed, stream, member]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class EnsembleLinear(nn.Module):
    """M independent affine maps: (M, B, fan_in) -> (M, B, fan_out), as one baddbmm.

    The weight is stored (M, fan_in, fan_out) so that x @ W needs no transpose, and the bias
    (M, 1, fan_out) is fused into the matmul by baddbmm (no separate broadcast add pass).
    """

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        if weight.dim() != 3 or tuple(bias.shape) != (weight.shape[0], 1, weight.shape[2]):
            raise ValueError(
                f"expected weight (M, fan_in, fan_out) and bias (M, 1, fan_out), "
                f"got {tuple(weight.shape)} and {tuple(bias.shape)}"
            )
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def glorot_normal(fan_in: int, fan_out: int, generator: torch.Generator) -> Tensor:
    """(fan_in, fan_out) normal weights with variance 2 / (fan_in + fan_out)."""
    return torch.randn(fan_in, fan_out, generator=generator) * math.sqrt(2.0 / (fan_in + fan_out))


class EnsembleMLP(nn.Module):
    """M MLPs n_in -> hidden... -> n_out with LeakyReLU between layers, none after the last.

    forward accepts (B, n_in), one batch that every member sees, or (M, B, n_in), a batch
    per member (bootstrap subsets); it returns (M, B, n_out).
    """

    members: Final[int]
    negative_slope: Final[float]
    __jit_unused_properties__ = ["sizes"]  # Python-side helpers, not scripted

    def __init__(self, layers: Sequence[EnsembleLinear], negative_slope: float = LEAKY_SLOPE):
        super().__init__()
        if not layers:
            raise ValueError("expected at least one layer")
        self.members = int(layers[0].weight.shape[0])
        for index, (a, b) in enumerate(pairwise(layers)):
            if b.weight.shape[0] != self.members or b.weight.shape[1] != a.weight.shape[2]:
                raise ValueError(
                    f"layer {index + 1}: weight {tuple(b.weight.shape)} does not follow "
                    f"{tuple(a.weight.shape)}"
                )
        self.negative_slope = negative_slope
        self.layers = nn.ModuleList(layers)

    @classmethod
    def create(
        cls,
        n_in: int,
        n_out: int,
        hidden: Sequence[int] = PAPER_HIDDEN,
        members: int = 1,
        *,
        seed: int = 0,
        stream: int = 0,
        first_member: int = 0,
        negative_slope: float = LEAKY_SLOPE,
    ) -> Self:
        """Glorot-normal weights and zero biases; member i (counted from 0 over the whole
        ensemble, so ``first_member`` + local index) draws from `member_generator(seed,
        stream, i)`."""
        if members < 1:
            raise ValueError(f"members: expected >= 1, got {members}")
        generators = [member_generator(seed, stream, first_member + m) for m in range(members)]
        layers = []
        for fan_in, fan_out in pairwise([n_in, *hidden, n_out]):
            weight = torch.stack([glorot_normal(fan_in, fan_out, g) for g in generators])
            layers.append(EnsembleLinear(weight, torch.zeros(members, 1, fan_out)))
        return cls(layers, negative_slope)

    @classmethod
    def cat(cls, parts: Sequence["EnsembleMLP"]) -> Self:
        """One ensemble holding the members of `parts`, in order (same architecture)."""
        layers = [
            EnsembleLinear(
                torch.cat([p.layers[i].weight.detach() for p in parts]),
                torch.cat([p.layers[i].bias.detach() for p in parts]),
            )
            for i in range(len(parts[0].layers))
        ]
        return cls(layers, parts[0].negative_slope)

    @property
    def sizes(self) -> list[int]:
        """[n_in, *hidden, n_out]."""
        first = self.layers[0].weight
        return [int(first.shape[1]), *(int(layer.weight.shape[2]) for layer in self.layers)]

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            # A stride-0 view: every member reads the same batch without a copy.
            x = x.expand(self.members, -1, -1)
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < last:
                # In place: baddbmm's backward needs its inputs, not its output, and
                # leaky_relu's backward can use its output (slope > 0), so nothing is lost.
                x = F.leaky_relu(x, self.negative_slope, inplace=True)
        return x

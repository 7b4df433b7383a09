"""Small untrained TorchScript models that follow the paramlib forward convention.

Used by tests, examples, the demo and the benchmarks. `make_example(kind, seed)` returns a
scripted model and its metadata, ready for `paramlib.export.save`.
"""

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Final

import torch
from torch import Tensor, nn

from paramlib.export import FieldSpec, ModelMetadata, forward_source

LEAKY_SLOPE = 0.15  # the MF-RPN networks' LeakyReLU slope


def _glorot_normal(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    fan_in, fan_out = shape[-2], shape[-1]
    return torch.randn(shape, generator=generator) * math.sqrt(2.0 / (fan_in + fan_out))


class MLP(nn.Module):
    """(ncol, n_in) -> (ncol, n_out). `hidden` lists the hidden widths: [512] * 7 is 7 x 512."""

    def __init__(
        self,
        n_in: int,
        hidden: Sequence[int],
        n_out: int,
        generator: torch.Generator,
        negative_slope: float = LEAKY_SLOPE,
    ) -> None:
        super().__init__()
        sizes = [n_in, *hidden, n_out]
        layers: list[nn.Module] = []
        for fan_in, fan_out in pairwise(sizes):
            linear = nn.Linear(fan_in, fan_out)
            with torch.no_grad():
                linear.weight.copy_(_glorot_normal((fan_in, fan_out), generator).T)
                linear.bias.zero_()
            layers += [linear, nn.LeakyReLU(negative_slope)]
        self.layers = nn.Sequential(*layers[:-1])  # no activation after the output layer

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class StackedLinear(nn.Module):
    """M independent linear layers as one batched matmul: (M, n, fan_in) -> (M, n, fan_out)."""

    def __init__(self, members: int, fan_in: int, fan_out: int, generator: torch.Generator) -> None:
        super().__init__()
        self.weight = nn.Parameter(_glorot_normal((members, fan_in, fan_out), generator))
        self.bias = nn.Parameter(torch.zeros(members, 1, fan_out))

    def forward(self, x: Tensor) -> Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


class EnsembleMLP(nn.Module):
    """M MLPs with stacked weights: (ncol, n_in) -> (M, ncol, n_out), no loop over members."""

    members: Final[int]

    def __init__(
        self,
        n_in: int,
        hidden: Sequence[int],
        n_out: int,
        members: int,
        generator: torch.Generator,
        negative_slope: float = LEAKY_SLOPE,
    ) -> None:
        super().__init__()
        self.members = members
        sizes = [n_in, *hidden, n_out]
        layers: list[nn.Module] = []
        for fan_in, fan_out in pairwise(sizes):
            layers += [
                StackedLinear(members, fan_in, fan_out, generator),
                nn.LeakyReLU(negative_slope),
            ]
        self.layers = nn.Sequential(*layers[:-1])

    def forward(self, x: Tensor) -> Tensor:
        # expand is a stride-0 view: every member reads the same input without a copy.
        return self.layers(x.expand(self.members, -1, -1))


class ColumnModel(nn.Module):
    """Named column fields in, named column fields out, through one network.

    `forward_fields` normalises the concatenated inputs with fixed mean/std buffers (so
    inputs are in physical units), runs `net` and splits its last dimension into the output
    fields, scaled back to physical units. The net maps (ncol, n_in) to (ncol, n_out), or to
    (M, ncol, n_out) for an ensemble.

    TorchScript has no *args, so `to_torchscript()` adds the convention's
    forward(x0, x1, ...) with one argument per input field to the scripted module.
    """

    # Also a TorchScript constant: models whose generated forward differs get distinct
    # TorchScript class types, so defining forward on one never clashes with another.
    forward_source: Final[str]
    out_nlev: list[int]

    def __init__(
        self,
        in_nlev: Sequence[int],
        out_nlev: Sequence[int],
        net: nn.Module,
        in_mean: Tensor,
        in_std: Tensor,
        out_scale: Tensor,
    ) -> None:
        super().__init__()
        n_in, n_out = sum(in_nlev), sum(out_nlev)
        for name, tensor, size in (
            ("in_mean", in_mean, n_in),
            ("in_std", in_std, n_in),
            ("out_scale", out_scale, n_out),
        ):
            if tuple(tensor.shape) != (size,):
                raise ValueError(f"{name}: expected shape ({size},), got {tuple(tensor.shape)}")
            self.register_buffer(name, tensor.to(torch.float32))
        self.out_nlev = list(out_nlev)
        self.net = net
        self.forward_source = forward_source(len(in_nlev), len(out_nlev))

    @torch.jit.export
    def forward_fields(self, fields: list[Tensor]) -> list[Tensor]:
        x = (torch.cat(fields, dim=1) - self.in_mean) / self.in_std
        y = self.net(x) * self.out_scale
        return list(torch.split(y, self.out_nlev, dim=-1))

    def to_torchscript(self) -> torch.jit.ScriptModule:
        scripted = torch.jit.script(self)
        if not hasattr(scripted, "forward"):  # a model sharing this class type defined it
            scripted.define(self.forward_source)
        return scripted


class EnsembleColumnModel(ColumnModel):
    """A ColumnModel over an M-member EnsembleMLP: outputs are (M, ncol, nlev)."""

    def __init__(
        self,
        in_nlev: Sequence[int],
        out_nlev: Sequence[int],
        hidden: Sequence[int],
        members: int,
        in_mean: Tensor,
        in_std: Tensor,
        out_scale: Tensor,
        generator: torch.Generator,
    ) -> None:
        net = EnsembleMLP(sum(in_nlev), hidden, sum(out_nlev), members, generator)
        super().__init__(in_nlev, out_nlev, net, in_mean, in_std, out_scale)


# name: (units, long_name, typical value, typical spread). Inputs are normalised by value
# and spread; outputs are produced at the scale of their spread.
_FIELDS: dict[str, tuple[str, str, float, float]] = {
    "x": ("1", "example input", 0.0, 1.0),
    "y": ("1", "example output", 0.0, 1.0),
    "T": ("K", "air temperature", 250.0, 40.0),
    "q": ("kg kg-1", "specific humidity", 5e-3, 5e-3),
    "ps": ("Pa", "surface pressure", 1.0e5, 1.0e3),
    "PS": ("Pa", "surface pressure", 1.0e5, 1.0e3),
    "SOLIN": ("W m-2", "incoming solar radiation at the top of the atmosphere", 400.0, 300.0),
    "SHFLX": ("W m-2", "surface sensible heat flux", 15.0, 15.0),
    "LHFLX": ("W m-2", "surface latent heat flux", 100.0, 80.0),
    "heating": ("K s-1", "temperature tendency", 0.0, 1e-5),
    "moistening": ("kg kg-1 s-1", "specific humidity tendency", 0.0, 1e-8),
    "precip": ("mm s-1", "precipitation rate", 0.0, 1e-4),
}
_NAMED_IN = (("T", 8), ("q", 8), ("ps", 1))
_NAMED_OUT = (("heating", 8), ("moistening", 8), ("precip", 1))
_Fields = tuple[tuple[str, int], ...]  # (name, nlev) per field
# kind: (inputs, outputs, hidden widths, ensemble members)
_KINDS: dict[str, tuple[_Fields, _Fields, list[int], int]] = {
    "simple": ((("x", 4),), (("y", 3),), [16, 16], 1),
    "named": (_NAMED_IN, _NAMED_OUT, [32, 32], 1),
    "ensemble": (_NAMED_IN, _NAMED_OUT, [32, 32], 4),
    "mfrpn_size": (
        (("T", 26), ("q", 22), ("PS", 1), ("SOLIN", 1), ("SHFLX", 1), ("LHFLX", 1)),
        (("heating", 26), ("moistening", 22)),
        [512] * 7,
        1,
    ),
    "small": ((("x", 100),), (("y", 100),), [256] * 3, 1),
}
EXAMPLE_KINDS: tuple[str, ...] = tuple(_KINDS)
VALID_RANGE_SPREADS = 5.0  # declared valid range: typical value +- this many spreads


def _field(name: str, nlev: int) -> FieldSpec:
    units, long_name, _, _ = _FIELDS[name]
    return FieldSpec(name=name, units=units, nlev=nlev, long_name=long_name)


def _per_feature(fields: Sequence[tuple[str, int]], column: int) -> Tensor:
    return torch.cat([torch.full((nlev,), _FIELDS[name][column]) for name, nlev in fields])


def make_example(kind: str, seed: int = 0) -> tuple[torch.jit.ScriptModule, ModelMetadata]:
    """An untrained scripted model of the given kind (see EXAMPLE_KINDS) and its metadata.
    The same kind and seed give the same weights."""
    if kind not in _KINDS:
        raise ValueError(f"kind: expected one of {', '.join(EXAMPLE_KINDS)}, got {kind!r}")
    inputs, outputs, hidden, members = _KINDS[kind]
    generator = torch.Generator().manual_seed(seed)
    in_nlev = [nlev for _, nlev in inputs]
    out_nlev = [nlev for _, nlev in outputs]
    in_mean, in_std = _per_feature(inputs, 2), _per_feature(inputs, 3)
    out_scale = _per_feature(outputs, 3)
    if members > 1:
        model: ColumnModel = EnsembleColumnModel(
            in_nlev, out_nlev, hidden, members, in_mean, in_std, out_scale, generator
        )
    else:
        net = MLP(sum(in_nlev), hidden, sum(out_nlev), generator)
        model = ColumnModel(in_nlev, out_nlev, net, in_mean, in_std, out_scale)
    metadata = ModelMetadata(
        model_kind="mlp-ensemble" if members > 1 else "mlp",
        inputs=[_field(name, nlev) for name, nlev in inputs],
        outputs=[_field(name, nlev) for name, nlev in outputs],
        ensemble_size=members,
        valid_range={
            name: {
                "min": [_FIELDS[name][2] - VALID_RANGE_SPREADS * _FIELDS[name][3]] * nlev,
                "max": [_FIELDS[name][2] + VALID_RANGE_SPREADS * _FIELDS[name][3]] * nlev,
            }
            for name, nlev in inputs
        },
        provenance={
            "source": "paramlib.models.examples.make_example",
            "kind": kind,
            "seed": seed,
            "trained": False,
        },
    )
    return model.eval().to_torchscript(), metadata

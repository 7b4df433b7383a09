"""Model files from trained networks: named physical fields in, named physical fields out.

`export_module` wraps a network that maps normalised features (B, n_in) to normalised
predictions (M, B, n_out) (`RPN`, `MFRPN`, `EnsembleMLP`) with its normalisers and field
layouts into a scriptable module following `paramlib.export`'s forward convention, and
returns the metadata to save with it::

    module, metadata = export_module(rpn, inputs, targets, in_norm, out_norm, output="mean")
    paramlib.export.save(module, "model.pt", metadata)

Output modes (an ensemble can be exported several ways from one checkpoint):

- ``members``      every member: (M, ncol, nlev) per target, ensemble_size M;
- ``mean``         the ensemble mean: (ncol, nlev) per target;
- ``mean_spread``  per target its mean, then per target ``<name>_spread``, the standard
  deviation over members (n - 1 in the denominator), same units;
- ``member``       one member (``member=i``): (ncol, nlev) per target; the file holds that
  member's weights alone, so it costs what one member costs.

The last three have ensemble_size 1 in the metadata, as does any mode of a 1-member network.

``ood=OodScore(...)`` (modes mean and mean_spread) adds a last output ``ood_score`` (ncol, 1):
a host falls back where it is above 1 (`paramlib.models.ood`, made by `paramlib ood calibrate`).

``compute_dtype=torch.bfloat16`` (or float16) stores the network's weights in that type and
runs it there, for GPUs; normalisation, inputs and outputs stay float32 (a surface pressure
of 1e5 Pa has a resolution of 512 Pa in bfloat16).
"""

import copy
from collections.abc import Mapping, Sequence
from typing import Any, Final

import torch
from torch import Tensor, nn

from paramlib.export import FieldSpec, ModelMetadata, forward_source
from paramlib.models.mlp import EnsembleLinear
from paramlib.models.normalise import FieldLayout, Normaliser
from paramlib.models.ood import OodScore
from paramlib.models.represent import InputTransform
from paramlib.ood_settings import OUTPUT_NAME as OOD_OUTPUT

OUTPUT_MODES = ("members", "mean", "mean_spread", "member")
OOD_MODES = ("mean", "mean_spread")  # one value per column: the score is an output beside them
SPREAD_SUFFIX = "_spread"


class ExportedEnsemble(nn.Module):
    """Physical (ncol, nlev) fields -> representation -> normalise -> net -> denormalise ->
    output mode."""

    # A TorchScript constant, so modules whose generated forward differs get distinct
    # TorchScript class types and defining forward on one never clashes with another.
    forward_source: Final[str]
    mode: Final[str]
    compute_dtype: torch.dtype
    out_nlev: list[int]

    def __init__(
        self,
        net: nn.Module,
        in_norm: Normaliser,
        out_norm: Normaliser,
        n_inputs: int,
        out_nlev: Sequence[int],
        mode: str,
        compute_dtype: torch.dtype,
        ood: OodScore | None = None,
        transform: InputTransform | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.ood = ood
        # Raw fields -> the features in_norm normalises (paramlib.models.represent).
        self.transform = InputTransform(copy.deepcopy(in_norm)) if transform is None else transform
        self.in_norm = in_norm
        self.out_norm = out_norm
        self.out_nlev = list(out_nlev)
        self.mode = mode
        self.compute_dtype = compute_dtype
        n_out = len(out_nlev) * (2 if mode == "mean_spread" else 1) + (ood is not None)
        self.forward_source = forward_source(n_inputs, n_out)

    @torch.jit.export
    def features(self, fields: list[Tensor]) -> Tensor:
        """The normalised input features (ncol, n) the network sees, in float32."""
        return self.in_norm(self.transform(torch.cat(fields, dim=1)))

    def normalised_outputs(self, x: Tensor) -> Tensor:
        return self.net(x.to(self.compute_dtype)).float()

    @torch.jit.export
    def forward_fields(self, fields: list[Tensor]) -> list[Tensor]:
        x = self.features(fields)
        z = self.normalised_outputs(x)
        y = self.out_norm.denormalise(z)
        if self.mode == "mean_spread":
            mean = list(torch.split(y.mean(dim=0), self.out_nlev, dim=-1))
            out = mean + list(torch.split(y.std(dim=0), self.out_nlev, dim=-1))
        else:
            if self.mode == "mean":
                y = y.mean(dim=0)
            elif y.shape[0] == 1:  # mode "member", or any mode of a 1-member network
                y = y[0]
            out = list(torch.split(y, self.out_nlev, dim=-1))
        if self.ood is not None:
            out.append(self.ood(x, z))
        return out

    @torch.jit.export
    def ood_components(self, fields: list[Tensor]) -> Tensor:
        """(ncol, 3) components of the OOD score (`paramlib.models.ood`); (ncol, 0) without."""
        x = self.features(fields)
        if self.ood is not None:
            return self.ood.components(x, self.normalised_outputs(x))
        return torch.zeros(x.shape[0], 0)

    @torch.jit.export
    def input_normalisation(self) -> tuple[Tensor, Tensor]:
        """(mean, std) of the inputs' levels in the order forward reads them; `save` checks
        the metadata's input order against it: the raw inputs', whatever the representation."""
        return self.transform.raw_norm.mean, self.transform.raw_norm.std

    def to_torchscript(self) -> torch.jit.ScriptModule:
        scripted = torch.jit.script(self)
        if not hasattr(scripted, "forward"):  # a module sharing this class type defined it
            scripted.define(self.forward_source)
        return scripted


def export_module(
    net: nn.Module,
    inputs: FieldLayout,
    outputs: FieldLayout,
    in_norm: Normaliser,
    out_norm: Normaliser,
    *,
    output: str = "members",
    member: int = 0,
    model_kind: str = "rpn",
    compute_dtype: torch.dtype = torch.float32,
    valid_range: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    provenance: Mapping[str, Any] | None = None,
    ood: OodScore | None = None,
    transform: InputTransform | None = None,
) -> tuple[torch.jit.ScriptModule, ModelMetadata]:
    """A scripted model file module and its metadata, ready for `paramlib.export.save`.

    `net` maps normalised (B, inputs.size) to normalised (M, B, outputs.size); `in_norm` and
    `out_norm` are the normalisers it was trained with (over `inputs` and `outputs`). The
    network is copied, so the trained model stays as it is (device, train mode). `ood` adds
    the output ``ood_score`` (ncol, 1) last (`paramlib.models.ood`; output modes `OOD_MODES`).
    `transform` (`paramlib.models.represent`, default: none) makes the features `in_norm`
    normalises from the raw input fields, as in training.
    """
    if output not in OUTPUT_MODES:
        raise ValueError(f"output: expected one of {', '.join(OUTPUT_MODES)}, got {output!r}")
    members = int(net.members)
    if not 0 <= member < members:
        raise ValueError(f"member: expected 0 .. {members - 1}, got {member}")
    if output == "mean_spread" and members < 2:
        raise ValueError("mean_spread needs an ensemble of at least 2 members")
    if ood is not None and output not in OOD_MODES:
        raise ValueError(
            f"ood: an OOD score goes with output {' or '.join(OOD_MODES)}, got {output!r}"
        )
    for name, norm, layout in (("in_norm", in_norm, inputs), ("out_norm", out_norm, outputs)):
        if norm.mean.shape[0] != layout.size:
            raise ValueError(f"{name} has {norm.mean.shape[0]} features, layout {layout.size}")
    # CPU copies in eval mode, so the caller's model stays as it was.
    net, in_norm, out_norm = (
        copy.deepcopy(module).to("cpu", dtype).eval()
        for module, dtype in (
            (net, compute_dtype),
            (in_norm, torch.float32),
            (out_norm, torch.float32),
        )
    )
    if output == "member":
        _keep_member(net, member)
    if ood is not None:
        ood = copy.deepcopy(ood).to("cpu", torch.float32).eval()
    if transform is not None:
        transform = copy.deepcopy(transform).to("cpu").eval()
    wrapper = ExportedEnsemble(
        net,
        in_norm,
        out_norm,
        len(inputs.fields),
        outputs.nlevs,
        output,
        compute_dtype,
        ood,
        transform,
    )
    out_fields = list(outputs.fields)
    if output == "mean_spread":
        out_fields += [
            FieldSpec(
                spec.name + SPREAD_SUFFIX,
                spec.units,
                spec.nlev,
                spec.level_order,
                f"ensemble standard deviation of {spec.long_name or spec.name}",
            )
            for spec in outputs.fields
        ]
    if ood is not None:
        out_fields.append(
            FieldSpec(OOD_OUTPUT, "1", 1, long_name="out-of-distribution score, > 1: fall back")
        )
    metadata = ModelMetadata(
        model_kind=model_kind,
        inputs=inputs.fields,
        outputs=out_fields,
        ensemble_size=members if output == "members" else 1,
        valid_range=dict(valid_range or {}),
        provenance={
            **dict(provenance or {}),
            "output": output,
            **({"member": member} if output == "member" else {}),
            "members_trained": members,
            "compute_dtype": str(compute_dtype).removeprefix("torch."),
        },
    )
    return wrapper.to_torchscript(), metadata


def _keep_member(net: nn.Module, member: int) -> None:
    """Cut every stacked layer of `net` (a copy) down to one member, in place."""
    for module in net.modules():
        if isinstance(module, EnsembleLinear):
            for tensors in (module._parameters, module._buffers):
                for name, tensor in tensors.items():
                    part = tensor.detach()[member : member + 1].clone()
                    tensors[name] = nn.Parameter(part) if tensors is module._parameters else part
        if hasattr(module, "members"):
            module.members = 1

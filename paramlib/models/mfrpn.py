"""Multi-fidelity RPN (MF-RPN, Bhouri et al. 2023): an HF-RPN on top of an LF-RPN.

Compositions (the config's ``composition``):

- ``hf_of_lf``        HF(LF(x)): the paper's; the HF input is the LF prediction alone.
- ``hf_of_lf_and_x``  HF([LF(x), x]): the LF prediction concatenated with the state.
- ``hf_of_bm_and_x``  HF([BM(x), x]): BM(x) is the Betts-Miller scheme's own output, given
  as named input fields (bm_heating, ...; the host runs BM anyway). No LF network here:
  physics takes its place, so the model's inputs are the x fields followed by the BM fields.

Members pair one to one: HF member i takes LF member i's prediction, so each
(LF_i, HF_i) pair is one multi-fidelity member with its own initialisation and bootstrap
subsets (as an ensemble of independently trained MF models, which is what an RPN ensemble
is); both RPNs must have the same member count. The LF mean would make every HF member
see the same input and shrink the spread the LF ensemble carries.

Loss (`mf_loss`): MSE_HF + alpha * MSE_LF, both as `ensemble_mse` (summed over members), on
an HF batch and an LF batch; with the LF compositions MSE_HF also trains the LF-RPN through
LF(x_hf). Everything here works on normalised features; by default the LF store's
statistics normalise both fidelities (`mf_statistics`).

Baselines need no class of their own: HF-only and LF-only RPNs are `RPN`s trained on one
store, the deterministic MLP is `EnsembleMLP` with one member, and the *oracle* is an HF-only
RPN whose training data also include HF +4K columns (an upper bound for the evaluation,
chosen in its config, never a deliverable model).
"""

from collections.abc import Mapping, Sequence
from typing import Final, NamedTuple, Self

import torch
from torch import Tensor, nn

from paramlib.models.mlp import PAPER_HIDDEN
from paramlib.models.normalise import Stats
from paramlib.models.rpn import RPN, ensemble_mse

COMPOSITIONS = ("hf_of_lf", "hf_of_lf_and_x", "hf_of_bm_and_x")
BM_PREFIX = "bm_"  # BM field names: the LF target's name with this prefix (bm_heating, ...)
LF_STREAM, HF_STREAM = 0, 2  # RPN.create streams: LF and HF members never share draws


class _FromLF(nn.Module):
    """HF input = LF(x) (member i's prediction for HF member i), optionally with x."""

    with_x: Final[bool]

    def __init__(self, lf: RPN, with_x: bool) -> None:
        super().__init__()
        self.lf = lf
        self.with_x = with_x

    def forward(self, x: Tensor) -> Tensor:
        prediction = self.lf(x)
        if not self.with_x:
            return prediction
        members, batch = prediction.shape[0], prediction.shape[1]
        return torch.cat([prediction, x.expand(members, batch, x.shape[-1])], dim=-1)


class _FromBM(nn.Module):
    """HF input = [BM(x), x] from features laid out as [x, BM(x)]."""

    n_x: Final[int]

    def __init__(self, n_x: int) -> None:
        super().__init__()
        self.n_x = n_x

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x[..., self.n_x :], x[..., : self.n_x]], dim=-1)


class MFRPN(nn.Module):
    """(B|M,B, n_in) normalised features -> (M, B, n_out) normalised HF prediction."""

    members: Final[int]
    __jit_unused_properties__ = ["lf"]

    def __init__(self, hf: RPN, lf: RPN | None, composition: str, n_x: int) -> None:
        super().__init__()
        if composition not in COMPOSITIONS:
            raise ValueError(
                f"composition: expected one of {', '.join(COMPOSITIONS)}, got {composition!r}"
            )
        self.composition = composition
        self.members = hf.members
        compose: nn.Module
        if composition == "hf_of_bm_and_x":
            if lf is not None:
                raise ValueError("hf_of_bm_and_x takes no LF-RPN: BM's output replaces it")
            compose = _FromBM(n_x)
        else:
            if lf is None:
                raise ValueError(f"{composition} needs an LF-RPN")
            if lf.members != hf.members:
                raise ValueError(
                    f"LF-RPN has {lf.members} members, HF-RPN {hf.members}: members pair one to one"
                )
            if lf.n_in != n_x:
                raise ValueError(f"LF-RPN takes {lf.n_in} features, x has {n_x}")
            with_x = composition == "hf_of_lf_and_x"
            if hf.n_in != lf.n_out + (n_x if with_x else 0):
                raise ValueError(
                    f"HF-RPN takes {hf.n_in} features; {composition} gives "
                    f"{lf.n_out + (n_x if with_x else 0)}"
                )
            compose = _FromLF(lf, with_x)
        self.compose = compose
        self.hf = hf

    @classmethod
    def create(
        cls,
        composition: str,
        n_x: int,
        n_out: int,
        *,
        n_lf_out: int | None = None,
        n_bm: int = 0,
        hidden: Sequence[int] = PAPER_HIDDEN,
        hf_hidden: Sequence[int] | None = None,
        members: int = 32,
        seed: int = 0,
        prior_scale: float = 1.0,
        first_member: int = 0,
    ) -> Self:
        """n_x state features; n_out HF targets; n_lf_out LF targets (default n_out);
        n_bm BM features (hf_of_bm_and_x only). ``hf_hidden`` defaults to ``hidden``.
        ``first_member``: this slice's first member, as in `RPN.create`."""
        n_lf_out = n_out if n_lf_out is None else n_lf_out
        if (composition == "hf_of_bm_and_x") != (n_bm > 0):
            raise ValueError(f"n_bm: {n_bm} BM features do not fit composition {composition!r}")
        common = {
            "members": members,
            "seed": seed,
            "prior_scale": prior_scale,
            "first_member": first_member,
        }
        lf = None
        if composition == "hf_of_bm_and_x":
            n_hf_in = n_bm + n_x
        else:
            lf = RPN.create(n_x, n_lf_out, hidden, stream=LF_STREAM, **common)
            n_hf_in = n_lf_out + (n_x if composition == "hf_of_lf_and_x" else 0)
        hf_sizes = hidden if hf_hidden is None else hf_hidden
        hf = RPN.create(n_hf_in, n_out, hf_sizes, stream=HF_STREAM, **common)
        return cls(hf, lf, composition, n_x)

    @property
    def lf(self) -> RPN | None:
        return self.compose.lf if isinstance(self.compose, _FromLF) else None

    def forward(self, x: Tensor) -> Tensor:
        return self.hf(self.compose(x))


class MFLoss(NamedTuple):
    total: Tensor  # mse_hf + alpha * mse_lf: call backward() on this
    hf: Tensor
    lf: Tensor | None


def mf_loss(
    model: MFRPN,
    x_hf: Tensor,
    y_hf: Tensor,
    x_lf: Tensor | None = None,
    y_lf: Tensor | None = None,
    alpha: float = 1.0,
    weights_hf: Tensor | None = None,
    weights_lf: Tensor | None = None,
) -> MFLoss:
    """MSE_HF + alpha * MSE_LF on normalised (M, B, F) per-member batches (or (B, F)).

    The LF term needs an LF batch (x_lf, y_lf) whenever the model has an LF-RPN and
    alpha > 0; hf_of_bm_and_x has none, and its loss is MSE_HF alone. Weights: as in
    `ensemble_mse`, per batch.
    """
    mse_hf = ensemble_mse(model(x_hf), y_hf, weights_hf)
    lf = model.lf
    if lf is None or alpha == 0.0:
        if x_lf is not None and lf is None:
            raise ValueError(f"{model.composition} has no LF-RPN to train on an LF batch")
        return MFLoss(mse_hf, mse_hf, None)
    if x_lf is None or y_lf is None:
        raise ValueError("alpha > 0: the LF term needs an LF batch (x_lf, y_lf)")
    mse_lf = ensemble_mse(lf(x_lf), y_lf, weights_lf)
    return MFLoss(mse_hf + alpha * mse_lf, mse_hf, mse_lf)


def mf_statistics(lf: Stats, hf: Stats, source: str = "lf") -> dict[str, Mapping]:
    """One statistics table for every field of an MF-RPN, from the LF and HF stores'.

    ``source="lf"`` (the paper's choice): LF statistics for every field the LF store has;
    a BM field (bm_<target>) takes the LF store's statistics of <target>, which describe
    the same scheme's output; fields only the HF store has keep the HF statistics.
    ``source="hf"``: the HF store's statistics.
    """
    if source == "hf":
        return dict(hf)
    if source != "lf":
        raise ValueError(f"source: expected 'lf' or 'hf', got {source!r}")
    table = {**hf, **lf}
    for name in hf:
        if name.startswith(BM_PREFIX) and name[len(BM_PREFIX) :] in lf:
            table[name] = lf[name[len(BM_PREFIX) :]]
    return table

"""Bi-LSTM emulator of WRF's multi-scale Kain-Fritsch cumulus scheme (MSKF, cu_physics = 11).

After Zhong et al. (GMD 2024, code x7zhong/WRF_DL_Cu); DESIGN.md, "Bi-LSTM MSKF emulator".

Network. The vertical levels are the sequence, surface to top. At every level the features are
the normalised inputs (2-D fields broadcast over the levels) and three derived fields computed
inside the module from the physical inputs, so the host passes only what WRF holds:

- qv_sat: saturation mixing ratio eps e_s / (p - e_s) (`paramlib.models.thermo`, shared with
  the feature kinds' invariant inputs);
- rh = qv / qv_sat;
- dp: p(k) - p(k+1), the pressure drop to the next level up; the top level repeats the one below.

Representations (`BiLSTMConfig.representation`, `scaling`, `drop_inputs`). The fields above
are the "physical" representation, every input normalised per level: the original one. A
warmer climate moves it far out of its training distribution where a field hardly varies at
a level in training (top-level pressure: a training std of 0.4 Pa; upper-level humidity), so
the "invariant" representation (after Beucler et al., Sci. Adv. 2024) derives instead

- rh = qv / qv_sat;
- sigma = p / p at the lowest level, and dsigma, its drop to the next level up;
- buoyancy = (h_parcel - h_sat(k)) / c_p in K: the lowest level's moist static energy
  c_p T + g z + L_v qv minus the level's saturation moist static energy c_p T + g z + L_v
  qv_sat (z from the layer thicknesses `thickness`): the plume buoyancy that convection
  responds to, which stays in place when the whole profile warms along a moist adiabat;

and the config's `drop_inputs` (e.g. t, th, qv, p, rho, pi) stay host inputs without being
features. `scaling: field` normalises every feature field by one mean and std over all its
levels instead of per level, so no level's tiny training spread amplifies a shift.
`target_scaling` does the same choice for the per-level targets (the loss's units): `field`
(one scale per tendency) or `level` (each level's own spread, floored).

A bidirectional LSTM (hidden 32, 3 layers by default) runs over the levels, so every level sees
the whole column. Heads: a kernel-1 Conv1d over the LSTM outputs for the per-level targets
(RTHCUTEN, RQVCUTEN, RQCCUTEN, RQRCUTEN, RQICUTEN, RQSCUTEN), and, from the LSTM outputs pooled
over the levels (mean and max), an MLP for the one-level targets (PRATEC, NCA) and an MLP for
the trigger logit. Which target is which follows from its level count in the store, and every
field is found by its name in the store's attrs (`config_from_store`), never by position.

Trigger. A column is triggered when its target NCA > 0 or any per-level target (tendency) is
non-zero. On the real WRF runs both halves of that rule select the same columns: MSKF sets NCA
(270 s in the frame for its shallow branch, the convective time scale for deep clouds) exactly
where it returns tendencies.

Loss (`bilstm_loss`). Mean absolute error of the normalised targets (each per-level target
divided by the RMS over levels of its per-level std, each one-level target by its std; no mean
shift, so zero stays zero), each target weighted alike, averaged over the triggered columns
only; plus `trigger_weight` x the binary cross-entropy of the trigger logit.

Post-processing (`MSKFPostprocess`, inside the exported model), in this order:

1. columns whose trigger probability is at most `trigger_threshold` get 0 for every output;
2. PRATEC and NCA (`nonnegative`) are clipped at 0;
3. held columns, those with `nca_prev` > `hold_nca_s`, return their `*_prev` inputs unchanged
   for every target that has one: the scheme did not recompute them.

Host contract. The model is called at every cumulus call (every CUDT minutes) for every column
of the tile. Besides the state, the host passes for each target X the field `X_prev` as the
previous call left it, and `nca_prev` as NCA stood at the end of the step of the previous call
(the value of the previous history frame when frames follow every call; in WRF that is the
current NCA + 60 CUDT - DT). A column with nca_prev > `hold_nca_s` (default 300 s = 60 CUDT
for the training runs' CUDT = 5 min) is still convecting: MSKF skips it and WRF holds its
tendencies, so the model returns the host's own values (NCA included: the host keeps counting
it down). The training store holds only the columns MSKF recomputed (nca_prev <= 270 s there).
Do not lower the threshold to nca_prev > 0: a column whose period ends before this call is
free again, and most re-firing columns have a positive nca_prev (wrf_mskf README). The one
column kind the rule does not reproduce is the period that ends exactly at the call
(nca_prev = 300 s): WRF zeroes it until the next call, the model evaluates it now.
"""

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
import zarr
from torch import Tensor, nn

from paramlib.export import FieldSpec, ModelMetadata, forward_source, save
from paramlib.models.normalise import (
    SCALINGS,
    FieldLayout,
    Normaliser,
    pooled,
    store_fields,
    store_normalisation,
)
from paramlib.models.thermo import plume_buoyancy, saturation_mixing_ratio

MODEL_KIND = "bilstm_mskf"
PREV = "_prev"  # suffix of the previous call's fields in the store (sampling.previous)
DERIVED: tuple[FieldSpec, ...] = (
    FieldSpec("qv_sat", "kg kg-1", 1, long_name="saturation water vapour mixing ratio"),
    FieldSpec("rh", "1", 1, long_name="relative humidity, qv / qv_sat"),
    FieldSpec("dp", "Pa", 1, long_name="pressure drop to the next level up"),
)


def derived_inputs(t: Tensor, p: Tensor, qv: Tensor) -> list[Tensor]:
    """qv_sat, rh and dp (module docstring), each (ncol, nlev), from (ncol, nlev) t, p, qv."""
    qv_sat = saturation_mixing_ratio(t, p)
    return [qv_sat, qv / qv_sat, _level_drop(p)]


def _level_drop(x: Tensor) -> Tensor:
    """x(k) - x(k+1); the top level repeats the one below."""
    drop = x[:, :-1] - x[:, 1:]
    return torch.cat([drop, drop[:, -1:]], dim=1)


def invariant_inputs(t: Tensor, p: Tensor, qv: Tensor, dz: Tensor) -> list[Tensor]:
    """rh, sigma, dsigma and buoyancy (`INVARIANT`), each (ncol, nlev), from (ncol, nlev) t,
    p, qv and the layer thickness dz (m)."""
    qv_sat = saturation_mixing_ratio(t, p)
    sigma = p / p[:, :1]
    z = torch.cumsum(dz, dim=1) - 0.5 * dz  # height of the mass levels above the ground
    return [qv / qv_sat, sigma, _level_drop(sigma), plume_buoyancy(t, z, qv_sat, qv)]


# The climate-invariant representation (`BiLSTMConfig.representation = "invariant"`, after
# Beucler et al., Sci. Adv. 2024): fields whose distribution a warmer climate keeps in place.
INVARIANT: tuple[FieldSpec, ...] = (
    FieldSpec("rh", "1", 1, long_name="relative humidity, qv / qv_sat"),
    FieldSpec("sigma", "1", 1, long_name="pressure / pressure at the lowest level"),
    FieldSpec("dsigma", "1", 1, long_name="sigma drop to the next level up"),
    FieldSpec(
        "buoyancy",
        "K",
        1,
        long_name="lowest level's moist static energy minus saturation moist static energy, / c_p",
    ),
)
REPRESENTATIONS = ("physical", "invariant")

Stats = dict[str, dict[str, list[float]]]


@dataclass(frozen=True)
class BiLSTMConfig:
    """Fields, statistics and hyper-parameters; `config_from_store` fills the first five.

    `stats` holds {"mean", "std"} per level for every input and target (the store's
    normalisation attrs) and for the derived fields qv_sat, rh, dp. The role names
    (temperature ... nca) say which inputs the derived fields and the rules use.
    """

    inputs: tuple[FieldSpec, ...]
    targets: tuple[FieldSpec, ...]
    stats: Stats
    valid_range: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    hidden: int = 32
    layers: int = 3
    dropout: float = 0.0
    trigger_weight: float = 1.0
    trigger_threshold: float = 0.5
    hold_nca_s: float = 300.0
    # Per-level stds below this fraction of the field's largest are raised to it: levels where
    # a field hardly varies (tendencies above the highest cloud top) are not blown up to noise.
    std_floor: float = 0.01
    # Features (module docstring, "Representations"): physical or invariant derived fields,
    # statistics per level or per field, and inputs the host passes that are not features.
    representation: str = "physical"
    scaling: str = "level"
    # Per-level targets in units of one scale per field (the RMS of its level stds), or of each
    # level's own std (floored at std_floor x that RMS), so that a level where a tendency is
    # small but steady (the lowest level's drying) weighs in the loss like the others.
    target_scaling: str = "field"
    drop_inputs: tuple[str, ...] = ()
    temperature: str = "t"
    pressure: str = "p"
    humidity: str = "qv"
    thickness: str = "dz8w"
    nca: str = "nca"
    nonnegative: tuple[str, ...] = ("pratec", "nca")

    def __post_init__(self) -> None:
        for name in ("inputs", "targets", "nonnegative", "drop_inputs"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        nlev = self.nlev
        if nlev < 2:
            raise ValueError(f"inputs: need a field on >= 2 levels, got {self._levels()}")
        odd = [s.name for s in (*self.inputs, *self.targets) if s.nlev not in (1, nlev)]
        if odd:
            raise ValueError(f"{odd}: expected 1 or {nlev} levels, got {self._levels()}")
        in_nlev = {s.name: s.nlev for s in self.inputs}
        if self.representation not in REPRESENTATIONS:
            raise ValueError(
                f"representation: expected one of {REPRESENTATIONS}, got {self.representation!r}"
            )
        for name in ("scaling", "target_scaling"):
            if getattr(self, name) not in SCALINGS:
                raise ValueError(f"{name}: expected one of {SCALINGS}, got {getattr(self, name)!r}")
        unknown = sorted(set(self.drop_inputs) - set(in_nlev))
        if unknown or len(set(self.drop_inputs)) == len(in_nlev):
            raise ValueError(
                f"drop_inputs: {unknown or 'every input'} cannot be dropped; inputs are"
                f" {', '.join(in_nlev)}"
            )
        roles = ["temperature", "pressure", "humidity"]
        if self.representation == "invariant":
            roles.append("thickness")
        for role in roles:
            name = getattr(self, role)
            if in_nlev.get(name) != nlev:
                raise ValueError(
                    f"{role}: input {name!r} on {nlev} levels is needed for the derived fields;"
                    f" inputs are {self._levels()}"
                )
        out_nlev = {s.name: s.nlev for s in self.targets}
        if out_nlev.get(self.nca) != 1:
            raise ValueError(f"nca: target {self.nca!r} on 1 level needed for the trigger")
        if nlev not in out_nlev.values():
            raise ValueError(f"targets: none on {nlev} levels for the per-level head")
        unknown = [name for name in self.nonnegative if name not in out_nlev]
        if unknown:
            raise ValueError(f"nonnegative: {unknown} are not targets ({', '.join(out_nlev)})")
        for name, levels in out_nlev.items():
            if in_nlev.get(name + PREV, levels) != levels:
                raise ValueError(f"{name}{PREV}: expected {levels} levels like {name}")
        if not 0.0 < self.trigger_threshold < 1.0:
            raise ValueError(f"trigger_threshold: expected in (0, 1), got {self.trigger_threshold}")

    def _levels(self) -> str:
        return ", ".join(f"{s.name}[{s.nlev}]" for s in (*self.inputs, *self.targets))

    @property
    def nlev(self) -> int:
        return max(s.nlev for s in self.inputs)

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    @property
    def features(self) -> tuple[FieldSpec, ...]:
        """The inputs the network sees as they are (normalised): all but drop_inputs."""
        return tuple(s for s in self.inputs if s.name not in self.drop_inputs)

    @property
    def derived(self) -> tuple[FieldSpec, ...]:
        """The fields computed inside the module, one value per level each."""
        return INVARIANT if self.representation == "invariant" else DERIVED

    def feature_stats(self) -> Stats:
        """`stats` as the features are scaled: per level, or pooled over levels per field."""
        if self.scaling == "level":
            return self.stats
        return {name: pooled(values) for name, values in self.stats.items()}

    @property
    def target_names(self) -> list[str]:
        return [s.name for s in self.targets]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable (for checkpoints); `from_dict` reads it back."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["inputs"] = [s.to_dict() for s in self.inputs]
        data["targets"] = [s.to_dict() for s in self.targets]
        data["nonnegative"] = list(self.nonnegative)
        data["drop_inputs"] = list(self.drop_inputs)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "BiLSTMConfig":
        data = dict(data)
        for key in ("inputs", "targets"):
            data[key] = tuple(
                FieldSpec.from_dict(s, f"{key}[{i}]") for i, s in enumerate(data[key])
            )
        return cls(**data)


def config_from_store(
    path: str | os.PathLike[str], group: str = "train", chunk_samples: int = 16384, **options: Any
) -> BiLSTMConfig:
    """The config for a training store: inputs and targets in the order of its attrs, units
    and level counts from its arrays, its normalisation statistics, and from one pass over
    `group` the derived fields' statistics and each input's range (the model file's
    valid_range). `options` set the other BiLSTMConfig fields (hidden=64, ...)."""
    root = zarr.open_group(str(path), mode="r")
    config = BiLSTMConfig(
        inputs=store_fields(root, "inputs", group=group).fields,
        targets=store_fields(root, "targets", group=group).fields,
        stats=store_normalisation(root),
        provenance={
            "store": str(Path(path).resolve()),
            **{f"store_{k}": root.attrs[k] for k in ("name", "fingerprint") if k in root.attrs},
        },
        **options,
    )
    derived, valid_range = _scan(path, group, config, chunk_samples)
    return replace(config, stats={**config.stats, **derived}, valid_range=valid_range)


def _scan(
    path: str | os.PathLike[str], group: str, config: BiLSTMConfig, chunk_samples: int
) -> tuple[Stats, dict[str, dict[str, list[float]]]]:
    # Chunk by chunk, so memory is bounded by chunk_samples whatever the store's size; the
    # derived fields come from the same function the module runs.
    ds = xr.open_zarr(str(path), group=group, consolidated=False)[config.input_names]
    count = ds.sizes["sample"]
    if count == 0:
        raise ValueError(f"{path}: group {group!r} has no samples")
    total = np.zeros((len(config.derived), config.nlev))
    square = np.zeros_like(total)
    low = {
        name: np.full(s.nlev, np.inf)
        for name, s in zip(config.input_names, config.inputs, strict=True)
    }
    high = {name: -bounds for name, bounds in low.items()}
    for start in range(0, count, chunk_samples):
        part = ds.isel(sample=slice(start, start + chunk_samples)).load()
        for name in config.input_names:
            values = part[name].values.reshape(part.sizes["sample"], -1)
            low[name] = np.minimum(low[name], values.min(0))
            high[name] = np.maximum(high[name], values.max(0))
        derived = (
            torch.stack(
                config_derived(config, {n: torch.from_numpy(part[n].values) for n in part}), dim=1
            )
            .double()
            .numpy()
        )
        total += derived.sum(0)
        square += (derived**2).sum(0)
    mean = total / count
    std = np.sqrt(np.maximum(square / count - mean**2, 0.0))
    stats = {
        spec.name: {"mean": mean[i].tolist(), "std": std[i].tolist()}
        for i, spec in enumerate(config.derived)
    }
    valid_range = {
        name: {"min": low[name].tolist(), "max": high[name].tolist()} for name in config.input_names
    }
    return stats, valid_range


def config_derived(config: BiLSTMConfig, fields: Mapping[str, Tensor]) -> list[Tensor]:
    """The config's derived fields (`BiLSTMConfig.derived`) from named (ncol, nlev) inputs."""
    t, p, qv = (fields[n].float() for n in (config.temperature, config.pressure, config.humidity))
    if config.representation == "invariant":
        return invariant_inputs(t, p, qv, fields[config.thickness].float())
    return derived_inputs(t, p, qv)


def _rms(values: Sequence[float]) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def _divisor(scale: Tensor) -> Tensor:
    """A target scale to divide by: a zero one (a constant target) divides by 1."""
    return torch.where(scale > 0, scale, torch.ones_like(scale))


class BiLSTMEmulator(nn.Module):
    """The network: physical inputs in, normalised predictions out (module docstring).

    forward(fields) takes one tensor per input in `config.inputs` order, (ncol, nlev) or, for
    a one-level field, (ncol, 1) or (ncol,), and returns (trigger logit (ncol,), per-level
    targets (ncol, n_profile, nlev), one-level targets (ncol, n_scalar)), normalised;
    `to_physical` turns the last two into the targets in `config.targets` order.
    """

    __jit_ignored_attributes__ = ["config"]
    nlev: Final[int]
    i_t: Final[int]
    i_p: Final[int]
    i_qv: Final[int]
    i_dz: Final[int]
    invariant: Final[bool]
    in_nlev: list[int]
    feature_index: list[int]
    feature_nlev: list[int]
    target_is_profile: list[bool]
    target_slot: list[int]

    def __init__(self, config: BiLSTMConfig) -> None:
        super().__init__()
        self.config = config
        self.nlev = config.nlev
        names = config.input_names
        self.i_t, self.i_p, self.i_qv = (
            names.index(n) for n in (config.temperature, config.pressure, config.humidity)
        )
        self.invariant = config.representation == "invariant"
        self.i_dz = names.index(config.thickness) if self.invariant else -1
        self.in_nlev = [s.nlev for s in config.inputs]
        self.feature_index = [names.index(s.name) for s in config.features]
        self.feature_nlev = [s.nlev for s in config.features]
        # Per level over every input in forward's order: what the export's order check reads.
        self.input_norm = Normaliser.from_stats(
            FieldLayout(config.inputs), config.stats, config.std_floor
        )
        scaled = config.feature_stats()
        self.feature_norm = Normaliser.from_stats(
            FieldLayout(config.features), scaled, config.std_floor
        )
        self.derived_norm = Normaliser.from_stats(
            FieldLayout(tuple(replace(s, nlev=self.nlev) for s in config.derived)),
            scaled,
            config.std_floor,
        )
        profiles = [s.name for s in config.targets if s.nlev == self.nlev]
        scalars = [s.name for s in config.targets if s.nlev == 1]
        self.target_is_profile = [s.nlev == self.nlev for s in config.targets]
        self.target_slot = [
            (profiles if s.nlev == self.nlev else scalars).index(s.name) for s in config.targets
        ]
        # A target that never varies in training (the testbed's condensate tendencies) gets
        # scale 0: the model returns exactly 0 for it rather than unscaled noise.
        scale = {name: _rms(config.stats[name]["std"]) for name in config.target_names}
        per_level = [
            np.maximum(config.stats[n]["std"], config.std_floor * scale[n])
            if config.target_scaling == "level"
            else [scale[n]]
            for n in profiles
        ]
        self.register_buffer(
            "profile_scale", torch.tensor(np.array(per_level), dtype=torch.float32)
        )
        self.register_buffer(
            "scalar_scale", torch.tensor([scale[n] for n in scalars], dtype=torch.float32)
        )

        hidden, width = config.hidden, 2 * config.hidden  # width: both directions
        self.lstm = nn.LSTM(
            len(config.features) + len(config.derived),
            hidden,
            num_layers=config.layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.profile_head = nn.Conv1d(width, len(profiles), kernel_size=1)
        pooled = 2 * width  # mean and max over levels
        self.scalar_head = nn.Sequential(
            nn.Linear(pooled, hidden), nn.ReLU(), nn.Linear(hidden, len(scalars))
        )
        self.trigger_head = nn.Sequential(
            nn.Linear(pooled, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )

    def features(self, fields: list[Tensor]) -> Tensor:
        """(ncol, nlev, n_features + n_derived): normalised feature inputs, broadcast, then
        the derived fields."""
        if len(fields) != len(self.in_nlev):
            raise ValueError(f"expected {len(self.in_nlev)} input fields, got {len(fields)}")
        ncol = fields[0].shape[0]
        flat = torch.cat([fields[i].reshape(ncol, -1) for i in self.feature_index], dim=1)
        columns = [
            x.expand(ncol, self.nlev)
            for x in torch.split(self.feature_norm(flat), self.feature_nlev, 1)
        ]
        t, p, qv = fields[self.i_t], fields[self.i_p], fields[self.i_qv]
        if self.invariant:
            derived = invariant_inputs(t, p, qv, fields[self.i_dz])
        else:
            derived = derived_inputs(t, p, qv)
        columns.extend(torch.split(self.derived_norm(torch.cat(derived, dim=1)), self.nlev, 1))
        return torch.stack(columns, dim=2)

    def forward(self, fields: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        h, _ = self.lstm(self.features(fields))  # (ncol, nlev, 2 hidden)
        profiles = self.profile_head(h.transpose(1, 2))
        pooled = torch.cat([h.mean(dim=1), h.amax(dim=1)], dim=1)
        return self.trigger_head(pooled).squeeze(1), profiles, self.scalar_head(pooled)

    @torch.jit.export
    def to_physical(self, profiles: Tensor, scalars: Tensor) -> list[Tensor]:
        """The targets in physical units and config order, each (ncol, nlev) or (ncol, 1)."""
        out: list[Tensor] = []
        for i, slot in enumerate(self.target_slot):  # TorchScript's zip has no strict=
            if self.target_is_profile[i]:
                out.append(profiles[:, slot] * self.profile_scale[slot])
            else:
                out.append(scalars[:, slot : slot + 1] * self.scalar_scale[slot])
        return out

    def normalise_targets(self, targets: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """Physical targets in config order -> (ncol, n_profile, nlev), (ncol, n_scalar)."""
        ncol = targets[0].shape[0]
        profiles = [t for t, p in zip(targets, self.target_is_profile, strict=True) if p]
        scalars = [
            t.reshape(ncol) for t, p in zip(targets, self.target_is_profile, strict=True) if not p
        ]
        return (
            torch.stack(profiles, dim=1) / _divisor(self.profile_scale),
            torch.stack(scalars, dim=1) / _divisor(self.scalar_scale),
        )

    def trigger(self, targets: Sequence[Tensor]) -> Tensor:
        """(ncol,) bool: target NCA > 0 or any per-level target non-zero."""
        ncol = targets[0].shape[0]
        nca = targets[self.config.target_names.index(self.config.nca)].reshape(ncol)
        active = [
            (t != 0).any(dim=1) for t, p in zip(targets, self.target_is_profile, strict=True) if p
        ]
        return (nca > 0) | torch.stack(active, dim=1).any(dim=1)


def bilstm_loss(
    model: BiLSTMEmulator,
    raw: tuple[Tensor, Tensor, Tensor],
    targets: Sequence[Tensor],
    trigger_weight: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Masked MAE on triggered columns + trigger_weight x trigger BCE (module docstring).

    `raw` is model(fields), `targets` the physical targets in config order ((ncol,) or
    (ncol, 1) for one-level ones). Returns the loss and its detached parts "mae", "bce".
    """
    logit, profiles, scalars = raw
    true_profiles, true_scalars = model.normalise_targets(targets)
    triggered = model.trigger(targets).to(logit.dtype)
    per_target = torch.cat(
        [(profiles - true_profiles).abs().mean(dim=2), (scalars - true_scalars).abs()], dim=1
    )
    # Non-triggered columns are multiplied out, so their regression errors cannot count.
    mae = (per_target.mean(dim=1) * triggered).sum() / triggered.sum().clamp(min=1.0)
    bce = F.binary_cross_entropy_with_logits(logit, triggered)
    weight = model.config.trigger_weight if trigger_weight is None else trigger_weight
    return mae + weight * bce, {"mae": mae.detach(), "bce": bce.detach()}


class MSKFPostprocess(nn.Module):
    """The inference rules (module docstring): zero non-triggered columns, clip PRATEC and NCA
    at 0, give held columns their *_prev inputs. forward(trigger logit (ncol,), physical
    outputs in target order, the model's input fields) -> the outputs after the rules."""

    logit_threshold: Final[float]
    hold_nca_s: Final[float]
    nca_prev: Final[int]
    nonnegative: list[bool]
    prev: list[int]

    def __init__(self, config: BiLSTMConfig) -> None:
        super().__init__()
        names = config.input_names
        p = config.trigger_threshold
        self.logit_threshold = math.log(p / (1.0 - p))
        self.hold_nca_s = config.hold_nca_s
        self.nca_prev = names.index(config.nca + PREV) if config.nca + PREV in names else -1
        self.nonnegative = [s.name in config.nonnegative for s in config.targets]
        self.prev = [
            names.index(n + PREV) if n + PREV in names else -1 for n in config.target_names
        ]

    def forward(
        self, trigger_logit: Tensor, outputs: list[Tensor], fields: list[Tensor]
    ) -> list[Tensor]:
        ncol = trigger_logit.shape[0]
        triggered = (trigger_logit > self.logit_threshold).unsqueeze(1)
        if self.nca_prev >= 0:
            held = fields[self.nca_prev].reshape(ncol, 1) > self.hold_nca_s
        else:  # no previous NCA: nothing is known to be held
            held = torch.zeros(ncol, 1, dtype=torch.bool, device=trigger_logit.device)
        result: list[Tensor] = []
        for i, prev in enumerate(self.prev):
            y = torch.where(triggered, outputs[i], torch.zeros_like(outputs[i]))
            if self.nonnegative[i]:
                y = y.clamp(min=0.0)
            if prev >= 0:
                y = torch.where(held, fields[prev].reshape(y.shape), y)
            result.append(y)
        return result


class BiLSTMExport(nn.Module):
    """The model file's module: emulator, then post-processing, in physical units.

    `forward_fields(fields)` -> outputs in target order, each (ncol, nlev) (one-level ones
    (ncol, 1)); TorchScript has no *args, so `to_torchscript()` adds paramlib.export's
    forward(x0, x1, ...) with one (ncol, nlev) float32 tensor per input in config order.
    """

    # A TorchScript constant: models whose generated forward differs get distinct class types.
    forward_source: Final[str]

    def __init__(self, emulator: BiLSTMEmulator) -> None:
        super().__init__()
        self.emulator = emulator
        self.postprocess = MSKFPostprocess(emulator.config)
        self.forward_source = forward_source(
            len(emulator.config.inputs), len(emulator.config.targets)
        )

    @torch.jit.export
    def forward_fields(self, fields: list[Tensor]) -> list[Tensor]:
        logit, profiles, scalars = self.emulator(fields)
        return self.postprocess(logit, self.emulator.to_physical(profiles, scalars), fields)

    @torch.jit.export
    def input_normalisation(self) -> tuple[Tensor, Tensor]:
        """(mean, std) of the inputs' levels in forward's order (`paramlib.export.save`
        checks the metadata's input order against it)."""
        return self.emulator.input_norm.mean, self.emulator.input_norm.std

    def to_torchscript(self) -> torch.jit.ScriptModule:
        scripted = torch.jit.script(self)
        if not hasattr(scripted, "forward"):  # a model sharing this class type defined it
            scripted.define(self.forward_source)
        return scripted


def bilstm_metadata(
    config: BiLSTMConfig, provenance: Mapping[str, Any] | None = None
) -> ModelMetadata:
    """paramlib.json for the model: the store's inputs and targets, the training ranges."""
    return ModelMetadata(
        model_kind=MODEL_KIND,
        inputs=config.inputs,
        outputs=config.targets,
        valid_range=config.valid_range,
        provenance={**config.provenance, **(provenance or {})},
    )


def export_bilstm(
    emulator: BiLSTMEmulator,
    path: str | os.PathLike[str],
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write the emulator with its post-processing as a paramlib model file."""
    # save() puts the scripted copy in eval mode; the emulator keeps its own mode.
    module = BiLSTMExport(emulator).to_torchscript()
    return save(module, path, bilstm_metadata(emulator.config, provenance))

"""Model kinds as training tasks: the network, a step's loss, validation, and the export.

- ``mlp``     deterministic MLP (`EnsembleMLP`, one member) on one store;
- ``rpn``     RPN ensemble on one store: HF-only, LF-only or the oracle, by the store named;
- ``mfrpn``   MF-RPN (`MFRPN`): the HF store in ``data.store``, the LF store in
              ``data.lf_store``; loss MSE_HF + alpha MSE_LF (`mf_loss`);
- ``bilstm``  Bi-LSTM MSKF emulator (`BiLSTMEmulator`, `bilstm_loss`).

A task is built from the stores for training (`task_from_stores`) or from the ``spec`` it
wrote into the checkpoint for export (`task_from_spec`): field layouts, normalisation, valid
ranges and store provenance travel in the checkpoint, so exporting needs no store.

Parallelism: ensembles train member-parallel (a rank builds and trains members
``first .. first + count - 1``; member i is the same network and bootstrap subset whatever
the slice), single models data-parallel (each rank takes its share of every global batch).
Loss parts a task returns are sums over its members for ensembles and means for single
models; the loop divides by the ensemble size or the world size.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from paramlib.export import FieldSpec, save
from paramlib.models import (
    MFRPN,
    RPN,
    BootstrapSampler,
    EnsembleMLP,
    FieldLayout,
    Normaliser,
    ensemble_mse,
    export_module,
    mf_loss,
    mf_statistics,
    store_fields,
    store_normalisation,
)
from paramlib.models.bilstm import (
    BiLSTMConfig,
    BiLSTMEmulator,
    bilstm_loss,
    config_from_store,
    export_bilstm,
)
from paramlib.models.mfrpn import BM_PREFIX
from paramlib.train.config import Config
from paramlib.train.data import (
    DataError,
    group_size,
    open_store,
    read_fields,
    store_record,
    val_rows,
)

# Seed purposes: samplers over different data of one run draw unrelated subsets.
SAMPLER_SEED, LF_SAMPLER_SEED = 1, 2
MAX_LISTED = 20  # sample indices named in a message


def derived_seed(seed: int, purpose: int) -> int:
    return int(np.random.SeedSequence([seed, purpose]).generate_state(1)[0])


def _layout_dict(layout: FieldLayout) -> list[dict[str, Any]]:
    return [spec.to_dict() for spec in layout.fields]


def _layout(data: Sequence[Mapping[str, Any]]) -> FieldLayout:
    return FieldLayout(tuple(FieldSpec.from_dict(d) for d in data))


def _norm_dict(norm: Normaliser) -> dict[str, list[float]]:
    return {"mean": norm.mean.tolist(), "std": norm.std.tolist()}


def _norm(data: Mapping[str, Sequence[float]]) -> Normaliser:
    return Normaliser(torch.tensor(data["mean"]), torch.tensor(data["std"]))


class Task(ABC):
    """Common interface; `FeatureTask` and `BiLSTMTask` implement it."""

    kind: str
    members: int  # the whole ensemble (1 for single models)
    spec: dict[str, Any]  # what export needs, saved in the checkpoint
    train_parts: tuple[str, ...]
    val_parts: tuple[str, ...]

    def __init__(self, config: Config) -> None:
        self.config = config
        self.kind = config.model.kind
        self.members = config.model.members if config.ensemble else 1
        self.shard = slice(None)  # this rank's columns of a global batch (data-parallel)

    @abstractmethod
    def network(self, first_member: int, count: int) -> nn.Module:
        """Members first .. first+count-1 (the whole network for a single model)."""

    @abstractmethod
    def prepare(
        self, device: torch.device, first_member: int, count: int, rank: int, world: int
    ) -> None:
        """Move the data to `device` and make the samplers of members first .. first+count-1;
        a single model trained on `world` ranks takes its share of every batch."""

    @abstractmethod
    def step_loss(self, model: nn.Module, net: nn.Module, step: int) -> tuple[Tensor, Tensor]:
        """(objective to differentiate, detached parts named `train_parts`) of step `step`;
        `model` is what to call (maybe DDP-wrapped), `net` the network itself."""

    @abstractmethod
    def val_losses(self, net: nn.Module) -> Tensor:
        """Parts named `val_parts` on the validation samples (empty without validation)."""

    @abstractmethod
    def export(
        self,
        net: nn.Module,
        path: str | os.PathLike[str],
        output: str,
        member: int,
        provenance: Mapping[str, Any],
    ) -> Path:
        """Write the model file of `net` (every member) in output mode `output`."""

    @abstractmethod
    def batch_index(self, step: int) -> dict[str, Tensor]:
        """Sample indices into the store groups of step `step`'s batch on this rank, by split
        (``train``; ``lf_train`` for the LF compositions)."""

    @abstractmethod
    def split_tensors(self, split: str) -> list[Tensor]:
        """The tensors of `split`, sample first, as the batches index them."""

    def split_source(self, split: str) -> str:
        """Where a split's samples come from, for messages: the config key, path and group."""
        data = self.config.data
        lf = split.startswith("lf_")
        key, path = ("data.lf_store", data.lf_store) if lf else ("data.store", data.store)
        return f"{key} {path} group {data.train_group!r}"

    def describe_batch(self, step: int) -> str:
        """The store samples of step `step`'s batch, those with non-finite values when there
        are any (the likely cause of a non-finite loss), for the message that stops a run."""
        parts = []
        for split, index in self.batch_index(step).items():
            samples = index.flatten().unique()
            bad = torch.zeros(len(samples), dtype=torch.bool, device=samples.device)
            for tensor in self.split_tensors(split):
                bad |= ~torch.isfinite(tensor[samples].reshape(len(samples), -1)).all(dim=1)
            shown = samples[bad] if bad.any() else samples
            listed = shown[:MAX_LISTED].tolist()
            more = f" ... ({len(shown)} in all)" if len(shown) > MAX_LISTED else ""
            what = "non-finite values in" if bad.any() else "all finite:"
            parts.append(f"{what} {self.split_source(split)} samples {listed}{more}")
        return "; ".join(parts)

    def _batch_shard(self, batch_size: int, rank: int, world: int) -> slice:
        if batch_size % world:
            raise DataError(
                f"train.batch_size: {batch_size} does not split over {world} ranks evenly"
            )
        share = batch_size // world
        return slice(rank * share, (rank + 1) * share)


class FeatureTask(Task):
    """mlp, rpn, mfrpn: flat normalised features (B, n_in) -> (M, B, n_out)."""

    def __init__(
        self,
        config: Config,
        spec: dict[str, Any],
        data: Mapping[str, tuple[Tensor, Tensor]] | None = None,
    ) -> None:
        super().__init__(config)
        self.spec = spec
        self.inputs, self.outputs = _layout(spec["inputs"]), _layout(spec["outputs"])
        self.in_norm, self.out_norm = _norm(spec["in_norm"]), _norm(spec["out_norm"])
        self.data: dict[str, tuple[Tensor, Tensor]] = dict(data or {})
        composition = config.model.composition
        self.with_lf = self.kind == "mfrpn" and composition != "hf_of_bm_and_x"
        self.train_parts = ("loss", "loss_hf", "loss_lf") if self.with_lf else ("loss",)
        self.val_parts = ("val_loss", "val_lf") if self.with_lf else ("val_loss",)

    def network(self, first_member: int, count: int) -> nn.Module:
        model = self.config.model
        seed, n_in, n_out = self.config.train.seed, self.inputs.size, self.outputs.size
        if self.kind == "mlp":
            return EnsembleMLP.create(n_in, n_out, model.hidden, 1, seed=seed)
        if self.kind == "rpn":
            return RPN.create(
                n_in,
                n_out,
                model.hidden,
                count,
                seed=seed,
                prior_scale=model.prior_scale,
                first_member=first_member,
            )
        n_x = self.spec["n_x"]
        return MFRPN.create(
            model.composition,
            n_x,
            n_out,
            n_bm=n_in - n_x,
            hidden=model.hidden,
            hf_hidden=model.hf_hidden,
            members=count,
            seed=seed,
            prior_scale=model.prior_scale,
            first_member=first_member,
        )

    def prepare(
        self, device: torch.device, first_member: int, count: int, rank: int, world: int
    ) -> None:
        train = self.config.train
        self.device = device
        self.data = {k: (x.to(device), y.to(device)) for k, (x, y) in self.data.items()}
        fraction = self.config.model.bootstrap_fraction if self.kind != "mlp" else 1.0

        def sampler(split: str, purpose: int) -> BootstrapSampler:
            return BootstrapSampler(
                len(self.data[split][0]),
                count,
                fraction,
                seed=derived_seed(train.seed, purpose),
                first_member=first_member,
            )

        self.sampler = sampler("train", SAMPLER_SEED)
        self.batch_size = train.batch_size
        self.sampler.steps_per_epoch(self.batch_size)  # checks the batch fits the subset
        if self.with_lf:
            self.lf_sampler = sampler("lf_train", LF_SAMPLER_SEED)
            self.lf_batch_size = train.lf_batch_size or train.batch_size
            self.lf_sampler.steps_per_epoch(self.lf_batch_size)
        if not self.config.ensemble and world > 1:
            self.shard = self._batch_shard(self.batch_size, rank, world)

    def _index(self, sampler: BootstrapSampler, step: int, size: int) -> Tensor:
        return sampler.batch(step, size)[:, self.shard].to(self.device)

    def _batch(
        self, split: str, sampler: BootstrapSampler, step: int, size: int
    ) -> tuple[Tensor, Tensor]:
        index = self._index(sampler, step, size)
        x, y = self.data[split]
        return x[index], y[index]

    def batch_index(self, step: int) -> dict[str, Tensor]:
        index = {"train": self._index(self.sampler, step, self.batch_size)}
        if self.with_lf:
            index["lf_train"] = self._index(self.lf_sampler, step, self.lf_batch_size)
        return index

    def split_tensors(self, split: str) -> list[Tensor]:
        return list(self.data[split])

    def step_loss(self, model: nn.Module, net: nn.Module, step: int) -> tuple[Tensor, Tensor]:
        x, y = self._batch("train", self.sampler, step, self.batch_size)
        if not self.with_lf:
            loss = ensemble_mse(model(x), y)
            return loss, loss.detach().reshape(1)
        x_lf, y_lf = self._batch("lf_train", self.lf_sampler, step, self.lf_batch_size)
        parts = mf_loss(model, x, y, x_lf, y_lf, alpha=self.config.model.alpha)
        assert parts.lf is not None  # with_lf
        return parts.total, torch.stack([parts.total, parts.hf, parts.lf]).detach()

    def predict(self, net: nn.Module, x: Tensor, chunk: int) -> Tensor:
        """(M, N, n_out) normalised predictions, `chunk` samples at a time."""
        with torch.no_grad():
            return torch.cat([net(x[i : i + chunk]) for i in range(0, len(x), chunk)], dim=1)

    def val_losses(self, net: nn.Module) -> Tensor:
        if "val" not in self.data:
            return torch.zeros(0)
        chunk = self.config.train.batch_size
        x, y = self.data["val"]
        parts = [ensemble_mse(self.predict(net, x, chunk), y)]
        if self.with_lf and "lf_val" in self.data:
            x_lf, y_lf = self.data["lf_val"]
            parts.append(ensemble_mse(self.predict(net.lf, x_lf, chunk), y_lf))
        elif self.with_lf:
            parts.append(torch.tensor(float("nan")))
        return torch.stack(parts)

    def export(
        self,
        net: nn.Module,
        path: str | os.PathLike[str],
        output: str,
        member: int,
        provenance: Mapping[str, Any],
    ) -> Path:
        module, metadata = export_module(
            net,
            self.inputs,
            self.outputs,
            self.in_norm,
            self.out_norm,
            output=output,
            member=member,
            model_kind=self.kind,
            valid_range=self.spec["valid_range"],
            provenance=provenance,
        )
        return save(module, path, metadata)


def _split_nlev(nlev: Mapping[str, int], names: Sequence[str]) -> dict[str, int]:
    return {k: v for k, v in nlev.items() if k in names}


def _feature_task(config: Config) -> FeatureTask:
    data, model = config.data, config.model
    main = open_store(data.store)
    lf = open_store(data.lf_store, "data.lf_store") if data.lf_store else None
    x_names = list(data.inputs or main.attrs["inputs"])
    y_names = list(data.targets or main.attrs["targets"])
    with_bm = model.kind == "mfrpn" and model.composition == "hf_of_bm_and_x"
    with_lf = model.kind == "mfrpn" and not with_bm
    bm_names = [BM_PREFIX + n for n in y_names] if with_bm else []
    in_names = x_names + bm_names
    unknown = sorted(set(data.nlev) - set(in_names) - set(y_names))
    if unknown:
        raise DataError(f"data.nlev: {unknown} are neither inputs nor targets of the model")
    # BM(x) stands where LF(x) would: a BM field keeps the levels of its target.
    nlev = {BM_PREFIX + k: v for k, v in data.nlev.items() if BM_PREFIX + k in bm_names}
    nlev.update(data.nlev)
    try:
        inputs = store_fields(main, in_names, _split_nlev(nlev, in_names), data.train_group)
        outputs = store_fields(main, y_names, _split_nlev(nlev, y_names), data.train_group)
    except (KeyError, ValueError) as error:
        raise DataError(f"data.store: {error}") from None
    stats = store_normalisation(main)
    if config.normalisation == "lf":
        assert lf is not None  # validated: normalisation lf needs data.lf_store
        stats = mf_statistics(store_normalisation(lf), stats, "lf")
    try:
        in_norm = Normaliser.from_stats(inputs, stats)
        out_norm = Normaliser.from_stats(outputs, stats)
    except (KeyError, ValueError) as error:
        raise DataError(f"data.normalisation: {error}") from None
    x_layout = inputs.select(x_names)
    x_norm = Normaliser(in_norm.mean[: x_layout.size], in_norm.std[: x_layout.size])

    def load(
        root: Any, key: str, layout: FieldLayout, norm: Normaliser, group: str, rows: slice
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(physical inputs, normalised inputs, normalised targets) of a split."""
        fields = read_fields(root, group, layout.names + outputs.names, rows, data.memory_gb, key)
        x = layout.flatten(fields, crop_top=True)
        return x, norm(x), out_norm(outputs.flatten(fields, crop_top=True))

    # The training store, and for the LF compositions the LF store under "lf_train", "lf_val".
    sources = [("", main, "data.store", inputs, in_norm)]
    if with_lf:
        assert lf is not None  # validated: the LF compositions need data.lf_store
        sources.append(("lf_", lf, "data.lf_store", x_layout, x_norm))
    tensors = {}
    for prefix, root, key, layout, norm in sources:
        x_train, x, y = load(root, key, layout, norm, data.train_group, slice(None))
        tensors[prefix + "train"] = (x, y)
        if not prefix:  # the model file's valid ranges: the training inputs seen
            valid_range = inputs.value_range(x_train)
        n_val = group_size(root, data.val_group)
        if n_val:
            rows = val_rows(n_val, data.val_max_samples)
            tensors[prefix + "val"] = load(root, key, layout, norm, data.val_group, rows)[1:]
    stores = {"train": store_record(main, data.store)}
    if lf is not None:
        stores["lf"] = store_record(lf, data.lf_store or "")
    spec = {
        "inputs": _layout_dict(inputs),
        "outputs": _layout_dict(outputs),
        "n_x": x_layout.size,
        "in_norm": _norm_dict(in_norm),
        "out_norm": _norm_dict(out_norm),
        "valid_range": valid_range,
        "stores": stores,
    }
    return FeatureTask(config, spec, tensors)


class BiLSTMTask(Task):
    """The Bi-LSTM MSKF emulator: one tensor per named input and target."""

    train_parts = ("loss", "mae", "bce")
    val_parts = ("val_loss", "val_mae", "val_bce")

    def __init__(
        self,
        config: Config,
        spec: dict[str, Any],
        data: Mapping[str, tuple[list[Tensor], list[Tensor]]] | None = None,
    ) -> None:
        super().__init__(config)
        self.spec = spec
        self.bilstm = BiLSTMConfig.from_dict(spec["bilstm"])
        self.data = dict(data or {})

    def network(self, first_member: int, count: int) -> nn.Module:
        return BiLSTMEmulator(self.bilstm)

    def prepare(
        self, device: torch.device, first_member: int, count: int, rank: int, world: int
    ) -> None:
        self.device = device
        self.data = {
            k: ([t.to(device) for t in x], [t.to(device) for t in y])
            for k, (x, y) in self.data.items()
        }
        n = len(self.data["train"][0][0])
        self.sampler = BootstrapSampler(
            n, 1, 1.0, seed=derived_seed(self.config.train.seed, SAMPLER_SEED)
        )
        self.batch_size = self.config.train.batch_size
        self.sampler.steps_per_epoch(self.batch_size)
        if world > 1:
            self.shard = self._batch_shard(self.batch_size, rank, world)

    def batch_index(self, step: int) -> dict[str, Tensor]:
        return {"train": self.sampler.batch(step, self.batch_size)[0, self.shard].to(self.device)}

    def split_tensors(self, split: str) -> list[Tensor]:
        inputs, targets = self.data[split]
        return [*inputs, *targets]

    def step_loss(self, model: nn.Module, net: nn.Module, step: int) -> tuple[Tensor, Tensor]:
        index = self.batch_index(step)["train"]
        inputs, targets = self.data["train"]
        loss, parts = bilstm_loss(
            net, model([x[index] for x in inputs]), [y[index] for y in targets]
        )
        return loss, torch.stack([loss.detach(), parts["mae"], parts["bce"]])

    def val_losses(self, net: nn.Module) -> Tensor:
        if "val" not in self.data:
            return torch.zeros(0)
        inputs, targets = self.data["val"]
        with torch.no_grad():
            loss, parts = bilstm_loss(net, net(inputs), targets)
        return torch.stack([loss, parts["mae"], parts["bce"]])

    def export(
        self,
        net: nn.Module,
        path: str | os.PathLike[str],
        output: str,
        member: int,
        provenance: Mapping[str, Any],
    ) -> Path:
        if output != "mean":
            raise ValueError(f"output: a Bi-LSTM exports one model (mean), not {output!r}")
        assert isinstance(net, BiLSTMEmulator)
        return export_bilstm(net, path, provenance)


def _bilstm_task(config: Config) -> BiLSTMTask:
    data, model = config.data, config.model
    root = open_store(data.store)
    try:
        bilstm = config_from_store(
            data.store,
            group=data.train_group,
            hidden=model.lstm_hidden,
            layers=model.lstm_layers,
            dropout=model.dropout,
            trigger_weight=model.trigger_weight,
            trigger_threshold=model.trigger_threshold,
            hold_nca_s=model.hold_nca_s,
        )
    except (KeyError, ValueError) as error:
        raise DataError(f"data.store: {error}") from None
    record = store_record(root, data.store)
    bilstm = replace(bilstm, provenance={"stores": {"train": record}})

    def load(group: str, rows: slice) -> tuple[list[Tensor], list[Tensor]]:
        names = bilstm.input_names + bilstm.target_names
        fields = read_fields(root, group, names, rows, data.memory_gb)
        return (
            [torch.from_numpy(fields[n]) for n in bilstm.input_names],
            [torch.from_numpy(fields[n]) for n in bilstm.target_names],
        )

    tensors = {"train": load(data.train_group, slice(None))}
    n_val = group_size(root, data.val_group)
    if n_val:
        tensors["val"] = load(data.val_group, val_rows(n_val, data.val_max_samples))
    spec = {"bilstm": bilstm.to_dict(), "stores": {"train": record}}
    return BiLSTMTask(config, spec, tensors)


def task_from_stores(config: Config) -> Task:
    """The task with its training and validation data read from the config's stores."""
    return _bilstm_task(config) if config.model.kind == "bilstm" else _feature_task(config)


def task_from_spec(config: Config, spec: dict[str, Any]) -> Task:
    """The task without data, from a checkpoint's spec (for export)."""
    cls = BiLSTMTask if config.model.kind == "bilstm" else FeatureTask
    return cls(config, spec)

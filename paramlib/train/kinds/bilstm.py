"""Kind ``bilstm``: the Bi-LSTM MSKF emulator (`BiLSTMEmulator`, `bilstm_loss`), one tensor
per named input and target; its model files are ``bilstm_mskf`` (the WRF plugin's contract)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from paramlib.models import BootstrapSampler
from paramlib.models.bilstm import (
    MODEL_KIND,
    REPRESENTATIONS,
    SCALINGS,
    BiLSTMConfig,
    BiLSTMEmulator,
    bilstm_loss,
    config_from_store,
    export_bilstm,
)
from paramlib.train.config import Config
from paramlib.train.data import (
    DataError,
    SplitReader,
    group_size,
    open_store,
    read_fields,
    store_record,
    val_rows,
)
from paramlib.train.kinds import PRECISIONS, ModelKind, ModelOptions, Problems, at_least_one, one_of
from paramlib.train.tasks import (
    SAMPLER_SEED,
    Task,
    check_batch,
    derived_seed,
    pick_loader,
    streamed_source,
)


@dataclass
class BiLSTMOptions(ModelOptions):
    lstm_hidden: int = 32
    lstm_layers: int = 3
    dropout: float = 0.0
    trigger_weight: float = 1.0
    trigger_threshold: float = 0.5
    hold_nca_s: float = 300.0
    representation: str = "physical"
    scaling: str = "level"
    target_scaling: str = "field"
    drop_inputs: list[str] = field(default_factory=list)  # host inputs that are not features


def problems(options: BiLSTMOptions) -> Problems:
    yield from at_least_one("model.lstm_hidden", options.lstm_hidden)
    yield from at_least_one("model.lstm_layers", options.lstm_layers)
    yield from one_of("model.representation", options.representation, REPRESENTATIONS)
    yield from one_of("model.scaling", options.scaling, SCALINGS)
    yield from one_of("model.target_scaling", options.target_scaling, SCALINGS)


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

    @classmethod
    def from_stores(cls, config: Config, pinned: str | None = None) -> BiLSTMTask:
        return _bilstm_task(config, pinned)

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
        self.batch_size = self.config.train.batch_size
        if self.sources:
            self._open_streams({"train": (self.batch_size, SAMPLER_SEED)}, rank, world)
            return
        n = len(self.data["train"][0][0])
        self.sampler = BootstrapSampler(
            n, 1, 1.0, seed=derived_seed(self.config.train.seed, SAMPLER_SEED)
        )
        check_batch(self.sampler, self.batch_size, "train.batch_size")
        if world > 1:
            self.shard = self._batch_shard(self.batch_size, rank, world)

    def batch_index(self, step: int) -> dict[str, Tensor]:
        if self.streams:
            return {"train": self.streams["train"].batch(step)[0].to(self.device)}
        return {"train": self.sampler.batch(step, self.batch_size)[0, self.shard].to(self.device)}

    def split_tensors(self, split: str) -> list[Tensor]:
        inputs, targets = self.data[split]
        return [*inputs, *targets]

    def step_loss(self, model: nn.Module, net: nn.Module, step: int) -> tuple[Tensor, Tensor]:
        if self.streams:
            _, *tensors = self.streams["train"].batch(step)
            batch = [t.to(self.device) for t in tensors]
            n_in = len(self.bilstm.input_names)
            inputs, targets = batch[:n_in], batch[n_in:]
        else:
            index = self.batch_index(step)["train"]
            inputs = [x[index] for x in self.data["train"][0]]
            targets = [y[index] for y in self.data["train"][1]]
        if self.config.train.precision == "bfloat16":
            with torch.autocast(self.device.type, dtype=torch.bfloat16):
                raw = model(inputs)
            raw = tuple(part.float() for part in raw)  # the loss in float32
        else:
            raw = model(inputs)
        loss, parts = bilstm_loss(net, raw, targets)
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


def _bilstm_task(config: Config, pinned: str | None = None) -> BiLSTMTask:
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
            representation=model.representation,
            scaling=model.scaling,
            target_scaling=model.target_scaling,
            drop_inputs=tuple(model.drop_inputs),
        )
    except (KeyError, ValueError) as error:
        raise DataError(f"data.store: {error}") from None
    record = store_record(root, data.store)
    bilstm = replace(bilstm, provenance={"stores": {"train": record}})

    names = bilstm.input_names + bilstm.target_names

    def convert(fields: Mapping[str, np.ndarray]) -> tuple[list[Tensor], list[Tensor]]:
        return (
            [torch.from_numpy(fields[n]) for n in bilstm.input_names],
            [torch.from_numpy(fields[n]) for n in bilstm.target_names],
        )

    reader = SplitReader(root, data.train_group, names)
    loader, note = pick_loader(config, [reader], pinned)
    tensors, streamed = {}, {}
    if loader == "memory":
        tensors["train"] = convert(reader.read())
    else:

        def flat(fields: Mapping[str, np.ndarray]) -> tuple[Tensor, ...]:
            inputs, targets = convert(fields)
            return (*inputs, *targets)

        streamed["train"] = streamed_source(reader, "data.store", flat)
    n_val = group_size(root, data.val_group)
    if n_val:
        rows = val_rows(n_val, data.val_max_samples)
        tensors["val"] = convert(read_fields(root, data.val_group, names, rows))
    spec = {"bilstm": bilstm.to_dict(), "stores": {"train": record}, "loader": loader}
    task = BiLSTMTask(config, spec, tensors)
    task.sources, task.loader_note = streamed, note
    return task


KIND = ModelKind(
    "bilstm",
    BiLSTMOptions,
    BiLSTMTask,
    exported_as=MODEL_KIND,
    precisions=PRECISIONS,
    outputs=("mean",),
    mskf_contract=True,
    problems=problems,
)

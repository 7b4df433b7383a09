"""Training tasks: what a model kind (`paramlib.train.kinds`) implements for the loop — the
network, a step's loss, validation, and the export — and `FeatureTask`, the task of the kinds on
flat normalised features (mlp, rpn, mfrpn), which they specialise by their network.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from torch import Tensor, nn

from paramlib.export import FieldSpec, save
from paramlib.models import (
    BootstrapSampler,
    FieldLayout,
    Normaliser,
    ensemble_mse,
    export_module,
    mf_loss,
    mf_statistics,
    store_fields,
    store_normalisation,
)
from paramlib.models.mfrpn import BM_PREFIX
from paramlib.models.normalise import SCALINGS
from paramlib.models.ood import OodScore
from paramlib.models.represent import (
    REPRESENTATIONS,
    TEMPERATURE,
    InputTransform,
    feature_statistics,
    scaled,
    store_sigma,
)
from paramlib.train import kinds
from paramlib.train.config import Config
from paramlib.train.data import (
    DataError,
    SplitReader,
    choose_loader,
    group_size,
    open_store,
    read_fields,
    store_record,
    val_rows,
)
from paramlib.train.streaming import ChunkStream, SplitSource, bootstrap_weights

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


def check_batch(sampler: BootstrapSampler, size: int, key: str) -> None:
    """A batch larger than the (bootstrap subset of the) split is the config's mistake."""
    try:
        sampler.steps_per_epoch(size)
    except ValueError as error:
        raise DataError(f"{key}: {str(error).removeprefix('batch_size: ')}") from None


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
        self.options: Any = config.model  # the kind's options dataclass
        self.members = config.members
        self.shard = slice(None)  # this rank's columns of a global batch (data-parallel)
        self.sources: dict[str, SplitSource] = {}  # streamed train splits (loader streaming)
        self.streams: dict[str, ChunkStream] = {}
        self.loader_note = ""  # which loader and why, said at start

    @classmethod
    @abstractmethod
    def from_stores(cls, config: Config, pinned: str | None = None) -> Task:
        """The task with its training and validation data read from the config's stores;
        `pinned` (a checkpoint's loader) overrides the config's choice."""

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

    def batch_rows(self, step: int) -> dict[str, tuple[Tensor, list[Tensor]]]:
        """Per split, the store samples of step `step`'s batch and their rows of its tensors."""
        if self.streams:
            batches = {split: stream.batch(step) for split, stream in self.streams.items()}
            return {split: (rows, list(tensors)) for split, (rows, *tensors) in batches.items()}
        rows = {}
        for split, index in self.batch_index(step).items():
            samples = index.flatten().unique()
            rows[split] = (samples, [t[samples] for t in self.split_tensors(split)])
        return rows

    def describe_batch(self, step: int) -> str:
        """The store samples of step `step`'s batch, those with non-finite values when there
        are any (the likely cause of a non-finite loss), for the message that stops a run."""
        parts = []
        for split, (samples, tensors) in self.batch_rows(step).items():
            bad = torch.zeros(len(samples), dtype=torch.bool, device=samples.device)
            for tensor in tensors:
                bad |= ~torch.isfinite(tensor.reshape(len(samples), -1).to(bad.device)).all(dim=1)
            shown = samples[bad] if bad.any() else samples
            listed = shown[:MAX_LISTED].tolist()
            more = f" ... ({len(shown)} in all)" if len(shown) > MAX_LISTED else ""
            what = "non-finite values in" if bad.any() else "all finite:"
            parts.append(f"{what} {self.split_source(split)} samples {listed}{more}")
        return "; ".join(parts)

    def _open_streams(self, sizes: Mapping[str, tuple[int, int]], rank: int, world: int) -> None:
        """A `ChunkStream` per streamed split, from its (batch size, seed purpose): ensembles
        (member-parallel) stream every sample on every rank, single models a rank's share."""
        data, seed = self.config.data, self.config.train.seed
        if self.config.ensemble:
            rank, world = 0, 1
        for split, (size, purpose) in sizes.items():
            share = self._batch_shard(size, rank, world)
            self.streams[split] = ChunkStream(
                self.sources[split],
                share.stop - share.start,
                derived_seed(seed, purpose),
                data.shuffle_chunks,
                data.prefetch,
                rank,
                world,
            )

    def close(self) -> None:
        """Stop the streams' reading threads."""
        for stream in self.streams.values():
            stream.close()

    def _batch_shard(self, batch_size: int, rank: int, world: int) -> slice:
        if batch_size % world:
            raise DataError(
                f"train.batch_size: {batch_size} does not split over {world} ranks evenly"
            )
        share = batch_size // world
        return slice(rank * share, (rank + 1) * share)


@dataclass
class FeatureOptions(kinds.ModelOptions):
    """The ``model:`` keys every feature kind has: its input representation
    (`paramlib.models.represent`: raw | invariant) and scaling (level | field: statistics per
    level, or one mean and std per input field over its levels)."""

    representation: str = "raw"
    scaling: str = "level"


def feature_choices(options: Any) -> tuple[str, str]:
    """(representation, scaling) of a kind's options; raw and level for a kind on features
    whose options do not subclass `FeatureOptions`."""
    return (
        getattr(options, "representation", FeatureOptions.representation),
        getattr(options, "scaling", FeatureOptions.scaling),
    )


def feature_problems(options: FeatureOptions) -> kinds.Problems:
    yield from kinds.one_of("model.representation", options.representation, REPRESENTATIONS)
    yield from kinds.one_of("model.scaling", options.scaling, SCALINGS)


class FeatureTask(Task):
    """Flat normalised features (B, n_in) -> (M, B, n_out); a kind adds its `network`, and
    the MF-RPN its LF data (`with_lf`) or Betts-Miller inputs (`with_bm`)."""

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
        # Checkpoints from before representations had none: raw inputs.
        self.transform = (
            InputTransform.from_dict(spec["transform"], self.inputs)
            if "transform" in spec
            else InputTransform(self.in_norm)
        )
        self.data: dict[str, tuple[Tensor, Tensor]] = dict(data or {})
        self.lf = self.with_lf(config.model)
        self.train_parts = ("loss", "loss_hf", "loss_lf") if self.lf else ("loss",)
        self.val_parts = ("val_loss", "val_lf") if self.lf else ("val_loss",)

    @classmethod
    def with_lf(cls, options: Any) -> bool:
        """Whether it trains on the LF store too (``lf_train``, ``lf_val``)."""
        return False

    @classmethod
    def with_bm(cls, options: Any) -> bool:
        """Whether the physics scheme's outputs (``bm_*`` store fields) are inputs."""
        return False

    def bootstrap_fraction(self) -> float:
        """The share of the train split each member samples (1: every member sees all)."""
        return 1.0

    @classmethod
    def from_stores(cls, config: Config, pinned: str | None = None) -> FeatureTask:
        return _feature_task(cls, config, pinned)

    def prepare(
        self, device: torch.device, first_member: int, count: int, rank: int, world: int
    ) -> None:
        train = self.config.train
        self.device = device
        self.data = {k: (x.to(device), y.to(device)) for k, (x, y) in self.data.items()}
        fraction = self.bootstrap_fraction()
        self.batch_size = train.batch_size
        self.lf_batch_size = train.lf_batch_size or train.batch_size
        if self.sources:
            self.members_trained = range(first_member, first_member + count)
            self.fraction = fraction
            sizes = {"train": (self.batch_size, SAMPLER_SEED)}
            if self.lf:
                sizes["lf_train"] = (self.lf_batch_size, LF_SAMPLER_SEED)
            self._open_streams(sizes, rank, world)
            return

        def sampler(split: str, purpose: int) -> BootstrapSampler:
            return BootstrapSampler(
                len(self.data[split][0]),
                count,
                fraction,
                seed=derived_seed(train.seed, purpose),
                first_member=first_member,
            )

        self.sampler = sampler("train", SAMPLER_SEED)
        check_batch(self.sampler, self.batch_size, "train.batch_size")
        if self.lf:
            self.lf_sampler = sampler("lf_train", LF_SAMPLER_SEED)
            check_batch(self.lf_sampler, self.lf_batch_size, "train.lf_batch_size")
        if not self.config.ensemble and world > 1:
            self.shard = self._batch_shard(self.batch_size, rank, world)

    def _index(self, sampler: BootstrapSampler, step: int, size: int) -> Tensor:
        return sampler.batch(step, size)[:, self.shard].to(self.device)

    def _batch(self, split: str, step: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """(x, y, bootstrap weights or None) of step `step`'s batch of `split` on this rank."""
        if self.streams:
            rows, x, y = self.streams[split].batch(step)
            weights = None
            if self.fraction < 1.0:
                purpose = LF_SAMPLER_SEED if split == "lf_train" else SAMPLER_SEED
                seed = derived_seed(self.config.train.seed, purpose)
                weights = bootstrap_weights(seed, self.members_trained, rows, self.fraction)
                weights = weights.to(self.device)
            return x.to(self.device), y.to(self.device), weights
        lf = split == "lf_train"
        sampler = self.lf_sampler if lf else self.sampler
        index = self._index(sampler, step, self.lf_batch_size if lf else self.batch_size)
        x, y = self.data[split]
        return x[index], y[index], None

    def batch_index(self, step: int) -> dict[str, Tensor]:
        if self.streams:
            return {s: self.streams[s].batch(step)[0].to(self.device) for s in self.streams}
        index = {"train": self._index(self.sampler, step, self.batch_size)}
        if self.lf:
            index["lf_train"] = self._index(self.lf_sampler, step, self.lf_batch_size)
        return index

    def split_tensors(self, split: str) -> list[Tensor]:
        return list(self.data[split])

    def step_loss(self, model: nn.Module, net: nn.Module, step: int) -> tuple[Tensor, Tensor]:
        x, y, weights = self._batch("train", step)
        if not self.lf:
            loss = ensemble_mse(model(x), y, weights)
            return loss, loss.detach().reshape(1)
        x_lf, y_lf, weights_lf = self._batch("lf_train", step)
        parts = mf_loss(model, x, y, x_lf, y_lf, self.options.alpha, weights, weights_lf)
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
        if self.lf and "lf_val" in self.data:
            x_lf, y_lf = self.data["lf_val"]
            parts.append(ensemble_mse(self.predict(net.lf, x_lf, chunk), y_lf))
        elif self.lf:
            parts.append(torch.tensor(float("nan")))
        return torch.stack(parts)

    def export(
        self,
        net: nn.Module,
        path: str | os.PathLike[str],
        output: str,
        member: int,
        provenance: Mapping[str, Any],
        ood: OodScore | None = None,
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
            ood=ood,
            transform=self.transform,
        )
        return save(module, path, metadata)


def _split_nlev(nlev: Mapping[str, int], names: Sequence[str]) -> dict[str, int]:
    return {k: v for k, v in nlev.items() if k in names}


def pick_loader(config: Config, readers: Sequence[SplitReader], pinned: str | None) -> str:
    """The loader for train splits read by `readers`; the note the run prints at start."""
    data = config.data
    need = sum(r.samples * r.row_bytes for r in readers)
    loader, why = choose_loader(data.loader, need, data.memory_gb, pinned)
    note = f"data loader: {loader} ({why})"
    if loader == "streaming":
        chunk = readers[0].chunk
        note += (
            f"; shuffle buffer {data.shuffle_chunks} chunks of {chunk} samples, "
            f"{data.prefetch} buffers read ahead"
        )
    return loader, note


def streamed_source(
    reader: SplitReader, key: str, convert: Callable[[dict[str, np.ndarray]], tuple[Tensor, ...]]
) -> SplitSource:
    """A streamed split: `convert` turns the fields of a block of rows into its tensors."""
    return SplitSource(
        lambda start, stop: convert(reader.read(slice(start, stop))),
        reader.samples,
        reader.chunk,
        key,
    )


def _blocks(reader: SplitReader, layout: FieldLayout, rows: int) -> Iterator[Tensor]:
    """`layout`'s fields of the split, flat, `rows` samples at a time."""
    for start in range(0, reader.samples, rows):
        yield layout.flatten(reader.read(slice(start, start + rows)), crop_top=True)


def _streamed_range(reader: SplitReader, layout: FieldLayout, rows: int) -> Tensor:
    """(2, size): per feature, the min and max of `layout`'s fields over the split, read
    `rows` at a time (a streamed split is never whole in memory)."""
    low = high = None
    for x in _blocks(reader, layout, rows):
        low = x.amin(0) if low is None else torch.minimum(low, x.amin(0))
        high = x.amax(0) if high is None else torch.maximum(high, x.amax(0))
    assert low is not None and high is not None  # a split has samples
    return torch.stack([low, high])


def _input_transform(
    config: Config,
    inputs: FieldLayout,
    raw_norm: Normaliser,
    main: zarr.Group,
    lf: zarr.Group | None,
) -> InputTransform:
    """The config's input representation over `inputs`. Invariant takes each level's sigma
    from the store's levels; `lf`, the LF store where the transform also reads it (LF
    training data or statistics), must have the same levels."""
    representation, group = feature_choices(config.model)[0], config.data.train_group
    where = f"model.representation: {representation} needs each level's pressure"
    sigma: list[float] = []
    if representation == "invariant":
        nlev = {s.name: s.nlev for s in inputs.fields}.get(TEMPERATURE, 0)
        try:
            sigma = store_sigma(main, group, nlev)
        except ValueError as error:
            raise DataError(f"{where}: data.store {config.data.store}: {error}") from None
        if lf is not None:
            try:
                same = np.allclose(store_sigma(lf, group, nlev), sigma, rtol=1e-6)
            except ValueError as error:
                raise DataError(f"{where}: data.lf_store {config.data.lf_store}: {error}") from None
            if not same:
                raise DataError(
                    f"{where}: data.lf_store {config.data.lf_store}: its lev differs from"
                    " data.store's (both fidelities are transformed on the same levels)"
                )
    try:
        return InputTransform.create(representation, inputs, raw_norm, sigma)
    except ValueError as error:
        raise DataError(f"model.representation: {representation}: {error}") from None


def _feature_task(cls: type[FeatureTask], config: Config, pinned: str | None) -> FeatureTask:
    data, model = config.data, config.model
    main = open_store(data.store)
    lf = open_store(data.lf_store, "data.lf_store") if data.lf_store else None
    x_names = list(data.inputs or main.attrs["inputs"])
    y_names = list(data.targets or main.attrs["targets"])
    with_bm, with_lf = cls.with_bm(model), cls.with_lf(model)
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
    x_layout = inputs.select(x_names)
    try:
        raw_norm = Normaliser.from_stats(inputs, stats)
        out_norm = Normaliser.from_stats(outputs, stats)
    except (KeyError, ValueError) as error:
        raise DataError(f"data.normalisation: {error}") from None
    lf_read = with_lf or config.normalisation == "lf"
    transform = _input_transform(config, inputs, raw_norm, main, lf if lf_read else None)
    features = transform.features(inputs)
    if transform.invariant:
        # The derived fields' statistics from the train split of the store whose statistics
        # normalise (the LF store's with normalisation lf), as the store's own were made.
        root, key = (lf, "data.lf_store") if config.normalisation == "lf" else (main, "data.store")
        assert root is not None  # validated: normalisation lf needs data.lf_store
        reader = SplitReader(root, data.train_group, x_layout.names, key)
        blocks = _blocks(reader, x_layout, reader.chunk * data.shuffle_chunks)
        stats = {**stats, **feature_statistics(transform, transform.features(x_layout), blocks)}
    try:
        in_norm = Normaliser.from_stats(
            features, scaled(features, stats, feature_choices(model)[1])
        )
    except (KeyError, ValueError) as error:
        raise DataError(f"data.normalisation: {error}") from None
    x_norm = Normaliser(in_norm.mean[: x_layout.size], in_norm.std[: x_layout.size])

    def convert(
        fields: Mapping[str, np.ndarray], layout: FieldLayout, norm: Normaliser
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(physical inputs, normalised features, normalised targets) of a split's fields;
        the transform reads only the x fields, which come first, so it serves LF rows too."""
        x = layout.flatten(fields, crop_top=True)
        return x, norm(transform(x)), out_norm(outputs.flatten(fields, crop_top=True))

    # The training store, and for the LF compositions the LF store under "lf_train", "lf_val".
    sources = [("", main, "data.store", inputs, in_norm)]
    if with_lf:
        assert lf is not None  # validated: the LF compositions need data.lf_store
        sources.append(("lf_", lf, "data.lf_store", x_layout, x_norm))
    readers = [
        SplitReader(root, data.train_group, layout.names + outputs.names, key)
        for _, root, key, layout, _ in sources
    ]
    loader, note = pick_loader(config, readers, pinned)
    tensors, streamed = {}, {}
    for (prefix, root, key, layout, norm), reader in zip(sources, readers, strict=True):
        if loader == "memory":
            x_train, x, y = convert(reader.read(), layout, norm)
            tensors[prefix + "train"] = (x, y)
        else:
            streamed[prefix + "train"] = streamed_source(
                reader, key, lambda f, layout=layout, norm=norm: convert(f, layout, norm)[1:]
            )
            if not prefix:
                x_train = _streamed_range(reader, inputs, reader.chunk * data.shuffle_chunks)
        if not prefix:  # the model file's valid ranges: the training inputs seen
            valid_range = inputs.value_range(x_train)
        n_val = group_size(root, data.val_group)
        if n_val:
            rows = val_rows(n_val, data.val_max_samples)
            fields = read_fields(root, data.val_group, layout.names + outputs.names, rows, key)
            tensors[prefix + "val"] = convert(fields, layout, norm)[1:]
    stores = {"train": store_record(main, data.store)}
    if lf is not None:
        stores["lf"] = store_record(lf, data.lf_store or "")
    spec = {
        "inputs": _layout_dict(inputs),
        "outputs": _layout_dict(outputs),
        "n_x": x_layout.size,
        "in_norm": _norm_dict(in_norm),
        "out_norm": _norm_dict(out_norm),
        "transform": transform.to_dict(),
        "valid_range": valid_range,
        "stores": stores,
        "loader": loader,
    }
    task = cls(config, spec, tensors)
    task.sources, task.loader_note = streamed, note
    return task


def task_from_stores(config: Config, loader: str | None = None) -> Task:
    """The config's kind's task with its training and validation data read from the config's
    stores; `loader` (a checkpoint's) overrides the config's choice, so that a resumed run
    keeps it."""
    return kinds.get(config.model.kind).task.from_stores(config, loader)


def task_from_spec(config: Config, spec: dict[str, Any]) -> Task:
    """The task without data, from a checkpoint's spec (for export)."""
    task: Task = kinds.get(config.model.kind).task(config, spec)
    return task

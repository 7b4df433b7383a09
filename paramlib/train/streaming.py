"""Minibatches streamed from a store split larger than memory: shuffled chunks, read ahead.

Order (a pure function of the seed and the step, like `BootstrapSampler`'s, so that a
resumed run needs only its step counter to continue bit for bit, mid-epoch included):

- the split's store chunks are permuted per epoch (seeded by seed and epoch); with ``world``
  data-parallel ranks, rank r takes every world-th chunk of that order from the r-th on,
  ``chunks // world`` of them (the few left over are skipped that epoch, other ones the next);
- a rank's chunks are read ``shuffle_chunks`` at a time into a shuffle buffer whose samples
  are permuted together (seeded by seed, epoch, buffer and rank);
- the buffers, one after the other, are the rank's epoch; its minibatches are consecutive
  runs of ``batch_size`` samples. Every epoch has the same number of steps, the fewest a
  rank can have, so an epoch sees each sample of the rank's chunks at most once and drops
  only the tail that does not fill a step (as the in-memory sampler drops its last batch).

A background thread reads and shuffles the next ``prefetch`` buffers into a bounded queue
while the model trains; memory holds at most ``prefetch + 2`` buffers.

Ensembles keep their bootstrap subsets without in-memory indexing: member m uses sample i
when a hash of (seed, m, i) falls below the bootstrap fraction (`bootstrap_weights`), and
its loss averages over the batch's samples in its subset. Every member sees the same batch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from paramlib.train.data import DataError

POLL_S = 0.2  # how often a waiting thread checks that the other one is still there


@dataclass(frozen=True)
class SplitSource:
    """A split to stream: ``read(start, stop)`` gives its rows as tensors, sample first
    (float32, as trained on); `key` names it in messages."""

    read: Callable[[int, int], tuple[Tensor, ...]]
    samples: int
    chunk: int  # the store's chunk length along sample: the unit of reading
    key: str


@dataclass(frozen=True)
class Buffer:
    """Shuffled samples of one shuffle buffer: store rows and their tensors, from `start`
    (the position in the rank's epoch) on."""

    epoch: int
    start: int
    rows: np.ndarray
    tensors: tuple[Tensor, ...]

    @property
    def stop(self) -> int:
        return self.start + len(self.rows)


class ChunkStream:
    """Minibatches of one split for one rank (module docstring); `batch(step)` in step order
    reads ahead, any other step restarts the reading there."""

    def __init__(
        self,
        source: SplitSource,
        batch_size: int,
        seed: int,
        shuffle_chunks: int,
        prefetch: int,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.read, self.samples, self.chunk = source.read, source.samples, source.chunk
        key = source.key
        self.batch_size, self.seed, self.shuffle_chunks = batch_size, seed, shuffle_chunks
        self.prefetch, self.rank, self.world = prefetch, rank, world
        samples, chunk = source.samples, source.chunk
        self.chunks = -(-samples // chunk)
        self.per_rank = self.chunks // world
        if self.per_rank < 1:
            raise DataError(
                f"{key}: {self.chunks} store chunk(s) cannot be shared by {world} ranks; "
                "set data.loader=memory or rebuild the store with smaller chunks"
            )
        short = chunk - (samples - (self.chunks - 1) * chunk)  # the last chunk's shortfall
        fewest = self.per_rank * chunk - short  # a rank whose chunks include the short one
        self.steps_per_epoch = fewest // batch_size
        if self.steps_per_epoch < 1:
            raise DataError(
                f"train.batch_size: {batch_size} samples per rank do not fit the {fewest} a "
                f"rank streams per epoch from {key}"
            )
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._queue: queue.Queue[Buffer | BaseException] = queue.Queue(maxsize=prefetch)
        self._buffers: list[Buffer] = []
        self._next_step = -1
        self._last: tuple[int, tuple[Tensor, ...]] | None = None

    # --- the order ----------------------------------------------------------------------

    def rank_chunks(self, epoch: int) -> np.ndarray:
        """This rank's store chunks in `epoch`, in reading order."""
        order = np.random.default_rng([self.seed, 0, epoch]).permutation(self.chunks)
        return order[self.rank :: self.world][: self.per_rank]

    def buffers(self, epoch: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """(index, start position, chunks) of the shuffle buffers `epoch` uses."""
        chunks, start = self.rank_chunks(epoch), 0
        used = self.steps_per_epoch * self.batch_size
        for index, first in enumerate(range(0, len(chunks), self.shuffle_chunks)):
            if start >= used:
                return
            group = chunks[first : first + self.shuffle_chunks]
            yield index, start, group
            start += sum(min(self.samples, (c + 1) * self.chunk) - c * self.chunk for c in group)

    def load(self, epoch: int, index: int, start: int, chunks: np.ndarray) -> Buffer:
        """Read and shuffle one buffer."""
        bounds = [(c * self.chunk, min(self.samples, (c + 1) * self.chunk)) for c in chunks]
        parts = [self.read(a, b) for a, b in bounds]
        rows = np.concatenate([np.arange(a, b) for a, b in bounds])
        order = np.random.default_rng([self.seed, 1, epoch, index, self.rank]).permutation(
            len(rows)
        )
        picked = torch.from_numpy(order)
        tensors = tuple(torch.cat([p[i] for p in parts])[picked] for i in range(len(parts[0])))
        return Buffer(epoch, start, rows[order], tensors)

    # --- the reading thread ---------------------------------------------------------------

    def _produce(self, epoch: int, first: int) -> None:
        try:
            while not self._stop.is_set():
                for index, start, chunks in self.buffers(epoch):
                    if index >= first:
                        self._put(self.load(epoch, index, start, chunks))
                    if self._stop.is_set():
                        return
                epoch, first = epoch + 1, 0
        except BaseException as error:  # handed to the training thread, which raises it
            self._put(error)

    def _put(self, item: Buffer | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def _get(self) -> Buffer:
        while True:
            try:
                item = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                if self._thread is None or not self._thread.is_alive():
                    raise RuntimeError("the store reading thread stopped") from None
                continue
            if isinstance(item, BaseException):
                raise item
            return item

    def _start(self, epoch: int, position: int) -> None:
        """(Re)start reading at the buffer holding `position` of `epoch`."""
        self.close()
        first = max(i for i, start, _ in self.buffers(epoch) if start <= position)
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self.prefetch)
        self._buffers = []
        self._thread = threading.Thread(
            target=self._produce, args=(epoch, first), name="paramlib-stream", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop the reading thread (it finishes the chunk it is reading)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # --- minibatches ------------------------------------------------------------------------

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, first sample position in this rank's epoch) of training step `step`."""
        epoch, k = divmod(step, self.steps_per_epoch)
        return epoch, k * self.batch_size

    def batch(self, step: int) -> tuple[Tensor, ...]:
        """(store rows, int64, then the split's tensors) of step `step`'s batch on this rank."""
        if self._last is not None and self._last[0] == step:
            return self._last[1]
        epoch, position = self.position(step)
        if step != self._next_step or self._thread is None:
            self._start(epoch, position)
        stop = position + self.batch_size
        # Buffers are dropped once passed; the next ones are taken until the batch is covered.
        self._buffers = [b for b in self._buffers if b.epoch == epoch and b.stop > position]
        while not self._buffers or self._buffers[-1].stop < stop:
            buffer = self._get()
            if buffer.epoch == epoch and buffer.stop > position:
                self._buffers.append(buffer)
        parts = [
            (b.rows[max(position, b.start) - b.start : stop - b.start], b.tensors, b.start)
            for b in self._buffers
            if b.start < stop
        ]
        rows = torch.from_numpy(np.concatenate([p[0] for p in parts]))
        tensors = tuple(
            torch.cat([t[i][max(position, start) - start : stop - start] for _, t, start in parts])
            for i in range(len(parts[0][1]))
        )
        self._next_step = step + 1
        self._last = (step, (rows, *tensors))
        return self._last[1]


_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: well-mixed 64-bit values from consecutive integers."""
    x = x + _MIX[0]
    x = (x ^ (x >> np.uint64(30))) * _MIX[1]
    x = (x ^ (x >> np.uint64(27))) * _MIX[2]
    return x ^ (x >> np.uint64(31))


def bootstrap_weights(seed: int, members: Sequence[int], rows: Tensor, fraction: float) -> Tensor:
    """(len(members), len(rows)) float32: 1 where store row i is in member m's bootstrap
    subset (a fixed fraction of the split, drawn by hashing seed, m and i), else 0."""
    index = rows.cpu().numpy().astype(np.uint64)
    weights = []
    with np.errstate(over="ignore"):  # wrapping uint64 arithmetic is the hash
        for member in members:
            key = _splitmix(np.array([seed, member], dtype=np.uint64)).sum(dtype=np.uint64)
            uniform = (_splitmix(index ^ key) >> np.uint64(11)).astype(np.float64) / 2.0**53
            weights.append(uniform < fraction)
    return torch.from_numpy(np.stack(weights).astype(np.float32))

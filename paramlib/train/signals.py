"""Preemption: SIGTERM or SIGUSR1 asks the run to stop after the current step.

SLURM sends SIGTERM before it kills a preempted or timed-out job, and ``sbatch --signal=USR1@T``
sends SIGUSR1 T seconds ahead. The handler only records the signal; the training loop finishes
its step, writes the checkpoint and exits with `paramlib.train.REQUEUE_EXIT`.
"""

from __future__ import annotations

import signal
from types import FrameType, TracebackType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    """A context manager that catches `STOP_SIGNALS` while it is active; `signal` holds the
    first one received (None until then). The previous handlers come back on exit."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is None:
            self.signal = signum

    def __enter__(self) -> StopRequest:
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else ""

"""What the Python faces of compiled Fortran libraries share: the error raised for a
failure status, and release of the Fortran object at the end of a `with` block."""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import IntEnum
from types import TracebackType
from typing import Self


class FortranStatusError(RuntimeError):
    """A Fortran call failed: `status` is its status code, `message` its message.
    Subclasses name the IntEnum of their library's codes in `statuses`."""

    statuses: type[IntEnum]

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        try:
            label = self.statuses(status).name
        except ValueError:
            label = f"status {status}"
        super().__init__(f"{label}: {message}")


class FreedOnExit(ABC):
    """Context-manager protocol for a wrapper owning a Fortran object: `free()` it at the
    end of the block unless already freed (subclasses set `_freed` and define `free`)."""

    _freed: bool

    @abstractmethod
    def free(self) -> None:
        """Release the Fortran object; later calls report an invalid handle."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._freed:
            self.free()

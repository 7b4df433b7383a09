"""Errors raised where a call into compiled Fortran returns a failure status."""

from __future__ import annotations

from enum import IntEnum


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

"""Checks every command makes on what a user names before it writes: names that must stay one
path component, output paths that must be writable, folders paramlib may replace, and an
advisory lock so that two processes never write one folder at the same time.

Each check raises `UserInputError` with one line that names the argument and what was
expected; command handlers print it and exit non-zero (no traceback for a user's mistake).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import socket
from pathlib import Path
from types import TracebackType
from typing import Literal

# A folder paramlib created and may therefore empty or replace holds this file.
OWNED_MARKER = ".paramlib-owned"
LOCK_NAME = ".paramlib.lock"

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


class UserInputError(ValueError):
    """A path, name or value the user gave cannot be used; the message says which and why."""


def safe_name(value: object, what: str) -> str:
    """``value`` if it is one safe path component (letters, digits, ``. _ + -``, not starting
    with a dot or dash), for names that become folder or file names (``runs/NAME``)."""
    if not isinstance(value, str) or not _SAFE_NAME.fullmatch(value) or len(value) > 200:
        raise UserInputError(
            f"{what} {value!r} is not a usable name: expected one path component of letters,"
            " digits, '.', '_', '+', '-' (no '/', '..' or leading dot), at most 200 characters"
        )
    return value


def check_output_path(
    path: str | os.PathLike[str], what: str, kind: Literal["dir", "file"]
) -> Path:
    """Fail now, before any work, when ``path`` cannot be written as a ``kind``: an existing
    entry of the other kind, or a nearest existing ancestor that is not a writable folder."""
    path = Path(path)
    if kind == "dir" and path.exists() and not path.is_dir():
        raise UserInputError(f"{what} {path} exists and is not a folder; expected a folder")
    if kind == "file" and path.is_dir():
        raise UserInputError(f"{what} {path} is a folder; expected a file path")
    target = path if path.exists() else path.parent
    while not target.exists():
        target = target.parent
    if not target.is_dir():
        raise UserInputError(f"{what} {path}: {target} is a file, so {path} cannot be created")
    if not os.access(target, os.W_OK | os.X_OK):
        raise UserInputError(f"{what} {path}: {target} is not writable")
    return path


def mark_owned(folder: Path) -> None:
    """Record that paramlib created ``folder`` (see `check_replaceable`)."""
    (folder / OWNED_MARKER).write_text("created by paramlib; may be replaced by it\n")


def check_replaceable(folder: Path, what: str) -> None:
    """Refuse to replace a non-empty folder that paramlib did not create: a user's files in
    it must never be deleted."""
    if folder.is_dir() and any(folder.iterdir()) and not (folder / OWNED_MARKER).exists():
        raise UserInputError(
            f"{what} {folder} is a non-empty folder that paramlib did not create (no"
            f" {OWNED_MARKER}); choose an empty or new folder"
        )


def process_alive(pid: int, host: str) -> bool:
    """Whether the process ``pid`` on ``host`` may still run (True when on another host:
    unknowable from here, so never treated as dead)."""
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_record() -> dict[str, object]:
    """Who is writing: recorded in locks and temporary outputs so that leftovers of a dead
    process can be recognised."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


class FolderLock:
    """An advisory ``flock`` on ``FOLDER/.paramlib.lock`` for the life of a ``with`` block.
    The kernel drops the lock when its holder dies, so a stale lock file (a killed run) never
    blocks; the PID and host written inside name a live holder in the refusal."""

    def __init__(self, folder: str | os.PathLike[str], what: str) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            try:
                holder = json.loads(self.path.read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            raise UserInputError(
                f"{self.what} {self.path.parent} is in use by another paramlib process"
                f" (pid {holder.get('pid', '?')} on {holder.get('host', '?')}); wait for it"
                " or choose another folder"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(owner_record()).encode())
        self._fd = fd
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

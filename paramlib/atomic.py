"""Files written whole or not at all: a temporary file beside the target, fsync, rename."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write`` on a new temporary file in ``path``'s folder, then rename it over ``path``
    (same folder, so the rename is atomic on one file system): a reader, or a writer killed
    half-way, never sees a partial file, and what was at ``path`` stays until the new file is
    complete."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(temporary, "xb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path

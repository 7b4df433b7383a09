"""The sha256 of source files, remembered between builds.

A store's attributes hold the sha256 of every source file, and deciding whether a store is up to
date means hashing its sources again: at the scale of a real archive (terabytes of wrfout), every
`paramlib dataset build` would read it all just to say "up to date", and every first build spends
as much CPU on sha256 as on reading its variables (168 MB files: 0.15 s each with SHA-NI).

So a hash is remembered per file, keyed by what the file system says about it (device, inode,
size, modification and change time in ns), as git's index and DVC's state database do: a file
rewritten, replaced, copied or touched gets another key and is hashed again. The change time
cannot be set by users (``touch -d`` and ``cp -p`` set the modification time only). A file
modified within ``SETTLE_SECONDS`` before it was hashed is not remembered (its next write could
keep the same times at the file system's clock resolution, git's "racily clean" case), nor one
whose attributes changed while it was hashed. ``rehash=True`` ignores what is remembered.

The cache is a folder of small JSON files, one per source path (``$PARAMLIB_CACHE_DIR`` or
``$XDG_CACHE_HOME/paramlib``), written atomically; one unreadable or not writable is ignored
(the file is hashed), so the cache can only save time, never change a result.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from paramlib.atomic import write_atomic
from paramlib.paths import cache_dir

SETTLE_SECONDS = 2.0


def sha256_file(
    path: str | os.PathLike, block: int = 1 << 20, cancel: threading.Event | None = None
) -> str:
    """The file's sha256; CancelledError once ``cancel`` is set (checked every ``block``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(block):
            if cancel is not None and cancel.is_set():
                raise CancelledError(f"sha256 of {path}")
            digest.update(chunk)
    return digest.hexdigest()


def _identity(stat: os.stat_result) -> list[int]:
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def _entry(path: Path) -> Path:
    """Where the hash of ``path`` (absolute) is remembered."""
    name = hashlib.sha256(os.fsencode(path)).hexdigest()
    return cache_dir() / "sha256" / name[:2] / f"{name}.json"


def remembered_sha256(
    path: str | os.PathLike, cancel: threading.Event | None = None, rehash: bool = False
) -> str:
    """``sha256_file(path)``, from the cache when the file is as it was when last hashed."""
    path = Path(path).absolute()
    before = path.stat()
    entry = _entry(path)
    if not rehash:
        try:
            known = json.loads(entry.read_text())
            if known["path"] == str(path) and known["identity"] == _identity(before):
                return str(known["sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # none yet, or unreadable: hash the file
    digest = sha256_file(path, cancel=cancel)
    settled = time.time() - before.st_mtime_ns / 1e9 > SETTLE_SECONDS
    if settled and _identity(path.stat()) == _identity(before):
        record = {"path": str(path), "identity": _identity(before), "sha256": digest}
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(entry, lambda handle: handle.write(json.dumps(record).encode()))
        except OSError:
            pass  # a read-only or full cache: the next build hashes the file again
    return digest


def sha256_files(
    paths: Sequence[str | os.PathLike],
    threads: int = 4,
    cancel: threading.Event | None = None,
    rehash: bool = False,
) -> dict[str, str]:
    """sha256 of each file (remembered ones from the cache), a few at a time (hashlib releases
    the GIL: the reads and hashes of a many-file run overlap)."""
    with ThreadPoolExecutor(threads) as pool:
        hash_one = functools.partial(remembered_sha256, cancel=cancel, rehash=rehash)
        return dict(zip(map(str, paths), pool.map(hash_one, paths), strict=True))


class BackgroundHashes:
    """``sha256_files(paths)`` in the background from now on: a build with no store to compare
    fingerprints with needs the hashes only for the attributes written at its end, so they
    overlap the pass instead of coming first (1-2 s of a build of 16 files); the up-to-date
    check waits for them.
    With a dask.distributed client (the default LocalCluster, ``--slurm``, ``--scheduler
    ADDRESS``) each file is a task on the workers, beside the pass's: on SLURM the nodes read
    and hash the files in parallel instead of the client hashing terabytes alone (15-30 min for
    3.4 TB). Without one (``--scheduler threads``), a thread of this process hashes them.
    ``cancel`` ends it early (a failed build does not wait for its hashes)."""

    def __init__(
        self, paths: Sequence[str | os.PathLike], threads: int = 2, rehash: bool = False
    ) -> None:
        self._paths = [str(p) for p in paths]
        self._cancel = threading.Event()
        self._client = _distributed_client()
        if self._client is not None:
            # pure=False: a file rewritten since the last build is hashed again, not taken
            # from the scheduler's memory of an earlier task with the same arguments.
            self._futures = self._client.map(
                remembered_sha256, self._paths, rehash=rehash, pure=False, priority=-1
            )
            return
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="paramlib-sha256")
        self._hashes = self._thread.submit(sha256_files, paths, threads, self._cancel, rehash)
        self._thread.shutdown(wait=False)

    def result(self) -> dict[str, str]:
        if self._client is not None:
            return dict(zip(self._paths, self._client.gather(self._futures), strict=True))
        return self._hashes.result()

    def cancel(self) -> None:
        self._cancel.set()
        if self._client is not None:
            self._client.cancel(self._futures)


def _distributed_client() -> Any:
    """The dask.distributed client the build runs under, None without one."""
    import dask.base

    try:
        from distributed import get_client

        client = get_client()
    except (ImportError, ValueError):  # not installed; no client in this context
        return None
    # The client only where the build's computes go to it (not under scheduler="threads").
    return client if dask.base.get_scheduler() == client.get else None

"""Source hashes: sha256 in the background, and remembered per file between builds."""

import hashlib
import json
import os
import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path

import pytest
from wrf_data import CTL, WRF_DIR

from paramlib.data.hashes import (
    SETTLE_SECONDS,
    BackgroundHashes,
    _entry,
    remembered_sha256,
    sha256_file,
    sha256_files,
)

FAKE = "f" * 64


def test_hashes_in_the_background_equal_sha256_and_stop_when_cancelled():
    """A build with no store to compare hashes its sources while the pass reads them; a failed
    build cancels the hashing instead of waiting for it."""
    paths = [CTL, WRF_DIR / "wrfout_d01_shear2x.nc"]
    assert BackgroundHashes(paths).result() == {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths
    }
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(CancelledError):
        sha256_files(paths, cancel=cancelled, rehash=True)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PARAMLIB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def settled_file(path: Path, data: bytes) -> Path:
    """A file last modified long enough ago to be remembered."""
    path.write_bytes(data)
    old = time.time() - 10 * SETTLE_SECONDS
    os.utime(path, (old, old))
    return path


def forge(path: Path) -> None:
    """Replace the remembered hash of ``path`` by FAKE: a later answer of FAKE came from the
    cache, not from reading the file."""
    entry = _entry(path.absolute())
    record = json.loads(entry.read_text())
    entry.write_text(json.dumps(dict(record, sha256=FAKE)))


def test_a_remembered_hash_is_used_until_the_file_changes(cache, tmp_path):
    path = settled_file(tmp_path / "wrfout_a", b"frames" * 1000)
    true = sha256_file(path)
    assert remembered_sha256(path) == true
    forge(path)
    assert remembered_sha256(path) == FAKE  # unchanged: not read again
    assert sha256_files([path]) == {str(path): FAKE}
    assert remembered_sha256(path, rehash=True) == true  # --rehash reads it, and remembers
    forge(path)
    stat = path.stat()
    with path.open("r+b") as stream:
        stream.write(b"F")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime: the change
    assert path.stat().st_mtime_ns == stat.st_mtime_ns  #         time tells
    assert remembered_sha256(path) == sha256_file(path) != true


def test_a_replaced_file_is_hashed_again(cache, tmp_path):
    path = settled_file(tmp_path / "wrfout_b", b"one" * 1000)
    remembered_sha256(path)
    forge(path)
    other = settled_file(tmp_path / "other", b"two" * 1000)
    stat = path.stat()
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and mtime
    other.replace(path)
    assert remembered_sha256(path) == hashlib.sha256(b"two" * 1000).hexdigest()


def test_a_file_just_written_is_not_remembered(cache, tmp_path):
    """Its next write could keep the same times: its hash is not kept."""
    path = tmp_path / "wrfout_c"
    path.write_bytes(b"fresh")
    assert remembered_sha256(path) == hashlib.sha256(b"fresh").hexdigest()
    assert not _entry(path.absolute()).exists()


def test_an_unusable_cache_only_costs_time(cache, tmp_path):
    path = settled_file(tmp_path / "wrfout_d", b"data" * 100)
    cache.parent.mkdir(exist_ok=True)
    cache.write_text("not a folder")  # the cache cannot be written
    assert remembered_sha256(path) == sha256_file(path)
    cache.unlink()
    remembered_sha256(path)
    _entry(path.absolute()).write_text("{ not json")  # nor read
    assert remembered_sha256(path) == sha256_file(path)

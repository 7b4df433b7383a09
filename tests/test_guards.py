"""paramlib.guards: names, output paths, folders paramlib may replace, the folder lock."""

from __future__ import annotations

import multiprocessing
import os
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from paramlib.guards import (
    FolderLock,
    UserInputError,
    check_output_path,
    check_replaceable,
    mark_owned,
    process_alive,
    safe_name,
)


@pytest.mark.parametrize("bad", ["../../x", "a/b", ".hidden", "", "-flag", "..", 3, None])
def test_safe_name_refuses_what_escapes_or_hides(bad: object) -> None:
    with pytest.raises(UserInputError, match="not a usable name"):
        safe_name(bad, "config name")


def test_safe_name_keeps_ordinary_names() -> None:
    assert safe_name("mfrpn_testbed-small.v2", "name") == "mfrpn_testbed-small.v2"


def test_check_output_path(tmp_path: Path) -> None:
    a_file = tmp_path / "f"
    a_file.write_text("x")
    with pytest.raises(UserInputError, match="not a folder"):
        check_output_path(a_file, "--out", "dir")
    with pytest.raises(UserInputError, match="is a file, so"):
        check_output_path(a_file / "sub" / "run", "--out", "dir")
    with pytest.raises(UserInputError, match="is a folder"):
        check_output_path(tmp_path, "--json", "file")
    deeper = tmp_path / "new" / "deeper"
    assert check_output_path(deeper, "--out", "dir") == deeper
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        with pytest.raises(UserInputError, match="not writable"):
            check_output_path(locked / "run", "--out", "dir")


def test_check_replaceable(tmp_path: Path) -> None:
    check_replaceable(tmp_path / "absent", "--out")
    check_replaceable(tmp_path, "--out")  # empty
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="did not create"):
        check_replaceable(tmp_path, "--out")
    mark_owned(tmp_path)
    check_replaceable(tmp_path, "--out")


def _hold_lock(folder: str, ready: Event, stop: Event) -> None:
    with FolderLock(folder, "run directory"):
        ready.set()
        stop.wait(30)


def test_folder_lock_refuses_a_second_holder_and_frees_on_exit(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(str(tmp_path), ready, stop))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(UserInputError, match=f"in use .*pid {holder.pid}"):
            with FolderLock(tmp_path, "run directory"):
                pass
    finally:
        stop.set()
        holder.join(30)
    with FolderLock(tmp_path, "run directory"):  # released by the holder's exit
        pass


def test_folder_lock_left_by_a_killed_process_does_not_block(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    holder = context.Process(target=_hold_lock, args=(str(tmp_path), ready, stop))
    holder.start()
    assert ready.wait(30)
    holder.kill()
    holder.join(30)
    assert not process_alive(holder.pid or 0, os.uname().nodename)
    with FolderLock(tmp_path, "run directory"):
        pass

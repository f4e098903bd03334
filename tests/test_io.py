"""otae._io: atomic writes (old or new file, never a mix or a leftover) and CSV rows."""

from __future__ import annotations

import csv
import os
import threading

import pytest

from otae._io import atomic_write, atomic_write_text, write_csv_rows


class _Boom(Exception):
    pass


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "x.txt"
    atomic_write_text(path, "old")

    def half(handle):
        handle.write("new but")
        raise _Boom

    with pytest.raises(_Boom):
        atomic_write(path, half, mode="w")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]


def test_a_new_file_appears_only_when_complete(tmp_path):
    path = tmp_path / "sub" / "y.bin"
    seen = []

    def write(handle):
        handle.write(b"abc")
        seen.append(path.exists())  # not there while it is being written

    atomic_write(path, write)
    assert seen == [False] and path.read_bytes() == b"abc"
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_concurrent_writers_each_leave_a_whole_file(tmp_path):
    path = tmp_path / "shared.txt"
    texts = [str(i) * 10000 for i in range(8)]
    threads = [threading.Thread(target=atomic_write_text, args=(path, t)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert path.read_text() in texts  # one writer's whole text, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["shared.txt"]


def test_bad_mode_is_refused(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'wb' or 'w'"):
        atomic_write(tmp_path / "z", lambda h: None, mode="a")
    assert not os.listdir(tmp_path)


def test_csv_rows_take_the_union_of_keys_in_first_seen_order(tmp_path):
    path = tmp_path / "rows.csv"
    write_csv_rows(path, [{"a": 1, "b": 2}, {"b": 3, "c": "x,y"}])
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows == [["a", "b", "c"], ["1", "2", ""], ["", "3", "x,y"]]
    write_csv_rows(path, [{"a": 1, "b": 2}], fieldnames=["b", "a"])
    assert path.read_text().splitlines() == ["b,a", "2,1"]


# ---------------------------------------------------------------------- folder locks
HOLDER = """
import sys, time
from otae._io import FolderLock
FolderLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def hold_in_another_process(folder):
    """A process that locks ``folder`` and waits: ``(process, its pid)`` once it holds it."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)],
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert process.stdout.readline().strip() == "locked"
    return process


def acquirable_from_another_process(folder) -> bool:
    import subprocess
    import sys

    code = "import sys; from otae._io import FolderLock; FolderLock(sys.argv[1]).acquire()"
    return subprocess.run([sys.executable, "-c", code, str(folder)],
                          capture_output=True).returncode == 0  # fmt: skip


def test_a_folder_lock_refuses_another_process_until_it_dies(tmp_path):
    from otae._io import LOCK_FILE, FolderInUseError, FolderLock

    folder = tmp_path / "run"
    holder = hold_in_another_process(folder)
    try:
        with pytest.raises(FolderInUseError, match=rf"run directory {folder} is in use by "
                           rf"another process \(pid {holder.pid}\)"):  # fmt: skip
            FolderLock(folder, "run directory").acquire()
        assert (folder / LOCK_FILE).read_text().strip() == str(holder.pid)
    finally:
        holder.kill()  # SIGKILL: no clean-up of its own, the kernel drops the lock
        holder.wait()
    with FolderLock(folder):
        assert (folder / LOCK_FILE).read_text().strip() == str(os.getpid())


def test_a_folder_lock_asked_to_wait_takes_the_folder_once_the_other_process_lets_go(tmp_path):
    import threading

    from otae._io import LOCK_FILE, FolderInUseError, FolderLock

    folder = tmp_path / "results"
    holder = hold_in_another_process(folder)
    released = threading.Event()

    def release():
        released.set()  # before the kill: the lock cannot be free earlier
        holder.kill()

    try:
        with pytest.raises(FolderInUseError, match=r"in use by another process "
                           rf"\(pid {holder.pid}\) \(waited 0.2 s\)"):  # fmt: skip
            FolderLock(folder).acquire(wait=0.2)
        threading.Timer(0.5, release).start()
        lock = FolderLock(folder).acquire(wait=60)
        assert released.is_set()
        assert (folder / LOCK_FILE).read_text().strip() == str(os.getpid())
        lock.release()
    finally:
        holder.kill()
        holder.wait()


def test_a_folder_lock_is_reentrant_in_one_process_and_held_until_the_last_release(tmp_path):
    from otae._io import FolderLock

    outer, inner = FolderLock(tmp_path), FolderLock(tmp_path)
    outer.acquire()
    inner.acquire()
    inner.release()
    assert not acquirable_from_another_process(tmp_path)
    outer.release()
    outer.release()  # a second release of the same holder changes nothing
    assert acquirable_from_another_process(tmp_path)


def test_a_file_system_without_locks_leaves_the_folder_unguarded_not_refused(tmp_path, monkeypatch):
    import errno

    from otae import _io

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(_io.fcntl, "flock", no_locks)
    lock = _io.FolderLock(tmp_path).acquire()  # not "in use by another process"
    lock.release()

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

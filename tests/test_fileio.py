"""fileio: atomic writes whose files get the modes the user's umask gives (not tempfile's private ones)."""

from __future__ import annotations

import os

from autocustom.fileio import DIR_MODE, FILE_MODE, atomic_path, staged_dir, write_json_atomic


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_written_files_and_directories_get_the_umasks_modes(tmp_path):
    assert (0o666 & ~_umask(), 0o777 & ~_umask()) == (FILE_MODE, DIR_MODE)
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    with atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"\x00")
    with staged_dir(tmp_path / "export") as staging:
        (staging / "c.txt").write_text("c")
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == FILE_MODE
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == FILE_MODE
    assert (tmp_path / "export").stat().st_mode & 0o777 == DIR_MODE

"""Atomic writes and validating reads: the file primitives every directory autocustom writes is built on.

Every write goes to a temporary file in the same directory and is renamed into place, so a kill at
any moment leaves either the old file or the new one, never half of one. The temporary files and
directories are made private (0600, 0700) by `tempfile`; what is renamed into place gets the modes the
user's umask gives any file they write, so a teammate or a serving process reads it as usual.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from autocustom.errors import DataError, OutputExistsError

T = TypeVar("T")


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read the umask is to set it: set it back at once
    os.umask(mask)
    return mask


_UMASK = _umask()  # once, at import: os.umask is process-wide, so it is not read while threads write
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


def temp_dir(prefix: str, parent: Path) -> Path:
    """A new directory in `parent` (to be renamed into place) with the user's usual directory mode."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path.chmod(DIR_MODE)
    return path


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str | Path, records: Iterable[Any]) -> None:
    lines = (json.dumps(_plain(r), ensure_ascii=False) for r in records)
    write_text_atomic(path, "".join(line + "\n" for line in lines))


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file name beside `path` for a writer that takes a file name (safetensors, GGUF);
    renamed to `path` when the block ends, removed if it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, FILE_MODE)  # a writer that replaces the file (safetensors) gets the umask's mode anyway
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_text(path: str | Path) -> str:
    """A UTF-8 text file autocustom wrote or reads; another encoding is one line naming the file."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, "file not found", "check the path") from None
    except UnicodeDecodeError as exc:
        raise DataError(
            path, f"is not UTF-8 text (byte {exc.start}: {exc.reason})", "save it as UTF-8, or regenerate it"
        ) from None


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(
            path, f"invalid JSON: {exc.msg}", "fix or regenerate the file", line=exc.lineno
        ) from None


def read_jsonl(path: str | Path, parse: Callable[[dict[str, Any]], T]) -> list[T]:
    """Read one record per line through `parse`; any bad line raises DataError with file:line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found", "check the dataset directory or regenerate it")
    records = []
    for number, line in enumerate(read_text(path).split("\n"), start=1):  # not splitlines: U+2028 is text
        if not line.strip():
            continue
        try:
            records.append(parse(json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DataError(
                path, f"invalid JSON: {exc.msg}", "fix or delete that line", line=number
            ) from None
        except (ValueError, TypeError, KeyError) as exc:
            raise DataError(path, f"bad record: {exc}", "fix or delete that line", line=number) from None
    return records


def _plain(record: Any) -> Any:
    return record.to_dict() if hasattr(record, "to_dict") else record


def require_writable_file(path: Path) -> None:
    """Refuse, before any work, a file to write that is a directory or lies under a file (the write at
    the end would fail after the whole job)."""
    if path.is_dir():
        raise OutputExistsError(f"--out {path} is a directory", "pass a file name, e.g. score.json")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputExistsError(
                f"--out {path} lies under the file {parent}", "pass a path in a directory"
            )


def require_new_dir(out: Path) -> None:
    """Refuse an output location that exists and is not an empty directory (nothing of the user's is touched)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"--out {out} exists and is not empty", "pass a new --out")


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """A temporary directory beside `out`, renamed to `out` when the block ends: a failure leaves nothing."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = temp_dir(f".{out.name}.", out.parent)
    try:
        yield staging
        if out.exists():
            out.rmdir()  # an empty directory the user made for us
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

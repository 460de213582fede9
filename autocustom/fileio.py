"""Atomic writes and validating reads: the file primitives every directory autocustom writes is built on.

Every write goes to a temporary file in the same directory and is renamed into place, so a kill at
any moment leaves either the old file or the new one, never half of one.
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


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(path, "file not found", "check the path") from None
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
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
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


def require_new_dir(out: Path) -> None:
    """Refuse an output location that exists and is not an empty directory (nothing of the user's is touched)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OutputExistsError(f"--out {out} exists and is not empty", "pass a new --out")


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """A temporary directory beside `out`, renamed to `out` when the block ends: a failure leaves nothing."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield staging
        if out.exists():
            out.rmdir()  # an empty directory the user made for us
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

"""Rows of pair data from whatever a user has: CSV/TSV, JSONL/JSON, Parquet, a Hugging Face dataset.

Every row comes with where it was (`file:line` for text files, `file:row N` otherwise), so a bad row can
be named in one line. Text is kept as read: no stripping, no re-encoding.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autocustom.errors import DataError, UsageError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet"}
# Byte-order marks a spreadsheet may write, and the encodings they mean (UTF-16 is Excel's "Unicode text").
BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
FALLBACK_ENCODING = "cp1252"  # what a spreadsheet on Windows saves "CSV" in when the text is not UTF-8


@dataclass(frozen=True)
class Row:
    values: dict[str, Any]
    where: str  # "pairs.csv:12" or "pairs.parquet:row 12"


def read_rows(source: str) -> tuple[list[Row], str]:
    """All rows of `source` and the format it was read as; the format comes from the extension."""
    path = Path(source)
    if path.is_dir():
        return _hf_rows(_load_from_disk(path), str(path)), "datasets"
    if path.suffix.lower() in FORMATS:
        if not path.is_file():
            raise DataError(path, "file not found", "check the path")
        kind = FORMATS[path.suffix.lower()]
        reader = {"csv": _delimited, "tsv": _delimited, "jsonl": _jsonl, "json": _json, "parquet": _parquet}[
            kind
        ]
        return reader(path), kind
    if path.exists() or "/" not in source or source.startswith((".", "/")):
        raise UsageError(
            f"cannot tell the format of {source}",
            f"use a file ending in {', '.join(FORMATS)}, a `save_to_disk` directory or a hub id (owner/name)",
        )
    return _hf_rows(_load_hub(source), source), "datasets"


def _decode(path: Path) -> str:
    """The text of a file in the encodings a table is saved in; anything else is refused in one line."""
    raw = path.read_bytes()
    for bom, encoding in BOMS:
        if raw.startswith(bom):
            return _checked(path, raw, encoding)
    if b"\x00" in raw:  # valid UTF-8 byte by byte, but text does not hold NULs: UTF-16 saved without a BOM
        raise DataError(path, "holds NUL bytes (UTF-16 without a byte-order mark?)", _SAVE_AS_UTF8)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return _checked(path, raw, FALLBACK_ENCODING)


_SAVE_AS_UTF8 = "save it as UTF-8 (Excel: CSV UTF-8; pandas: encoding='utf-8')"


def _checked(path: Path, raw: bytes, encoding: str) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DataError(
            path, f"is neither UTF-8 nor {encoding} text (byte {exc.start}: {exc.reason})", _SAVE_AS_UTF8
        ) from None


def _delimited(path: Path) -> list[Row]:
    """CSV or TSV with quoted commas and newlines; each row named by the line it starts on.

    `strict`: a stray or unterminated quote is an error, not a field that silently swallows the rows
    after it; a row with more cells than the header is one too (its extra cells would be lost).
    """
    text = _decode(path)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows, start, header = [], 1, None
    try:
        for record in reader:
            if header is None:
                header = record
            elif len(record) > len(header):
                raise DataError(
                    path,
                    f"row has {len(record)} cells and the header {len(header)}",
                    "quote cells that hold the delimiter",
                    line=start,
                )
            elif any(cell.strip() for cell in record):
                rows.append(Row(dict(zip(header, record, strict=False)), f"{path}:{start}"))
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(
            path, f"malformed row ({exc})", "close the quote or double a quote inside a cell", line=start
        ) from None
    if header is None:
        raise DataError(path, "is empty", "export the table with a header row")
    return rows


def _jsonl(path: Path) -> list[Row]:
    rows = []
    for number, line in enumerate(_decode(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(
                path, f"invalid JSON: {exc.msg}", "fix or delete that line", line=number
            ) from None
        if not isinstance(value, dict):
            raise DataError(path, "a line is not a JSON object", "write one object per line", line=number)
        rows.append(Row(value, f"{path}:{number}"))
    return rows


def _json(path: Path) -> list[Row]:
    try:
        value = json.loads(_decode(path))
    except json.JSONDecodeError as exc:
        raise DataError(path, f"invalid JSON: {exc.msg}", "fix the file", line=exc.lineno) from None
    records = value.get("data") if isinstance(value, dict) else value
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DataError(path, "is not a list of objects", 'write [{"question": ..., ...}, ...]')
    return [Row(r, f"{path}:row {i}") for i, r in enumerate(records, start=1)]


def _parquet(path: Path) -> list[Row]:
    import datasets
    import pyarrow

    try:
        return _hf_rows(datasets.Dataset.from_parquet(str(path)), str(path))
    except (pyarrow.ArrowException, datasets.exceptions.DatasetGenerationError) as exc:
        cause = exc.__cause__ or exc
        raise DataError(
            path, f"is not a readable Parquet file ({type(cause).__name__})", "write it again"
        ) from None


def _load_from_disk(path: Path):
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError):
        raise DataError(
            path, "is not a `save_to_disk` dataset directory", "pass a data file or a dataset dir"
        ) from None


def _load_hub(name: str):
    import datasets

    try:
        return datasets.load_dataset(name)
    except Exception as exc:  # datasets raises many types when offline or the id is wrong
        raise DataError(
            name, f"cannot load this hub dataset ({type(exc).__name__})", "check the id and the network"
        ) from None


def _hf_rows(loaded, where: str) -> list[Row]:
    """A Dataset, or every split of a DatasetDict one after the other (splits are made again here)."""
    parts = [(name, loaded[name]) for name in loaded] if hasattr(loaded, "keys") else [("", loaded)]
    rows = []
    for name, part in parts:
        label = f"{where}[{name}]" if name else where
        rows.extend(Row(record, f"{label}:row {i}") for i, record in enumerate(part, start=1))
    return rows

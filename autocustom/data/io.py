"""A dataset directory: written in one place (manifest last), read back validated with file:line errors."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from autocustom.axis import Axis
from autocustom.data.schema import SPLITS, Dropped, Manifest, Pair, Subarea
from autocustom.errors import DataError, OutputExistsError
from autocustom.fileio import read_json, read_jsonl, write_json_atomic, write_jsonl_atomic
from autocustom.layout import CALL_CACHE, DROPPED, MANIFEST, PAIRS, SUBAREAS, split_file

# Files `generate` writes; a directory holding only these (and the cache's journal) is ours to resume.
OUTPUT_FILES = (
    MANIFEST,
    SUBAREAS,
    PAIRS,
    DROPPED,
    *(split_file(s) for s in SPLITS),
)


@dataclass
class Dataset:
    """A dataset directory read and validated: the manifest, subareas and pairs of each split."""

    path: Path
    manifest: Manifest
    subareas: list[Subarea]
    splits: dict[str, list[Pair]]

    @property
    def axis(self) -> Axis:
        return Axis.from_dict(self.manifest.axis)

    def split(self, name: str) -> list[Pair]:
        if name not in self.splits:
            raise DataError(
                self.path / split_file(name),
                f"the dataset has no '{name}' split",
                f"use one of: {', '.join(SPLITS)}",
            )
        return self.splits[name]


def load_dataset_dir(path: str | Path, splits: Iterable[str] = SPLITS) -> Dataset:
    """Read a dataset made by `generate`; every pair must answer exactly the manifest's two poles."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise DataError(
            path, "is not an autocustom dataset (no manifest.json)", "run `autocustom generate` first"
        )
    try:
        manifest = Manifest.from_dict(read_json(path / MANIFEST))
        axis = Axis.from_dict(manifest.axis)
    except (ValueError, KeyError) as exc:
        raise DataError(path / MANIFEST, f"bad manifest: {exc}", "regenerate the dataset") from None
    subareas = read_jsonl(path / SUBAREAS, Subarea.from_dict)
    loaded = {}
    for split in splits:
        if not (path / split_file(split)).is_file():
            continue
        pairs = read_jsonl(path / split_file(split), Pair.from_dict)
        for number, pair in enumerate(pairs, start=1):
            if set(pair.answers) != set(axis.poles):
                raise DataError(
                    path / split_file(split),
                    f"pair {pair.id} answers {sorted(pair.answers)}, not the axis poles {list(axis.poles)}",
                    "fix the answers' keys or regenerate",
                    line=number,
                )
        loaded[split] = pairs
    return Dataset(path, manifest, subareas, loaded)


def read_dropped(path: str | Path) -> list[Dropped]:
    return read_jsonl(path, Dropped.from_dict)


def write_dataset_dir(
    out: Path,
    manifest: Manifest,
    subareas: Iterable[Subarea],
    pairs: Iterable[Pair],
    dropped: Iterable[Dropped],
    by_split: dict[str, list[Pair]],
) -> None:
    """Every file of a dataset, each atomically, the manifest last: its presence marks a complete dataset."""
    write_jsonl_atomic(out / SUBAREAS, subareas)
    write_jsonl_atomic(out / PAIRS, pairs)
    write_jsonl_atomic(out / DROPPED, dropped)
    for name in SPLITS:
        if name in by_split:  # a split left out stays absent (tests build such datasets)
            write_jsonl_atomic(out / split_file(name), by_split[name])
    write_json_atomic(out / MANIFEST, manifest.to_dict())


def check_output_dir(out: Path, axis: Axis) -> None:
    """Refuse an --out that is a file, another axis' dataset, or a directory of other files."""
    fix_other = "choose another --out directory"
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} is an existing file", fix_other)
    if not out.is_dir():
        return
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        try:
            existing = Axis.from_dict(Manifest.from_dict(read_json(manifest_path)).axis)
        except (ValueError, KeyError, TypeError) as exc:
            raise OutputExistsError(f"{manifest_path} is not a valid manifest ({exc})", fix_other) from None
        if existing.poles != axis.poles:
            raise OutputExistsError(
                f"{out} holds a dataset of the axis {existing.label}, not {axis.label}",
                f"{fix_other}, or rerun with --axis '{existing.label}' to resume it",
            )
        return
    stale = set(stale_temp_files(out))
    foreign = sorted(p.name for p in out.iterdir() if not _ours(p.name) and p not in stale)
    if foreign:
        raise OutputExistsError(
            f"--out {out} is a non-empty directory that is not a dataset (holds {', '.join(foreign[:3])})",
            fix_other,
        )


def _ours(name: str) -> bool:
    return name in OUTPUT_FILES or name == CALL_CACHE or name.startswith(f"{CALL_CACHE}-")


def stale_temp_files(out: Path) -> list[Path]:
    """Temporary files of an atomic write that a kill interrupted (`.pairs.jsonl.x1y2.tmp`)."""
    return [p for p in out.glob(".*.tmp") if any(p.name.startswith(f".{name}.") for name in OUTPUT_FILES)]

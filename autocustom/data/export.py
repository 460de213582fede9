"""A dataset as a Hugging Face `datasets.DatasetDict`, and exported in TRL's preference format.

TRL, axolotl, LLaMA-Factory and OpenRLHF all read `prompt/chosen/rejected`; exporting to it lets a user
train autocustom's data with the trainer they already run. The conversational form (lists of
`{role, content}` messages) is TRL's default: its trainers apply the model's chat template themselves,
as autocustom's training does. `--plain` writes the three columns as strings instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autocustom.data.io import Dataset, load_dataset_dir
from autocustom.data.schema import SPLITS
from autocustom.errors import BackendError, UsageError
from autocustom.fileio import require_new_dir, staged_dir, write_jsonl_atomic
from autocustom.layout import EXPORT_HF, split_file

FORMATS = ("trl",)


@dataclass
class ExportResult:
    out: Path
    format: str
    toward: str
    rows: dict[str, int]  # split -> rows written
    hub_repo: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "format": self.format,
            "toward": self.toward,
            "rows": self.rows,
            "datasets_dir": str(self.out / EXPORT_HF),
            "jsonl": {split: str(self.out / split_file(split)) for split in self.rows},
            "hub_repo": self.hub_repo,
        }


def load_dataset(path: str | Path):
    """The dataset directory as a `datasets.DatasetDict`: one row per pair (id, subarea, question, answers)."""
    import datasets

    dataset = load_dataset_dir(path)
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_list([pair.to_dict() for pair in pairs])
            for split, pairs in dataset.splits.items()
            if pairs
        }
    )


def preference_rows(dataset: Dataset, toward: str, *, plain: bool = False) -> dict[str, list[dict[str, Any]]]:
    """Each split's pairs as TRL preference rows: `chosen` is the `toward` pole's answer."""
    opposite = dataset.axis.opposite(toward)  # AxisError (exit 2) when `toward` is not a pole

    def row(pair) -> dict[str, Any]:
        if plain:
            prompt, chosen, rejected = pair.question, pair.answers[toward], pair.answers[opposite]
        else:
            prompt = [{"role": "user", "content": pair.question}]
            chosen = [{"role": "assistant", "content": pair.answers[toward]}]
            rejected = [{"role": "assistant", "content": pair.answers[opposite]}]
        return {
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "id": pair.id,
            "subarea": pair.subarea,
        }

    return {split: [row(p) for p in pairs] for split, pairs in dataset.splits.items() if pairs}


def export_data(
    data: str | Path,
    toward: str,
    out: str | Path,
    *,
    format: str = "trl",
    plain: bool = False,
    push_to_hub: str | None = None,
    public: bool = False,
) -> ExportResult:
    """Write `out/` (a `save_to_disk` DatasetDict in `hf/` and one JSONL per split), swapped in whole."""
    import datasets

    if format not in FORMATS:
        raise UsageError(f"unknown export format '{format}'", f"use one of: {', '.join(FORMATS)}")
    out = Path(out)
    require_new_dir(out)
    rows = preference_rows(load_dataset_dir(data), toward, plain=plain)
    exported = datasets.DatasetDict({split: datasets.Dataset.from_list(r) for split, r in rows.items()})
    with staged_dir(out) as staging:
        exported.save_to_disk(str(staging / EXPORT_HF))
        for split in SPLITS:
            if split in rows:
                write_jsonl_atomic(staging / split_file(split), rows[split])
    if push_to_hub:
        _push(exported, push_to_hub, public)
    return ExportResult(out, format, toward, {split: len(r) for split, r in rows.items()}, push_to_hub)


def _push(exported, repo: str, public: bool) -> None:
    """The real `datasets` hub path (a private repo unless `public`); offline or without a token it fails
    with one line, the files kept."""
    try:
        exported.push_to_hub(repo, private=not public)
    except Exception as exc:  # huggingface_hub raises many types (connection, auth, HTTP)
        raise BackendError(
            f"could not push to the Hugging Face Hub repo {repo} ({type(exc).__name__}); the export is on disk",
            "check the network and `huggingface-cli login` (or HF_TOKEN), then push the hf/ directory again",
        ) from None

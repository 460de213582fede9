"""The records of a dataset directory, validated on read so a bad file fails with its file and line."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Subarea:
    id: str
    name: str
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Subarea:
        _require(data, {"id": str, "name": str})
        return cls(data["id"], data["name"], str(data.get("description", "")))


@dataclass(frozen=True)
class Pair:
    """One question and one answer per pole; `answers` is keyed by pole name."""

    id: str
    subarea: str
    question: str
    answers: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pair:
        _require(data, {"id": str, "subarea": str, "question": str, "answers": dict})
        answers = data["answers"]
        if len(answers) != 2 or not all(isinstance(v, str) and v.strip() for v in answers.values()):
            raise ValueError("'answers' must map each of the two poles to a non-empty string")
        if not data["question"].strip():
            raise ValueError("'question' is empty")
        return cls(data["id"], data["subarea"], data["question"], dict(answers))


@dataclass(frozen=True)
class Dropped:
    """An item that did not make it into the dataset, and why.

    Reasons: near-duplicate, parse-failed, empty, refused, unchanged (a rewrite), duplicate-subarea,
    not-a-topic, and from the pair check content-mismatch, degenerate and wrong-lean, from the audit leak; on
    import also same-answer (docs/data-format.md).
    """

    id: str
    reason: str
    stage: str = ""
    of: str | None = None
    similarity: float | None = None
    text: str = ""
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Dropped:
        _require(data, {"id": str, "reason": str})
        return cls(**{k: data[k] for k in data if k in cls.__dataclass_fields__})


@dataclass
class Manifest:
    """What made a dataset: enough to reproduce it and to refuse mixing it with another axis."""

    axis: dict[str, str]
    backend: str
    model: str
    prompts: dict[str, str]  # template name -> sha256
    settings: dict[str, Any]
    counts: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    version: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        _require(data, {"axis": dict, "backend": str, "model": str, "prompts": dict, "settings": dict})
        return cls(**{k: data[k] for k in data if k in cls.__dataclass_fields__})


def _require(data: Any, fields: dict[str, type]) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    for name, kind in fields.items():
        if name not in data:
            raise ValueError(f"missing field '{name}'")
        if not isinstance(data[name], kind):
            raise ValueError(f"field '{name}' should be {kind.__name__}, got {type(data[name]).__name__}")

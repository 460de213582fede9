"""An axis: two opposite poles that a model can be moved between.

Parsed from "pole_a:pole_b" on the command line, or from a YAML file when the poles need
descriptions (what "formal" means for this user is not obvious to the LLM that writes the data).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from autocustom.errors import AxisError

AXIS_YAML_EXAMPLE = "poles: [{name: formal, description: ...}, {name: casual, description: ...}]"


@dataclass(frozen=True)
class Poles:
    """A target pole and its opposite, checked against their axis once (`Axis.toward`) and passed along
    from there: no later step looks the opposite up again, or can be handed a pole of another axis."""

    toward: str
    opposite: str


@dataclass(frozen=True)
class Axis:
    pole_a: str
    pole_b: str
    description_a: str = ""
    description_b: str = ""

    @property
    def poles(self) -> tuple[str, str]:
        return (self.pole_a, self.pole_b)

    def opposite(self, pole: str) -> str:
        """The other pole; raises AxisError naming the valid poles when `pole` is neither."""
        if pole == self.pole_a:
            return self.pole_b
        if pole == self.pole_b:
            return self.pole_a
        raise AxisError(
            f"'{pole}' is not a pole of the axis {self.label}",
            f"use one of: {self.pole_a}, {self.pole_b}",
        )

    def toward(self, pole: str) -> Poles:
        """`pole` as a target, with its opposite; AxisError naming the valid poles when it is neither."""
        return Poles(pole, self.opposite(pole))

    def description(self, pole: str) -> str:
        self.opposite(pole)
        return self.description_a if pole == self.pole_a else self.description_b

    @property
    def label(self) -> str:
        return f"{self.pole_a}:{self.pole_b}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Axis:
        return _validated(
            str(data["pole_a"]),
            str(data["pole_b"]),
            str(data.get("description_a", "")),
            str(data.get("description_b", "")),
            "manifest",
        )


def parse_axis(spec: str) -> Axis:
    """Parse "a:b" or a path to a YAML file (`*.yaml`/`*.yml`, or any existing file)."""
    path = Path(spec)
    if spec.endswith((".yaml", ".yml")) or path.is_file():
        return _axis_from_yaml(path)
    if ":" not in spec:
        raise AxisError(
            f"axis '{spec}' has no ':' between its two poles",
            'write it as "pole_a:pole_b", e.g. --axis "formal:casual", or pass a YAML file',
        )
    pole_a, _, pole_b = spec.partition(":")
    return _validated(pole_a.strip(), pole_b.strip(), "", "", f"--axis '{spec}'")


def _axis_from_yaml(path: Path) -> Axis:
    if not path.is_file():
        raise AxisError(f"axis file {path} does not exist", 'check the path, or pass "pole_a:pole_b"')
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise AxisError(
            f"is not UTF-8 text (byte {exc.start}: {exc.reason})", "save it as UTF-8", where=str(path)
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        where = f"{path}:{line}" if line else str(path)
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise AxisError(f"{problem}", f"write it as {AXIS_YAML_EXAMPLE}", where=where) from None
    poles = data.get("poles") if isinstance(data, dict) else None
    if not isinstance(poles, list) or len(poles) != 2:
        raise AxisError(
            "an axis file needs a 'poles' list of exactly two entries",
            f"write it as {AXIS_YAML_EXAMPLE}",
            where=str(path),
        )
    names, descriptions = [], []
    for pole in poles:
        if isinstance(pole, str):
            names.append(pole.strip())
            descriptions.append("")
        elif isinstance(pole, dict) and "name" in pole:
            names.append(str(pole["name"]).strip())
            descriptions.append(str(pole.get("description", "") or "").strip())
        else:
            raise AxisError(
                f"pole entry {pole!r} has no name", f"write it as {AXIS_YAML_EXAMPLE}", where=str(path)
            )
    return _validated(names[0], names[1], descriptions[0], descriptions[1], str(path))


def _validated(pole_a: str, pole_b: str, desc_a: str, desc_b: str, where: str) -> Axis:
    if not pole_a or not pole_b:
        raise AxisError("an axis needs two non-empty poles", 'e.g. --axis "formal:casual"', where=where)
    if pole_a.casefold() == pole_b.casefold():
        raise AxisError(
            f"both poles are '{pole_a}'",
            "name two different, opposite poles, e.g. formal:casual",
            where=where,
        )
    for pole in (pole_a, pole_b):
        if ":" in pole or "\n" in pole:
            raise AxisError(f"pole '{pole}' contains ':' or a newline", "use a short name", where=where)
    return Axis(pole_a, pole_b, desc_a, desc_b)

"""Axis parsing: "a:b" strings and YAML files, with one-line errors that name the place and the fix."""

from __future__ import annotations

import pytest

from autocustom.axis import Axis, parse_axis
from autocustom.errors import AxisError


def test_parse_string():
    axis = parse_axis(" formal : casual ")
    assert axis == Axis("formal", "casual")
    assert axis.label == "formal:casual"
    assert axis.opposite("formal") == "casual" and axis.opposite("casual") == "formal"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("formalcasual", "no ':'"),
        ("formal:Formal", "both poles"),
        (":casual", "two non-empty"),
        ("a:b:c", "':'"),
    ],
)
def test_bad_strings(spec, message):
    with pytest.raises(AxisError, match=message) as info:
        parse_axis(spec)
    assert "Fix:" in str(info.value) and "\n" not in str(info.value)


def test_yaml_file_with_descriptions(tmp_path):
    path = tmp_path / "axis.yaml"
    path.write_text("poles:\n  - {name: formal, description: as in a letter}\n  - casual\n")
    axis = parse_axis(str(path))
    assert axis.poles == ("formal", "casual")
    assert axis.description("formal") == "as in a letter" and axis.description("casual") == ""
    assert Axis.from_dict(axis.to_dict()) == axis


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = tmp_path / "axis.yaml"
    path.write_text("poles:\n  - name: formal\n  - name: [casual\n")
    with pytest.raises(AxisError) as info:
        parse_axis(str(path))
    assert str(info.value).startswith(f"{path}:") and "Fix:" in str(info.value)


@pytest.mark.parametrize(
    "text", ["poles: [only-one]\n", "other: 1\n", "poles:\n  - {description: x}\n  - b\n"]
)
def test_yaml_without_two_named_poles(tmp_path, text):
    path = tmp_path / "axis.yml"
    path.write_text(text)
    with pytest.raises(AxisError, match="Fix:"):
        parse_axis(str(path))


def test_missing_yaml_file(tmp_path):
    with pytest.raises(AxisError, match="does not exist"):
        parse_axis(str(tmp_path / "nope.yaml"))


def test_opposite_of_an_unknown_pole():
    with pytest.raises(AxisError, match="use one of: formal, casual"):
        Axis("formal", "casual").opposite("polite")

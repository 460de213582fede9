"""Prompt templates: the packaged files load, declare exactly what they use, and render."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from autocustom.errors import DataError, UsageError
from autocustom.prompts import load_prompt, parse_template, prompts_dir

GENERATE_PROMPTS = {
    "subareas": {"pole_a", "pole_b", "count", "poles_note", "avoid"},
    "questions": {"pole_a", "pole_b", "subarea", "count", "poles_note", "avoid"},
    "answers": {"pole", "question", "words", "pole_note"},
    "rewrite": {"pole", "source_pole", "question", "answer", "words", "pole_note"},
}


@pytest.mark.parametrize("name", sorted(GENERATE_PROMPTS))
def test_generate_prompts_load_and_render(name):
    template = load_prompt(name)
    assert set(template.variables) == GENERATE_PROMPTS[name]
    path = prompts_dir() / f"{name}.md"
    assert template.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    values = {variable: f"<{variable}>" for variable in template.variables}
    messages = template.render(**values)
    assert messages[-1]["role"] == "user"
    text = "".join(m["content"] for m in messages)
    assert "{{" not in text
    for variable in template.variables:
        assert f"<{variable}>" in text


def test_render_rejects_missing_and_unknown_variables():
    template = load_prompt("answers")
    with pytest.raises(UsageError, match="declares"):
        template.render(pole="formal", question="q?", words=50)
    with pytest.raises(UsageError, match="declares"):
        template.render(pole="formal", question="q?", words=50, pole_note="", extra="x")


def test_placeholders_must_match_the_declared_variables(tmp_path):
    source = tmp_path / "x.md"
    with pytest.raises(DataError, match="declared variables"):
        parse_template("x", "---\nvariables: [a]\n---\nHello {{a}} and {{b}}\n", source)
    with pytest.raises(DataError, match="header"):
        parse_template("x", "no header here {{a}}\n", source)
    template = parse_template(
        "x", '---\nvariables: [a]\nsystem: be {{a}}\n---\nJSON: {"k": 1} {{ a }}\n', source
    )
    assert template.render(a="brief") == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": 'JSON: {"k": 1} brief'},
    ]


def test_unknown_prompt_name():
    with pytest.raises(UsageError, match="no prompt template"):
        load_prompt("no-such-prompt")


def test_prompts_dir_is_the_source_tree_in_an_editable_install():
    assert prompts_dir() == Path(__file__).resolve().parents[1] / "prompts"

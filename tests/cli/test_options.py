"""`autocustom train`'s options are TrainConfig's fields: same names, defaults and help, parsed into a config."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from autocustom.cli import app
from autocustom.train.config import TrainConfig

COMMAND_ONLY = {"json_output", "quiet", "verbose"}
REQUIRED = {"data", "toward", "out"}
LISTS = {"reg_subjects", "lora_targets"}


def train_params() -> dict[str, Any]:
    """The click parameters of `train`, by name (typer vendors click: they are not `click` objects)."""
    train = typer.main.get_command(app).commands["train"]
    return {param.name: param for param in train.params}


def test_every_train_option_is_a_config_field_with_its_name_default_and_help():
    params = train_params()
    fields = {field.name: field for field in dataclasses.fields(TrainConfig)}
    assert set(params) == set(fields) | COMMAND_ONLY
    assert {name for name, field in fields.items() if field.metadata.get("required")} == REQUIRED
    for name, field in fields.items():
        param = params[name]
        spelling = field.metadata.get("flag", "--" + name.replace("_", "-"))
        assert "/".join([*param.opts, *param.secondary_opts]) == spelling, name
        assert param.help == field.metadata["help"] and param.help, name
        assert param.required == (name in REQUIRED), name
        if name not in REQUIRED:
            default = ",".join(field.default) if name in LISTS and field.default else field.default
            assert param.default == default and param.show_default, name


def test_train_help_renders():
    """Field help is rich markup on the CLI: a stray `[/x]` in it breaks `train --help`."""
    result = CliRunner().invoke(app, ["train", "--help"])
    assert result.exit_code == 0, result.output
    assert "--reg-subjects" in result.output and "smollm2-135m" in result.output


@pytest.fixture
def captured(monkeypatch) -> list[TrainConfig]:
    """`train` records its config instead of loading a model."""
    configs: list[TrainConfig] = []

    def fake_train(config: TrainConfig, *, progress) -> SimpleNamespace:
        configs.append(config)
        return SimpleNamespace(to_dict=lambda: {"captured": True})

    monkeypatch.setattr("autocustom.train.trainer.train", fake_train)
    return configs


REQUIRED_ARGS = ["--data", "d", "--toward", "formal", "--out", "o"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], {}),
        (
            ["--reg-subjects", "a, b", "--lora-targets", "q_proj,,v_proj"],
            {"reg_subjects": ["a", "b"], "lora_targets": ["q_proj", "v_proj"]},
        ),
        (["--full"], {"lora": False}),
        (
            ["--lora", "--resume", "--max-steps", "7", "--lr", "1e-3"],
            {"lora": True, "resume": True, "max_steps": 7, "lr": 1e-3},
        ),
    ],
)
def test_options_parse_into_train_config(captured, args, expected):
    result = CliRunner().invoke(app, ["train", *REQUIRED_ARGS, *args, "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"captured": True}
    assert captured == [TrainConfig(data="d", toward="formal", out="o", **expected)]


def test_a_required_option_missing_is_a_usage_error(captured):
    result = CliRunner().invoke(app, ["train", "--data", "d", "--out", "o"])
    assert result.exit_code == 2 and "--toward" in result.output
    assert captured == []

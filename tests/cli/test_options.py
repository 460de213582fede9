"""Command options that are config fields (train, shift-score, compare, selectivity, compose,
export-composition): same names, defaults
and help; fields marked `cli: False` are the library's only."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from autocustom.cli import app
from autocustom.comparison.compose import ComposeConfig
from autocustom.comparison.compose_export import ComposeExportConfig
from autocustom.comparison.selectivity import SelectivityConfig
from autocustom.comparison.study import CompareConfig
from autocustom.scoring.shift_score import ScoreConfig
from autocustom.training.config import TrainConfig

# command -> (its config, its own options, the required fields, the list fields)
CONFIG_COMMANDS = {
    "train": (TrainConfig, {"json_output", "quiet", "verbose"}, {"data", "toward", "out"}),
    "shift-score": (ScoreConfig, {"out", "json_output", "verbose"}, {"model", "data"}),
    "compare": (CompareConfig, {"markdown", "json_output", "quiet", "verbose"}, {"data", "toward", "out"}),
    "selectivity": (SelectivityConfig, {"json_output", "quiet", "verbose"}, {"runs", "data", "out"}),
    "compose": (ComposeConfig, {"run", "json_output", "quiet", "verbose"}, {"data", "out"}),
    "export-composition": (ComposeExportConfig, {"json_output", "quiet", "verbose"}, {"compose", "out"}),
}


def command_params(command: str) -> dict[str, Any]:
    """The click parameters of a command, by name (typer vendors click: they are not `click` objects)."""
    click_command = typer.main.get_command(app).commands[command]
    return {param.name: param for param in click_command.params}


def option_default(field: dataclasses.Field[Any]) -> Any:
    """What the option shows as its default: the field's, lists as the comma-separated text."""
    default = field.default_factory() if field.default is dataclasses.MISSING else field.default
    return ",".join(map(str, default)) if isinstance(default, list) else default


@pytest.mark.parametrize("command", CONFIG_COMMANDS)
def test_every_config_option_is_a_field_with_its_name_default_and_help(command):
    config, own, required = CONFIG_COMMANDS[command]
    params = command_params(command)
    fields = {field.name: field for field in dataclasses.fields(config) if field.metadata.get("cli", True)}
    assert set(params) == set(fields) | own and not set(fields) & own
    assert {name for name, field in fields.items() if field.metadata.get("required")} == required
    for name, field in fields.items():
        param = params[name]
        spelling = field.metadata.get("flag", "--" + name.replace("_", "-"))
        assert "/".join([*param.opts, *param.secondary_opts]) == spelling, name
        assert param.help == field.metadata["help"] and param.help, name
        assert param.required == (name in required), name
        if name not in required:
            assert param.default == option_default(field) and param.show_default, name


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

    monkeypatch.setattr("autocustom.training.trainer.train", fake_train)
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


@pytest.fixture
def compared(monkeypatch) -> list[CompareConfig]:
    """`compare` records its config instead of training and scoring."""
    configs: list[CompareConfig] = []

    def fake_compare(config: CompareConfig, *, progress) -> SimpleNamespace:
        configs.append(config)
        return SimpleNamespace(to_dict=lambda: {"captured": True})

    monkeypatch.setattr("autocustom.comparison.study.compare", fake_compare)
    return configs


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], {}),
        (
            ["--models", "a, b", "--methods", "base,,dpo", "--padding", "8, 16"],
            {"models": ["a", "b"], "methods": ["base", "dpo"], "padding": [8, 16]},
        ),
        (
            ["--padding", "", "--no-adversarial", "--judge", "local"],
            {"padding": [], "adversarial": False, "judge": "local"},
        ),
        (["--models", ""], {"models": []}),  # compare() itself refuses no models
    ],
)
def test_compare_list_options_parse_into_compare_config(compared, args, expected):
    result = CliRunner().invoke(app, ["compare", *REQUIRED_ARGS, *args, "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"captured": True}
    assert compared == [CompareConfig(data="d", toward="formal", out="o", **expected)]


def test_a_non_positive_padding_exits_2_with_one_line(compared):
    result = CliRunner().invoke(app, ["compare", *REQUIRED_ARGS, "--padding", "64, 0"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "error: --padding '64,0' needs positive token counts; e.g. --padding 64,256"
    ]
    assert compared == []


def test_a_padding_that_is_not_integers_is_a_usage_error(compared):
    result = CliRunner().invoke(app, ["compare", *REQUIRED_ARGS, "--padding", "64,1.5"])
    assert result.exit_code == 2 and "--padding" in result.output and "integers" in result.output
    assert compared == []

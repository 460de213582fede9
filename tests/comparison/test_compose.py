"""`compose`: several runs in one model. At scales (1, 0) the composition is the first run alone and
at (0, 0) the base, to 1e-6, for LoRA, full fine-tuning and steering vectors; the grid is measured,
resumed, compared part by part with each part alone, and a scale vector recommended; bad input is one
line, exit 2."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from typer.testing import CliRunner

from autocustom.cli import app
from autocustom.comparison.compose import ComposeConfig, compose, grid_points
from autocustom.comparison.composed_model import open_composition, read_part
from autocustom.layout import COMPOSE_RESULT, COMPOSE_TABLE, STEER_VECTOR
from autocustom.llm.models import load_model
from autocustom.steering.vector import Steered, SteeringVector
from tests.conftest import RUN_SIZES as SIZES
from tests.sample_dataset import OPTIMISTIC_PESSIMISTIC, write_small_dataset
from tests.training import SMALL

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def optimism_data(tmp_path_factory):
    return write_small_dataset(
        tmp_path_factory.mktemp("optimism"), per_subarea=3, axis=OPTIMISTIC_PESSIMISTIC
    )


def _optimism_run(out, data, model, lora: bool):
    from autocustom.training.config import TrainConfig
    from autocustom.training.trainer import train

    settings = {**SMALL, "toward": "optimistic"}
    train(
        TrainConfig(
            data=str(data), out=str(out), model=str(model), max_steps=3, eval_steps=3, lora=lora, **settings
        )
    )
    return out


@pytest.fixture(scope="module")
def optimism_lora(tmp_path_factory, optimism_data, tiny_model_dir):
    return _optimism_run(tmp_path_factory.mktemp("runs") / "opt-lora", optimism_data, tiny_model_dir, True)


@pytest.fixture(scope="module")
def optimism_full(tmp_path_factory, optimism_data, tiny_model_dir):
    return _optimism_run(tmp_path_factory.mktemp("runs") / "opt-full", optimism_data, tiny_model_dir, False)


def _vector(path, axis: str, toward: str, model, seed: int):
    """A steering directory with a random direction on layers 0 and 1 (what `steer` writes, by hand)."""
    generator = torch.Generator().manual_seed(seed)
    directions = {layer: torch.randn(64, generator=generator) for layer in (0, 1)}
    metadata = {"axis": axis, "toward": toward, "model": str(model)}
    path.mkdir(parents=True)
    SteeringVector(directions, (0, 1), 0.5, metadata).save(path / STEER_VECTOR)
    return path


def _logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer(["How do I store bread for a week?"], return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits.float()


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return float((a - b).abs().max()) <= 1e-6


@pytest.mark.parametrize("kind", ["lora", "full", "steering"])
def test_one_part_at_1_is_that_run_alone_and_all_at_0_the_base(
    kind, request, tmp_path, tiny_model_dir, lora_run, full_run, optimism_lora, optimism_full
):
    if kind == "steering":
        first = _vector(tmp_path / "formal", "formal:casual", "formal", tiny_model_dir, 0)
        second = _vector(tmp_path / "optimism", "optimistic:pessimistic", "optimistic", tiny_model_dir, 1)
    else:
        first, second = (lora_run, optimism_lora) if kind == "lora" else (full_run, optimism_full)
    composition = open_composition([read_part(str(first)), read_part(str(second))], CPU)
    base = load_model(str(tiny_model_dir), device=CPU)
    if kind == "steering":
        alone = Steered(base.model, SteeringVector.load(first / STEER_VECTOR))
    else:
        alone = load_model(str(first), device=CPU).model

    assert not _close(_logits(alone, base.tokenizer), _logits(base.model, base.tokenizer))  # it moved
    composition.set_scales((1.0, 0.0))
    assert _close(_logits(composition.model, composition.tokenizer), _logits(alone, base.tokenizer))
    composition.set_scales((0.0, 0.0))
    assert _close(_logits(composition.model, composition.tokenizer), _logits(base.model, base.tokenizer))
    assert _close(_logits(composition.base, composition.tokenizer), _logits(base.model, base.tokenizer))
    composition.set_scales((1.0, 1.0))  # both together: neither alone
    both = _logits(composition.model, composition.tokenizer)
    assert not _close(both, _logits(alone, base.tokenizer)) and not _close(
        both, _logits(base.model, base.tokenizer)
    )


@pytest.fixture(scope="module")
def composed(tmp_path_factory, lora_run, optimism_lora, small_dataset, optimism_data):
    config = ComposeConfig(
        runs=[f"{lora_run}=1", f"{optimism_lora}=0.5"],
        data=[str(small_dataset), str(optimism_data)],
        out=str(tmp_path_factory.mktemp("compose") / "out"),
        grid=[0.0, 1.0],
        **SIZES,
    )
    return compose(config), config


def test_the_grid_is_measured_resumed_compared_and_a_point_recommended(composed):
    result, config = composed
    scales = [p.scales for p in result.points]
    assert scales == grid_points([0.0, 1.0], (1.0, 0.5))
    assert set(scales) == {(0, 0), (0, 1), (1, 0), (1, 1), (1, 0.5), (0, 0.5)}
    base = next(p for p in result.points if p.scales == (0.0, 0.0))
    assert base.shift("formal:casual").value == pytest.approx(0.0, abs=1e-6)
    assert base.whole("drift").value == pytest.approx(0.0, abs=1e-6)

    [formal, optimism] = result.interference
    alone = next(p for p in result.points if p.scales == (1.0, 0.0))
    assert formal["alone"]["value"] == pytest.approx(alone.shift("formal:casual").value)
    assert formal["difference"]["n"] == formal["composed"]["n"] and "composed - alone" in formal["finding"]
    assert optimism["scale"] == 0.5 and optimism["axis"] == "optimistic:pessimistic"
    assert "reason" in result.recommendation

    data = json.loads((result.out / COMPOSE_RESULT).read_text())
    assert [p["kind"] for p in data["parts"]] == ["lora", "lora"] and len(data["points"]) == 6
    table = (result.out / COMPOSE_TABLE).read_text()
    assert "| 1x0.5 |" in table and "Recommended scales" in table

    again = compose(config)  # resumed: every point read back, the same figures
    assert again.reused == 6 and again.to_dict()["points"] == data["points"]


def _export(result, out, *options: str):
    return CliRunner().invoke(
        app, ["export-composition", "--compose", str(result.out), "--out", str(out), *options]
    )


def test_a_composition_exports_as_one_plain_model_with_compose_s_margins(composed, tmp_path):
    result, _config = composed
    out = tmp_path / "export"
    exported = _export(result, out, "--scales", "1,0.5", "--json")
    assert exported.exit_code == 0, exported.output
    record = json.loads(exported.stdout)
    assert [c["name"] for c in record["checks"]] == [
        "formal:casual margins equal compose's",
        "optimistic:pessimistic margins equal compose's",
    ]
    assert record["passed"] and all(c["value"] <= 1e-4 for c in record["checks"])
    assert not (out / "adapter_config.json").exists() and (out / "README.md").is_file()
    assert "at s = 0.5" in (out / "README.md").read_text()

    unmeasured = _export(result, tmp_path / "x", "--scales", "0.5,0.5")
    assert unmeasured.exit_code == 2 and "has not measured the scales 0.5x0.5" in unmeasured.output
    unknown = _export(result, tmp_path / "y", "--format", "zip")
    assert unknown.exit_code == 2 and "--format zip is not one of hf, gguf, adapters" in unknown.output


def _refused(args: list[str], tmp_path) -> str:
    result = CliRunner().invoke(app, ["compose", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()
    return result.output


def test_bad_compositions_are_one_line_exit_2(
    tmp_path, lora_run, full_run, optimism_lora, small_dataset, optimism_data
):
    data = ["--data", f"{small_dataset},{optimism_data}"]
    assert "at least two runs" in _refused(["--run", str(lora_run), *data], tmp_path)
    assert "negative" in _refused(["--run", f"{lora_run}=-1", "--run", str(optimism_lora), *data], tmp_path)
    assert "both of the axis" in _refused(["--run", str(lora_run), "--run", str(full_run), *data], tmp_path)
    other_base = tmp_path / "other-base"
    shutil.copytree(optimism_lora, other_base)
    record = json.loads((other_base / "run_config.json").read_text())
    (other_base / "run_config.json").write_text(json.dumps({**record, "model": "another-model"}))
    assert "different base models" in _refused(
        ["--run", str(lora_run), "--run", str(other_base), *data], tmp_path
    )


@pytest.mark.slow
def test_the_adapters_ship_side_by_side_and_each_replies_in_llama_cpp(composed, tmp_path, llama_cpp_dir):
    from tests.llama_server import server_python

    result, _config = composed
    out = tmp_path / "adapters"
    llama = ("--llama-cpp", str(llama_cpp_dir), "--llama-python", str(server_python()))
    exported = _export(result, out, "--format", "adapters", "--json", *llama)
    assert exported.exit_code == 0, exported.output
    record = json.loads(exported.stdout)
    assert record["passed"] and [c["name"] for c in record["checks"]] == [
        "adapter 0 replies in llama.cpp at scale 1",
        "adapter 1 replies in llama.cpp at scale 0.5",
    ]
    adapters = json.loads((out / "adapters.json").read_text())
    assert (out / adapters["base"]).is_file() and all(
        (out / a["file"]).is_file() for a in adapters["adapters"]
    )
    measured = [[m["scale"] for m in a["measured_alone"]] for a in adapters["adapters"]]
    assert measured == [[0.0, 1.0], [0.0, 0.5, 1.0]]  # the grid, and the asked point's 0.5 alone
    assert [a["safe_scales"] for a in adapters["adapters"]] == measured  # no budget was set
    server, request = record["usage"]
    assert server.count("--lora ") == 2 and "--lora-init-without-apply" in server
    assert '"lora": [{"id": 0, "scale": 1.0}, {"id": 1, "scale": 0.5}]' in request


@pytest.mark.slow
def test_the_merged_composition_converts_to_gguf(composed, tmp_path, llama_cpp_dir):
    result, _config = composed
    out = tmp_path / "gguf"
    options = (
        "--scales",
        "1,0.5",
        "--format",
        "gguf",
        "--ollama",
        "--llama-cpp",
        str(llama_cpp_dir),
        "--json",
    )
    exported = _export(result, out, *options)
    assert exported.exit_code == 0, exported.output
    record = json.loads(exported.stdout)
    assert record["passed"] and record["checks"][-1]["name"] == "gguf f16 log-probs correlate"
    assert (out / "model-f16.gguf").is_file() and "llama-cli -m gguf/model-f16.gguf" in record["usage"]
    assert "FROM ./model-f16.gguf" in (out / "Modelfile").read_text()

"""The memory plan: exact parameter counts from a config, the parts each option changes, the refusal."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from autocustom.cli import app
from autocustom.errors import UsageError
from autocustom.training import memory, sharding
from autocustom.training.config import TrainConfig
from autocustom.training.memory import Workload, model_shape, plan_memory
from tests.sample_dataset import write_small_dataset
from tests.training import SMALL

CONFIG = LlamaConfig(
    vocab_size=1000,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=True,
)
WORK = Workload(rows=12, width=256, scored=800, eval_positions=16 * 256)


def test_the_shape_counts_what_the_real_model_holds():
    shape = model_shape(CONFIG, lora_rank=8)
    real = LlamaForCausalLM(CONFIG)
    assert shape.parameters == sum(p.numel() for p in real.parameters())  # tied head counted once
    linears = [m for n, m in real.model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert shape.quantizable == sum(m.weight.numel() for m in linears)
    assert shape.lora_parameters == sum(8 * (m.in_features + m.out_features) for m in linears)
    only_q = model_shape(CONFIG, lora_rank=8, lora_targets=["q_proj"])
    assert only_q.lora_parameters == 2 * 8 * (64 + 64)


def test_each_option_changes_the_part_it_should():
    shape = model_shape(CONFIG)
    full = plan_memory(shape, WORK, lora=False, device="cuda", compute_bytes=2)
    lora = plan_memory(shape, WORK, lora=True, device="cuda", compute_bytes=2)
    wide = model_shape(
        LlamaConfig(vocab_size=128, hidden_size=256, intermediate_size=512, num_hidden_layers=2)
    )
    qlora = plan_memory(wide, WORK, lora=True, device="cuda", compute_bytes=2, quantized_bits=4)
    stored = plan_memory(shape, WORK, lora=True, device="cuda", compute_bytes=2, checkpointing=False)
    assert full.parts["reference"] == shape.parameters * 2 and lora.parts["reference"] == 0
    assert (
        full.parts["optimizer"] == shape.parameters * 8
        and lora.parts["optimizer"] == shape.lora_parameters * 8
    )
    assert full.parts["weights"] == shape.parameters * 4  # float32 master weights
    bf16 = plan_memory(wide, WORK, lora=True, device="cuda", compute_bytes=2)
    assert qlora.parts["weights"] < bf16.parts["weights"] / 2  # the linear layers dominate this model
    assert stored.parts["activations"] > lora.parts["activations"]
    assert plan_memory(shape, WORK, lora=True, device="cpu", compute_bytes=4, available=1).fits is False


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_small_dataset(tmp_path_factory.mktemp("data"), per_subarea=3)


def test_a_plan_that_does_not_fit_names_the_options_that_would(dataset, tiny_model_dir, tmp_path):
    base = TrainConfig(data=str(dataset), out=str(tmp_path), model=str(tiny_model_dir), **SMALL)
    long_rows = replace(base, max_length=4096, gradient_checkpointing=False, lora=False)
    shape = model_shape(CONFIG)
    checkpointed = memory._plan_for(
        replace(long_rows, gradient_checkpointing=True), shape, None, torch.device("cpu"), None
    )
    assert checkpointed.total < memory._plan_for(long_rows, shape, None, torch.device("cpu"), None).total
    changes = memory.fitting_changes(long_rows, shape, None, torch.device("cpu"), checkpointed.total)
    assert changes[0] == "--gradient-checkpointing" and "--lora --load-in-4bit" not in changes  # CPU


@pytest.mark.parametrize(("available_share", "checkpointed"), [(0.4, False), (0.6, True), (None, True)])
def test_checkpointing_by_default_only_where_memory_asks_for_it(
    monkeypatch, dataset, tiny_model_dir, tmp_path, available_share, checkpointed
):
    config = TrainConfig(data=str(dataset), out=str(tmp_path), model=str(tiny_model_dir), **SMALL)
    without = memory.plan_training(replace(config, gradient_checkpointing=False)).total
    free = None if available_share is None else int(without / available_share)
    monkeypatch.setattr(memory, "available_bytes", lambda device: free)
    plan = memory.plan_training(config)  # gradient_checkpointing None: auto
    assert plan.options["gradient_checkpointing"] is checkpointed
    assert (
        memory.plan_training(replace(config, gradient_checkpointing=False)).options["gradient_checkpointing"]
        is False
    )  # an explicit choice stands


def _train_args(dataset: Path, model: Path, out: Path) -> list[str]:
    return ["train", "--data", str(dataset), "--toward", "formal", "--out", str(out), "--model", str(model)]


def test_dry_run_prints_the_plan_and_writes_nothing(dataset, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [*_train_args(dataset, tiny_model_dir, out), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert set(plan["parts_gib"]) == {
        "weights", "gradients", "optimizer", "reference", "activations", "evaluation", "runtime",
    }  # fmt: skip
    assert plan["fits"] is True and not out.exists()


def test_train_refuses_a_run_that_cannot_fit_before_writing(monkeypatch, dataset, tiny_model_dir, tmp_path):
    monkeypatch.setattr(memory, "available_bytes", lambda device: 1)
    out = tmp_path / "run"
    dry = CliRunner().invoke(app, [*_train_args(dataset, tiny_model_dir, out), "--dry-run"])
    assert dry.exit_code == 1 and "does NOT fit" in dry.output
    result = CliRunner().invoke(app, _train_args(dataset, tiny_model_dir, out))
    assert result.exit_code == 2 and "train --dry-run shows the plan" in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--load-in-4bit"], "needs a CUDA GPU"),
        (["--load-in-8bit", "--full"], "--full cannot train a quantized"),
    ],
)
def test_quantized_loading_is_refused_where_it_cannot_work(dataset, tiny_model_dir, tmp_path, flags, says):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [*_train_args(dataset, tiny_model_dir, out), "--device", "cpu", *flags])
    assert result.exit_code == 2 and says in result.output
    assert not out.exists()


def test_a_model_whose_config_cannot_be_read_exits_2_before_anything(dataset, tmp_path):
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    result = CliRunner().invoke(app, [*_train_args(dataset, empty, tmp_path / "run"), "--dry-run"])
    assert result.exit_code == 2 and "cannot load model" in result.output
    assert "Traceback" not in result.output


def test_a_sharded_plan_splits_the_training_state_and_counts_the_load_where_it_happens():
    """FSDP and ZeRO-3 keep 1/N of weights, gradients, AdamW and the reference. Under FSDP every rank
    loads them whole first, in host RAM (not on a GPU); ZeRO-3 builds them partitioned; ZeRO-2 keeps
    them whole. A LoRA base loads as full fine-tuning's models do."""
    shape = memory.ModelShape(8 * 10**9, 7 * 10**9, 4 * 10**7, 32, 4096, 4096, 14336, 128256)  # 8B
    light = Workload(rows=1, width=1, scored=1, eval_positions=1)  # the weights dominate: loading shows
    whole = plan_memory(shape, light, lora=False, device="cuda", compute_bytes=2)
    fsdp = sharding.Sharding.fsdp(8)
    sharded = plan_memory(shape, light, lora=False, device="cuda", compute_bytes=2, sharding=fsdp)
    for part in (*sharding.SHARDED_PARTS, "reference"):
        assert sharded.parts[part] == -(-whole.parts[part] // 8)
    assert sharded.parts["loading"] == 0 and "fsdp over 8 processes" in sharded.table()
    lora = plan_memory(shape, light, lora=True, device="cuda", compute_bytes=2, sharding=fsdp)
    assert lora.parts["loading"] == 0  # a LoRA base loads on the host too; the GPU only holds its shard
    lora_cpu = plan_memory(shape, light, lora=True, device="cpu", compute_bytes=4, sharding=fsdp)
    assert lora_cpu.parts["loading"] > 0  # where the host is the device, its whole load counts
    qlora = plan_memory(
        shape, light, lora=True, device="cuda", compute_bytes=2, quantized_bits=4, sharding=fsdp
    )
    alone = plan_memory(shape, light, lora=True, device="cuda", compute_bytes=2, quantized_bits=4)
    assert qlora.parts["weights"] == alone.parts["weights"]  # accelerate leaves packed 4-bit weights whole
    on_cpu = plan_memory(shape, light, lora=False, device="cpu", compute_bytes=4, sharding=fsdp)
    whole_cpu = plan_memory(shape, light, lora=False, device="cpu", compute_bytes=4)
    at_load = sum(whole_cpu.parts[p] for p in ("weights", "reference", "runtime"))
    assert on_cpu.total == max(at_load, on_cpu.total - on_cpu.parts["loading"])  # the host is the device
    zero3 = sharding.Sharding.zero(3, 8)
    deepspeed = plan_memory(shape, light, lora=False, device="cuda", compute_bytes=2, sharding=zero3)
    buffers = deepspeed.parts.pop("buffers")
    assert deepspeed.parts == sharded.parts  # partitioned as FSDP shards, and never whole on the GPU
    gathered = sharding.DEEPSPEED_MAX_LIVE * 2 * 2  # 1e9 live bf16 weights, the policy's and the reference's
    assert buffers == sharding.DEEPSPEED_REDUCE_BUCKET * 2 + shape.parameters * 2 // 8 + gathered
    zero3_cpu = plan_memory(shape, light, lora=False, device="cpu", compute_bytes=4, sharding=zero3)
    assert zero3_cpu.parts["loading"] == 0 < on_cpu.parts["loading"]
    zero3_lora = plan_memory(shape, light, lora=True, device="cuda", compute_bytes=2, sharding=zero3)
    assert zero3_lora.parts["loading"] == 0  # built partitioned, as full fine-tuning's models are
    zero2 = sharding.Sharding.zero(2, 8)
    stage2 = plan_memory(shape, light, lora=False, device="cuda", compute_bytes=2, sharding=zero2)
    assert (
        stage2.parts["weights"] == whole.parts["weights"]
        and stage2.parts["reference"] == whole.parts["reference"]
    )
    assert stage2.parts["loading"] == 0  # what it loads stays whole: nothing beyond the run's own parts
    assert sharded.total < stage2.total < whole.total


@pytest.mark.parametrize(
    ("env", "strategy", "parts"),
    [
        ({}, None, None),
        ({"ACCELERATE_USE_FSDP": "true"}, "fsdp", sharding.FULLY_SHARDED),
        (
            {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"},
            "deepspeed-zero3",
            sharding.FULLY_SHARDED,
        ),
        (
            {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"},
            "deepspeed-zero2",
            ("gradients", "optimizer"),
        ),
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, None, None),  # stage unknown: planned unsharded
    ],
)
def test_the_sharding_is_read_from_the_launchers_environment(monkeypatch, env, strategy, parts):
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "4")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    found = sharding.launched_sharding()
    assert (found and found.strategy, found and found.parts) == (strategy, parts)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert sharding.launched_sharding() is None  # one process shards nothing


LAUNCH_VARIABLES = (
    "ACCELERATE_USE_FSDP",
    "ACCELERATE_USE_DEEPSPEED",
    "ACCELERATE_DEEPSPEED_ZERO_STAGE",
    "ACCELERATE_DEEPSPEED_CONFIG_FILE",
    "FSDP_ACTIVATION_CHECKPOINTING",
)


@pytest.mark.parametrize(("bucket", "elements"), [(10**6, 10**6), ("auto", 4096**2), (None, 5 * 10**8)])
@pytest.mark.parametrize(("live", "gathered"), [(None, 10**9), (0, 7 * 10**9 // 32), (10**12, 8 * 10**9)])
def test_zero3_plans_deepspeeds_buffers_as_its_json_config_sets_them(
    monkeypatch, tmp_path, bucket, elements, live, gathered
):
    """A GPU holds the whole bucket; "auto" is hidden squared, as transformers fills it; absent, DeepSpeed's
    default (what accelerate's YAML configs give). On the host only the pages it fills count. Gathered
    weights: up to `stage3_max_live_parameters`, at least one layer, at most the model."""
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    zero: dict = {"stage": 3} if bucket is None else {"stage": 3, "reduce_bucket_size": bucket}
    if live is not None:
        zero["stage3_max_live_parameters"] = live
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": zero}))
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(config))
    shape = memory.ModelShape(8 * 10**9, 7 * 10**9, 4 * 10**7, 32, 4096, 4096, 14336, 128256)
    light = Workload(rows=1, width=1, scored=1, eval_positions=1)
    zero3 = sharding.launched_sharding()
    gpu = plan_memory(shape, light, lora=False, device="cuda", compute_bytes=2, sharding=zero3)
    assert gpu.parts["buffers"] == elements * 2 + shape.parameters * 2 // 8 + gathered * 2 * 2
    lora = plan_memory(shape, light, lora=True, device="cpu", compute_bytes=4, sharding=zero3)
    bucket_bytes = min(elements, shape.lora_parameters) * 4
    assert lora.parts["buffers"] == bucket_bytes + shape.lora_parameters * 4 // 8 + gathered * 4


def test_the_zero_stage_of_a_deepspeed_json_config_is_read(monkeypatch, tmp_path):
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "ds.json"
    config.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(config))
    assert sharding.launched_sharding().strategy == "deepspeed-zero3"


def test_fsdp_activation_checkpointing_counts_and_turns_the_trainers_off(
    monkeypatch, dataset, tiny_model_dir, tmp_path
):
    """fsdp.yaml checkpoints each layer itself: the plan counts checkpointed activations, the Trainer's
    own checkpointing resolves to off (the Trainer refuses both), and asking for both is exit 2."""
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    config = TrainConfig(data=str(dataset), out=str(tmp_path), model=str(tiny_model_dir), **SMALL)
    unsharded = memory.plan_training(replace(config, gradient_checkpointing=False), None, torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_ACTIVATION_CHECKPOINTING", "true")
    plan = memory.plan_training(config, None, torch.device("cpu"))
    assert plan.options["gradient_checkpointing"] is False
    assert plan.options["sharding"]["activation_checkpointing"] is True
    assert plan.parts["activations"] < unsharded.parts["activations"]
    with pytest.raises(UsageError, match="--no-gradient-checkpointing"):
        memory.plan_training(replace(config, gradient_checkpointing=True), None, torch.device("cpu"))


def test_on_policy_sampling_is_planned_where_it_exceeds_the_step():
    shape = model_shape(CONFIG)
    offline = plan_memory(shape, WORK, lora=True, device="cuda", compute_bytes=2)
    sampling = replace(WORK, sampled_rows=64, sampled_width=2048)
    online = plan_memory(shape, sampling, lora=True, device="cuda", compute_bytes=2)
    assert "sampling" not in offline.parts
    kv_cache = 64 * 2048 * shape.layers * 2 * shape.attention_width * 2  # keys and values, bf16
    logits = 64 * shape.vocab * 4 * 2
    step_or_evaluation = offline.parts["activations"] + offline.parts["evaluation"]
    assert online.parts["sampling"] == kv_cache + logits - step_or_evaluation > 0  # the peak is sampling's
    assert online.total - offline.total == online.parts["sampling"]
    config = TrainConfig(data="d", out="o", toward="formal", on_policy=True, samples=4, batch_size=2)
    work = memory.workload_for(config, None)
    assert work.sampled_rows == 8 and work.sampled_width == config.max_length + config.sample_tokens
    assert work.rows == 8 + config.reg_batch_size  # up to two pairs per question, and the regulariser

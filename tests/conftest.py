"""Shared fixtures: a tiny random model (every code path in milliseconds) and a scripted backend."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the hub; fail fast instead of hanging

from autocustom.llm.base import GenerationParams
from autocustom.llm.chat import Conversation


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The packaged SmolLM2-135M-Instruct as a plain model directory (converted once per machine)."""
    from autocustom.llm.models import materialize_packaged

    return materialize_packaged("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm2_dir) -> Path:
    """A 2-layer, width-64 random Llama with SmolLM2's tokenizer and chat template, saved to disk."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


RUN_SIZES = {"mmlu_questions": 4, "drift_texts": 2, "bootstrap": 100}  # measurement sizes of `full_run` tests


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """The small formal:casual dataset of tests.sample_dataset, three pairs per subarea."""
    from tests.sample_dataset import write_small_dataset

    return write_small_dataset(tmp_path_factory.mktemp("runs-data"), per_subarea=3)


def _trained(out: Path, dataset: Path, model: Path, lora: bool) -> Path:
    from autocustom.training.config import TrainConfig
    from autocustom.training.trainer import train
    from tests.training import SMALL

    train(
        TrainConfig(
            data=str(dataset), out=str(out), model=str(model), max_steps=3, eval_steps=3, lora=lora, **SMALL
        )
    )
    return out


@pytest.fixture(scope="session")
def full_run(tmp_path_factory, small_dataset, tiny_model_dir) -> Path:
    """A 3-step full fine-tuning run of the tiny model toward formal (the dial and export scale it)."""
    return _trained(tmp_path_factory.mktemp("runs") / "full", small_dataset, tiny_model_dir, lora=False)


@pytest.fixture(scope="session")
def llama_cpp_dir() -> Path:
    """llama.cpp's converters, fetched from PyPI into the user cache once per machine."""
    from autocustom.shipping.llama_cpp import fetch_llama_cpp

    return fetch_llama_cpp()


@pytest.fixture(scope="session")
def lora_run(tmp_path_factory, small_dataset, tiny_model_dir) -> Path:
    """The same run under LoRA."""
    return _trained(tmp_path_factory.mktemp("runs") / "lora", small_dataset, tiny_model_dir, lora=True)


class ScriptedBackend:
    """A ChatBackend whose replies come from a function of the conversation; records every call."""

    name = "scripted"

    def __init__(self, reply: Callable[[Conversation], str], model: str = "scripted-model") -> None:
        self.reply = reply
        self.model = model
        self.calls: list[Conversation] = []

    def complete(
        self, conversations: list[Conversation], params: GenerationParams, on_reply=None
    ) -> list[str]:
        self.calls.extend(conversations)
        replies = [self.reply(conversation) for conversation in conversations]
        for index, reply in enumerate(replies):
            if on_reply is not None:
                on_reply(index, reply)
        return replies


@pytest.fixture
def scripted_backend() -> Callable[[Callable[[Conversation], str]], ScriptedBackend]:
    return ScriptedBackend

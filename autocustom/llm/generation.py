"""Batched text generation with a local model: the one loop behind the local backend and the judged replies.

Prompts are sorted by token length before batching, so a batch holds prompts of similar length and
little compute goes to padding; padding is on the left so every row's reply starts right after its
own prompt. Each batch is seeded from `seed` and its position in the sorted order inside
`fork_rng`, so the same inputs give the same replies whatever ran before, and the caller's random
state is left alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autocustom.llm.chat import has_chat_template

# Prompts per generate() batch. On CPU a decoding step costs a fixed ~30 ms plus a little per row, so
# wider batches pay: measured on 2 cores with SmolLM2-135M, 32 prompts, 96 new tokens, greedy: 24
# tokens/s one at a time, 96 at 8, 158 at 16, 222 at 32, the same text at every size
# (benchmarks/bench_local_generation.py). Memory grows with it only by the KV cache of 32 short replies.
GENERATION_BATCH = 32


def generate_texts(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int = GENERATION_BATCH,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    on_reply: Callable[[int, str], None] | None = None,
) -> list[str]:
    """One stripped reply per rendered prompt, in order; temperature 0 means greedy."""
    import torch  # here, so the CLI reads GENERATION_BATCH without importing torch

    # A chat template writes its own special tokens; a plain prompt needs the tokenizer's BOS.
    add_special = not has_chat_template(tokenizer)
    lengths = [len(tokenizer(p, add_special_tokens=add_special)["input_ids"]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    sampling: dict[str, Any] = {"do_sample": False}
    if temperature > 0:
        sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p}
    devices = [model.device] if model.device.type == "cuda" else []
    replies = [""] * len(prompts)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        for batch_number, start in enumerate(range(0, len(order), batch_size)):
            indices = order[start : start + batch_size]
            inputs = tokenizer(
                [prompts[i] for i in indices],
                return_tensors="pt",
                padding=True,
                add_special_tokens=add_special,
            ).to(model.device)
            with torch.random.fork_rng(devices=devices), torch.inference_mode():
                torch.manual_seed(seed * 100_003 + batch_number)
                output = model.generate(
                    **inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, **sampling
                )
            texts = tokenizer.batch_decode(
                output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
            )
            for index, text in zip(indices, texts, strict=True):
                replies[index] = text.strip()
                if on_reply is not None:
                    on_reply(index, replies[index])
    finally:
        tokenizer.padding_side = side
    return replies

"""Batched text generation with a local model: the one loop behind the local backend and the judged replies.

Prompts are sorted by token length before batching, so a batch holds prompts of similar length and
little compute goes to padding; padding is on the left so every row's reply starts right after its
own prompt. Sampling draws from a generator of each prompt's own (`row_seed`: the seed, the prompt and
which repeat of it this is), so a prompt gets the same reply whatever else is in its batch: a resumed
`generate`, which batches only the prompts not yet cached, makes the replies the unbroken run made. The
caller's random state is left alone.
"""

from __future__ import annotations

import hashlib
from collections import Counter
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
    repeats: Counter[str] = Counter()
    seeds = []
    for prompt in prompts:
        seeds.append(row_seed(seed, prompt, repeats[prompt]))
        repeats[prompt] += 1
    replies = [""] * len(prompts)
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        for start in range(0, len(order), batch_size):
            indices = order[start : start + batch_size]
            inputs = tokenizer(
                [prompts[i] for i in indices],
                return_tensors="pt",
                padding=True,
                add_special_tokens=add_special,
            ).to(model.device)
            processors = _sampling([seeds[i] for i in indices], temperature, top_p)
            with torch.inference_mode():
                output = model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                    do_sample=False,  # greedy over the sampled scores below: the draw is `_RowDraws`'
                    logits_processor=processors,
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


def row_seed(seed: int, prompt: str, repeat: int) -> int:
    """The sampling seed of one reply: the run's seed, the prompt, and which repeat of that prompt in the
    call it is (k samples of one question differ); nothing about the batch it lands in."""
    digest = hashlib.sha256(f"{seed}\x00{repeat}\x00{prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def _sampling(seeds: list[int], temperature: float, top_p: float) -> Any:
    """The logits processors of one batch: none when greedy; else temperature, top-p, and each row's own
    draw."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    if temperature <= 0:
        return LogitsProcessorList()
    warpers = [TemperatureLogitsWarper(temperature)] + ([TopPLogitsWarper(top_p)] if top_p < 1 else [])
    return LogitsProcessorList([*warpers, _RowDraws(seeds)])


class _RowDraws:
    """Sampling as the argmax of the scores plus Gumbel noise (the Gumbel-max trick: that argmax is a draw
    from softmax(scores)), the noise from each row's own generator. transformers' sampling draws the
    whole batch from one generator, so a row's reply would depend on its neighbours; here a row's t-th
    token uses its generator's t-th draw whatever the batch holds."""

    def __init__(self, seeds: list[int]) -> None:
        import torch

        self.generators = [torch.Generator().manual_seed(s) for s in seeds]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        vocabulary = scores.shape[-1]
        exponential = [torch.empty(vocabulary).exponential_(generator=g) for g in self.generators]
        tiny = torch.finfo(torch.float32).tiny  # a draw of exactly 0 would be an infinite score
        gumbel = -torch.stack(exponential).clamp_min(tiny).log().to(scores.device, scores.dtype)
        return scores + gumbel

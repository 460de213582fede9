"""Batched local generation (LocalBackend, length-sorted, left-padded) vs one prompt at a time.

One prompt at a time is what a plain `generate()` loop does; the ratio is what batching buys on this
machine. Greedy decoding, so both runs produce the same text and the same number of tokens (checked).
`--batch-size` takes a list: each size is timed, which is how GENERATION_BATCH was chosen.

    python benchmarks/bench_local_generation.py --prompts 32 --max-new-tokens 96 --batch-size 8,16,32
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from autocustom.assets import DEFAULT_MODEL
from autocustom.llm.base import GenerationParams
from autocustom.llm.generation import GENERATION_BATCH
from autocustom.llm.local_backend import LocalBackend

TOPICS = [
    "taxes", "public transport", "school uniforms", "remote work", "nuclear power", "city parks",
    "minimum wage", "space exploration", "homework", "social media", "immigration", "museums",
    "electric cars", "healthcare", "free trade", "police funding",
]  # fmt: skip


def prompts(n: int) -> list[list[dict[str, str]]]:
    """Questions of varied length, as in a real generation run."""
    out = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        detail = " Explain the main arguments on each side and give one example." * (i % 3)
        out.append([{"role": "user", "content": f"What do you think about {topic}?{detail}"}])
    return out


def timed(backend: LocalBackend, conversations, params) -> tuple[list[str], float]:
    start = time.perf_counter()
    replies = backend.complete(conversations, params)
    return replies, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", default=str(GENERATION_BATCH), help="comma-separated sizes")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    conversations = prompts(args.prompts)
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    single = LocalBackend(args.model, device=args.device, batch_size=1)
    single.complete(conversations[:1], GenerationParams(max_new_tokens=2, temperature=0.0))  # load + warm up
    tokenizer = single._loaded.tokenizer
    single_replies, single_s = timed(single, conversations, params)
    tokens = sum(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in single_replies)
    result = {
        "model": args.model,
        "prompts": args.prompts,
        "max_new_tokens": args.max_new_tokens,
        "generated_tokens": tokens,
        "single_s": round(single_s, 2),
        "single_tokens_per_s": round(tokens / single_s, 1),
        "batched": [],
    }
    for size in (int(s) for s in args.batch_size.split(",")):
        batched = LocalBackend(args.model, device=args.device, batch_size=size)
        batched._loaded = single._loaded  # same weights in memory: time generation, not a second load
        replies, seconds = timed(batched, conversations, params)
        print(f"batch {size}: {seconds:.1f}s", file=sys.stderr)
        result["batched"].append(
            {
                "batch_size": size,
                "seconds": round(seconds, 2),
                "tokens_per_s": round(tokens / seconds, 1),
                "speedup": round(single_s / seconds, 2),
                "same_text": replies == single_replies,
            }
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

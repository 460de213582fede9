"""bf16 against float32 on this machine: speed of scoring and of a LoRA training step, and agreement.

`--dtype auto` picks the compute dtype; on CUDA bf16 is the field's default, on CPU the choice rests on
this measurement (docs/training.md, "Precision"). Both runs use the packaged SmolLM2-135M, the same
pairs (benchmarks/bench_training.py's) and the same LoRA adapter initialisation.

    python benchmarks/bench_precision.py --pairs 32 --steps 3
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from bench_training import pairs as make_pairs


def _pairs(n: int):
    from autocustom.data.schema import Pair

    return [
        Pair(id=str(i), subarea="s", question=q, answers={"formal": chosen, "casual": rejected})
        for i, (q, chosen, rejected) in enumerate(make_pairs(n))
    ]


def score(model, tokenizer, pairs) -> tuple[np.ndarray, float]:
    from autocustom.scoring.logprobs import pair_margins

    started = time.perf_counter()
    margins = pair_margins(model, tokenizer, pairs, "formal", batch_size=16)
    return margins, time.perf_counter() - started


def lora_steps(model, tokenizer, pairs, steps: int) -> float:
    """Seconds per LoRA training step (forward + backward on 8 rows), the first step excluded."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    peft = get_peft_model(
        model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    peft.train()
    texts = [f"{p.question} {p.answers['formal']}" for p in pairs[:8]]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        out = peft(**batch, use_cache=False)
        out.logits.float().log_softmax(-1).mean().backward()
        times.append(time.perf_counter() - started)
    peft.unload()
    return float(np.mean(times[1:]))


def main() -> int:
    from autocustom.llm.models import load_model

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    pairs = _pairs(args.pairs)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        loaded = load_model("smollm2-135m", device="cpu", dtype=dtype)
        score(loaded.model, loaded.tokenizer, pairs[:4])  # warm-up
        margins, seconds = score(loaded.model, loaded.tokenizer, pairs)
        step = lora_steps(loaded.model, loaded.tokenizer, pairs, args.steps)
        results[dtype] = (margins, seconds, step)
        print(f"{dtype}: scoring {args.pairs} pairs {seconds:.2f} s; LoRA step {step:.2f} s", flush=True)
    (m32, s32, t32), (m16, s16, t16) = results[torch.float32], results[torch.bfloat16]
    print(f"bf16 speed vs float32: scoring {s32 / s16:.2f}x, LoRA step {t32 / t16:.2f}x (>1: bf16 faster)")
    diff = np.abs(m16 - m32)
    print(
        f"margins bf16 vs float32 over {len(m32)} pairs: max |diff| {diff.max():.4f} nats/token, "
        f"mean |diff| {diff.mean():.4f}, r {np.corrcoef(m16, m32)[0, 1]:.4f}, "
        f"mean |margin| {np.abs(m32).mean():.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

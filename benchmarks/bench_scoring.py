"""Pairs scored per second: autocustom's scorer vs one-at-a-time vs lm-evaluation-harness (HFLM).

All three score the same (prompt tokens, answer tokens) requests on the same model object. Agreement
is reported against lm-eval's numbers and against the same model in float64 (one sequence at a time),
which tells which float32 computation is closer to exact: per answer, the log-likelihood sum and the
per-token mean (the quantity BiasShift and Lean use).

    python benchmarks/bench_scoring.py --pairs 40 --batch-size 16
    python benchmarks/bench_scoring.py --pairs 16 --contention   # a busy neighbour on one core

`--contention` starts a second CPU-bound process (a Python busy loop, as another job on the machine
would be) before the timings and stops it after, so both tools are timed under the same load.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import time
from contextlib import contextmanager

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from autocustom.assets import DEFAULT_MODEL
from autocustom.data.schema import Pair
from autocustom.llm.chat import PLAIN, encode_prompt_answer, render_prompt
from autocustom.llm.models import load_model
from autocustom.scoring.logprobs import score_groups, shared_groups
from autocustom.scoring.mmlu import retention_subset


def make_pairs(n: int) -> list[Pair]:
    """Questions from MMLU, answers of two lengths: realistic token counts without a generated dataset."""
    pairs = []
    for i, q in enumerate(retention_subset(n, seed=1)):
        a, b = q.choices[q.answer], q.choices[(q.answer + 1) % 4]
        pairs.append(
            Pair(f"p{i}", q.subject, q.question, {"yes": f"I think {a}. " * 3, "no": f"Surely {b}. " * 2})
        )
    return pairs


def requests(tokenizer, pairs: list[Pair]) -> list[tuple[list[int], list[int]]]:
    out = []
    for pair in pairs:
        prompt = render_prompt(tokenizer, PLAIN.conversation(pair.question))
        for pole in ("yes", "no"):
            enc = encode_prompt_answer(tokenizer, prompt, pair.answers[pole], 512)
            out.append((enc.input_ids[: enc.prompt_length], enc.input_ids[enc.prompt_length :]))
    return out


def ours(model, reqs, batch_size):
    encoded = [reqs[i : i + 2] for i in range(0, len(reqs), 2)]
    from autocustom.llm.chat import EncodedPair

    groups = [g for pair in encoded for g in shared_groups([EncodedPair(p + c, len(p)) for p, c in pair])]
    return np.array([lp.sum() for s in score_groups(model, groups, batch_size=batch_size) for lp in s])


def one_at_a_time(model, reqs, _batch_size):
    return _sums_one_by_one(model, reqs, torch.float32)


def float64_reference(model, reqs) -> np.ndarray:
    """The same model in float64 end to end, log-softmax included: the float32 methods' distance from
    these sums is their rounding. (A float32 log-softmax over a 49k vocabulary is itself biased by up to
    ~1e-5 per token, so the logits must not be cast down before it.)"""
    return _sums_one_by_one(copy.deepcopy(model).double(), reqs, torch.float64)


@torch.inference_mode()
def _sums_one_by_one(model, reqs, logits_dtype: torch.dtype) -> np.ndarray:
    """Each request alone, no padding: the plain computation every batched method must reproduce."""
    sums = []
    for prompt, cont in reqs:
        ids = torch.tensor([prompt + cont], device=model.device)
        logp = torch.log_softmax(model(ids).logits[0].to(logits_dtype), -1)
        sums.append(
            logp[len(prompt) - 1 : -1]
            .gather(-1, torch.tensor(cont, device=model.device)[:, None])
            .sum()
            .item()
        )
    return np.array(sums)


def lm_eval_hf(model, tokenizer, batch_size):
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))

    def score(_model, reqs, _batch_size):
        # _loglikelihood_tokens is what HFLM.loglikelihood calls after tokenising; we hand it our exact
        # tokens, because the string API moves the chat prompt's trailing "\n" into the continuation.
        batch = [(("", ""), p, c) for p, c in reqs]
        return np.array([ll for ll, _ in lm._loglikelihood_tokens(batch, disable_tqdm=True)])

    return score


@contextmanager
def neighbour(busy: bool):
    """A CPU-bound process beside the timings while the block runs (nothing when not `busy`)."""
    if not busy:
        yield
        return
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)  # let it reach full speed
        yield
    finally:
        loop.kill()
        loop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--contention", action="store_true", help="time with a busy process beside")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    loaded = load_model(args.model)
    model, tokenizer = loaded.model, loaded.tokenizer
    reqs = requests(tokenizer, make_pairs(args.pairs))
    tokens = sum(len(p) + len(c) for p, c in reqs)
    load = "a busy-loop process beside" if args.contention else "no other process started"
    print(f"model={args.model} device={model.device} pairs={args.pairs} requests={len(reqs)} tokens={tokens}")
    print(f"contention: {load}")
    methods = {
        "autocustom": ours,
        "lm-eval HFLM": lm_eval_hf(model, tokenizer, args.batch_size),
        "one at a time": one_at_a_time,
    }
    results, rates = {}, {}
    ours(model, reqs[:4], args.batch_size)  # warm-up
    with neighbour(args.contention):
        for name, fn in methods.items():
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                results[name] = fn(model, reqs, args.batch_size)
                best = min(best, time.perf_counter() - start)
            rates[name] = args.pairs / best
            print(f"{name:>14}: {best:7.2f} s  {rates[name]:6.2f} pairs/s  {2 * rates[name]:6.2f} requests/s")
    exact = float64_reference(model, reqs)
    lengths = np.array([len(c) for _, c in reqs])
    for name, values in results.items():
        print(
            f"{name:>14}: max |sum - lm-eval| {np.abs(values - results['lm-eval HFLM']).max():.1e}, "
            f"max |sum - float64| {np.abs(values - exact).max():.1e}, "
            f"max |mean - float64| {np.abs((values - exact) / lengths).max():.1e}"
        )
    print(
        f"speed-up vs lm-eval: {rates['autocustom'] / rates['lm-eval HFLM']:.2f}x; "
        f"vs one at a time: {rates['autocustom'] / rates['one at a time']:.2f}x"
    )


if __name__ == "__main__":
    main()

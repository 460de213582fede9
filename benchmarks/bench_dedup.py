"""Dedup benchmark: autocustom's blockwise greedy dedup vs sentence_transformers' paraphrase_mining.

Both run on the same normalised MiniLM embeddings (embedding time is measured once, separately), with
the same threshold. paraphrase_mining returns similar pairs; its kept set is derived with the same
greedy rule (walk in order, drop an item similar to an already-kept one), so the two kept sets can be
compared. Peak memory per phase is the process's peak RSS growth (VmHWM reset through
/proc/self/clear_refs), because torch allocations are invisible to tracemalloc.

    python benchmarks/bench_dedup.py --n 20000 --threshold 0.9 --block 1024
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

TEMPLATES = [
    "How should I {verb} my {noun} about {topic}?",
    "What is the best way to {verb} a {noun} when {topic} comes up?",
    "Is it okay to {verb} my {noun} during {topic}?",
    "Can you explain how to {verb} the {noun} regarding {topic}?",
    "Why do people {verb} their {noun} before {topic}?",
    "What should I say to my {noun} about {topic}?",
]
VERBS = ["talk to", "write to", "thank", "greet", "apologise to", "invite", "email", "call", "text", "answer"]
NOUNS = [
    "boss",
    "neighbour",
    "teacher",
    "landlord",
    "aunt",
    "customer",
    "colleague",
    "doctor",
    "friend",
    "coach",
]
TOPICS = [
    "a late payment", "a wedding", "a job offer", "the holidays", "a complaint", "a birthday", "a promotion",
    "a delayed train", "the weather", "a new project", "a broken window", "an exam", "a funeral", "a move",
]  # fmt: skip


def make_texts(n: int, seed: int) -> list[str]:
    """Template sentences with random words: many near-duplicates (one word apart), some exact repeats."""
    rng = random.Random(seed)
    return [
        rng.choice(TEMPLATES).format(verb=rng.choice(VERBS), noun=rng.choice(NOUNS), topic=rng.choice(TOPICS))
        for _ in range(n)
    ]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure(fn):
    """(result, seconds, peak RSS growth in MiB) of calling fn()."""
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    base = _status_kib("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    return result, seconds, (_status_kib("VmHWM") - base) / 1024


def greedy_from_pairs(n: int, pairs: list, threshold: float) -> list[int]:
    """The greedy rule applied to paraphrase_mining's (score, i, j) pairs."""
    earlier: dict[int, list[int]] = {}
    for score, i, j in pairs:
        if score >= threshold:
            low, high = min(i, j), max(i, j)
            earlier.setdefault(high, []).append(low)
    kept: list[int] = []
    is_kept = np.zeros(n, dtype=bool)
    for index in range(n):
        if not any(is_kept[j] for j in earlier.get(index, ())):
            is_kept[index] = True
            kept.append(index)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="number of texts")
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--block", type=int, default=1024, help="autocustom's block size")
    parser.add_argument("--top-k", type=int, default=100, help="paraphrase_mining's top_k (its default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from sentence_transformers.util import paraphrase_mining_embeddings

    from autocustom.data.dedup import embed, greedy_dedup, load_embedder

    texts = make_texts(args.n, args.seed)
    embedder = load_embedder()
    vectors, embed_s, embed_mib = measure(lambda: embed(texts, embedder))
    print(f"texts: {args.n} ({len(set(texts))} distinct strings), threshold {args.threshold}")
    print(f"embedding (shared by both): {embed_s:.2f} s, peak +{embed_mib:.0f} MiB")

    ours, ours_s, ours_mib = measure(lambda: greedy_dedup(vectors, args.threshold, args.block))
    tensor = torch.from_numpy(vectors)
    pairs, ref_s, ref_mib = measure(
        lambda: paraphrase_mining_embeddings(tensor, top_k=args.top_k, max_pairs=10 * args.n * args.top_k)
    )
    ref_kept, derive_s, _ = measure(lambda: greedy_from_pairs(args.n, pairs, args.threshold))

    ours_set, ref_set = set(ours.kept), set(ref_kept)
    agreement = len(ours_set & ref_set) / len(ours_set | ref_set)
    kept_ours = len(ours_set)
    print(f"greedy_dedup (block {args.block}): {ours_s:.2f} s, peak +{ours_mib:.0f} MiB, kept {kept_ours}")
    print(
        f"paraphrase_mining (top_k {args.top_k}): {ref_s:.2f} s search + {derive_s:.2f} s greedy, "
        f"peak +{ref_mib:.0f} MiB, kept {len(ref_set)}"
    )
    print(f"time ratio (paraphrase_mining / ours): {(ref_s + derive_s) / ours_s:.2f}x")
    print(f"memory ratio (paraphrase_mining / ours): {ref_mib / max(ours_mib, 1e-9):.2f}x")
    only_ours, only_ref = len(ours_set - ref_set), len(ref_set - ours_set)
    print(f"kept-set agreement (Jaccard): {agreement:.4f}; only ours {only_ours}, only ref {only_ref}")


if __name__ == "__main__":
    main()

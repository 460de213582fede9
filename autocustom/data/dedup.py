"""Near-duplicate removal: greedy keep in a fixed order, blockwise so memory stays O(n * block).

Items are embedded and normalised, so a dot product is the cosine similarity. Walking the items in
their given order, an item is dropped when its similarity to any item KEPT so far is >= threshold;
each dropped item records the kept item it is closest to and that similarity. Greedy in a fixed order
is what makes the result reproducible and prefix-stable: appending items never changes the decisions
about earlier ones, so generation can dedup after every round of sampling.

Blockwise: the items of one block are compared with the kept items of earlier blocks (a matrix
product per chunk of kept items) and then, in order, with the items of their own block that were
kept before them. No n x n matrix is ever built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np

DEFAULT_BLOCK = 1024
# Cosine of two subareas' "name: description" at which they are one topic: rewordings measured 0.88-0.95
# ("Job interviews" / "Interviews for a job"), related but distinct topics 0.50-0.76 ("Healthcare" /
# "Health insurance", "Economic policy" / "Fiscal policy"), on the packaged MiniLM.
SUBAREA_THRESHOLD = 0.80


@dataclass
class DedupResult:
    """`kept`: indices kept, ascending. `duplicates`: dropped index -> (kept index, similarity)."""

    kept: list[int] = field(default_factory=list)
    duplicates: dict[int, tuple[int, float]] = field(default_factory=dict)


def greedy_dedup(embeddings: np.ndarray, threshold: float, block_size: int = DEFAULT_BLOCK) -> DedupResult:
    """Greedy near-duplicate removal over rows of `embeddings` (n x d, L2-normalised)."""
    vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
    result = DedupResult()
    for start in range(0, len(vectors), block_size):
        block = vectors[start : start + block_size]  # (b, d)
        best_sim, best_of = _best_kept_match(vectors, result.kept, block, block_size)
        within = block @ block.T  # (b, b): the block against itself
        kept_here: list[int] = []  # positions in the block kept so far
        for row in range(len(block)):
            sim, of = best_sim[row], best_of[row]
            if kept_here:
                candidates = within[row, kept_here]
                top = int(np.argmax(candidates))
                if candidates[top] > sim:
                    sim, of = candidates[top], start + kept_here[top]
            if sim >= threshold:
                result.duplicates[start + row] = (int(of), float(sim))
            else:
                kept_here.append(row)
        result.kept.extend(start + row for row in kept_here)
    return result


def _best_kept_match(
    vectors: np.ndarray, kept: list[int], block: np.ndarray, chunk: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each row of `block`: its highest similarity to a kept item and that item (-inf, -1 if none).

    Ties go to the earliest kept item, as in the brute-force definition.
    """
    best_sim = np.full(len(block), -np.inf, dtype=np.float32)
    best_of = np.full(len(block), -1, dtype=np.int64)
    for offset in range(0, len(kept), chunk):
        ids = np.asarray(kept[offset : offset + chunk])
        sims = block @ vectors[ids].T  # (b, chunk)
        top = np.argmax(sims, axis=1)
        top_sim = sims[np.arange(len(block)), top]
        better = top_sim > best_sim
        best_sim[better] = top_sim[better]
        best_of[better] = ids[top[better]]
    return best_sim, best_of


def subarea_text(name: str, description: str) -> str:
    """What a subarea is embedded as: its name without list numbering or Markdown ("4. How to cook a
    meal*" is "How to cook a meal", so an imported or older dataset's names compare as topics) and,
    when it has one, its description."""
    from autocustom.data.parsing import topic_name

    return f"{topic_name(name)}: {description}" if description else topic_name(name)


@cache
def load_embedder(path: str | None = None):
    """The sentence embedder (packaged all-MiniLM-L6-v2 by default), loaded once per process."""
    from sentence_transformers import SentenceTransformer

    from autocustom.assets import embedder_path

    return SentenceTransformer(path or embedder_path(), device="cpu")


def embed(texts: Sequence[str], embedder=None, batch_size: int = 64) -> np.ndarray:
    """Normalised embeddings (n x d, float32) of `texts`."""
    model = embedder if embedder is not None else load_embedder()
    if not texts:
        dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return np.zeros((0, dimension()), dtype=np.float32)
    vectors = model.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
    )
    return np.asarray(vectors, dtype=np.float32)


def dedup_texts(
    texts: Sequence[str], threshold: float, *, embedder=None, block_size: int = DEFAULT_BLOCK
) -> DedupResult:
    """Embed `texts` and run the greedy dedup over them in their given order."""
    return greedy_dedup(embed(texts, embedder), threshold, block_size)

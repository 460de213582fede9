"""Greedy blockwise dedup: exact against a brute-force reference, and right on real sentences."""

from __future__ import annotations

import numpy as np
import pytest

from autocustom.data.dedup import dedup_texts, greedy_dedup


def brute_force(vectors: np.ndarray, threshold: float) -> tuple[list[int], dict[int, tuple[int, float]]]:
    """The definition: walk in order; drop an item whose best similarity to a kept item is >= threshold."""
    sims = vectors @ vectors.T
    kept: list[int] = []
    duplicates = {}
    for i in range(len(vectors)):
        if kept:
            row = sims[i, kept]
            best = int(np.argmax(row))
            if row[best] >= threshold:
                duplicates[i] = (kept[best], float(row[best]))
                continue
        kept.append(i)
    return kept, duplicates


def clustered_vectors(seed: int, n: int, dim: int = 16) -> np.ndarray:
    """Random unit vectors, many of them noisy copies of earlier ones, so duplicates are common."""
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim))
    for i in range(1, n):
        if rng.random() < 0.5:
            vectors[i] = vectors[rng.integers(0, i)] + rng.normal(scale=0.3, size=dim)
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("block_size", [1, 3, 7, 64, 1000])
def test_blockwise_equals_brute_force(seed, block_size):
    vectors = clustered_vectors(seed, 150)
    kept, duplicates = brute_force(vectors, 0.9)
    result = greedy_dedup(vectors, 0.9, block_size=block_size)
    assert len(duplicates) > 10 and len(kept) > 10  # the case exercises both outcomes
    assert result.kept == kept
    assert result.duplicates.keys() == duplicates.keys()
    for index, (of, similarity) in duplicates.items():
        assert result.duplicates[index][0] == of
        assert result.duplicates[index][1] == pytest.approx(similarity, abs=1e-5)


def test_duplicates_within_one_block_compare_only_with_kept_items():
    # b ~ a (dropped), c ~ b but not ~ a: c must be kept, since b was not kept.
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([np.cos(0.4), np.sin(0.4), 0.0])
    c = np.array([np.cos(0.8), np.sin(0.8), 0.0])
    vectors = np.stack([a, b, c]).astype(np.float32)
    threshold = float(np.cos(0.5))
    for block_size in (1, 2, 3):
        result = greedy_dedup(vectors, threshold, block_size=block_size)
        assert result.kept == [0, 2]
        assert result.duplicates[1][0] == 0
        assert result.duplicates[1][1] == pytest.approx(np.cos(0.4), abs=1e-6)


def test_empty_input():
    result = greedy_dedup(np.zeros((0, 8), dtype=np.float32), 0.9)
    assert result.kept == [] and result.duplicates == {}


def test_real_sentences_with_the_packaged_embedder():
    texts = [
        "How do I prepare for a job interview?",
        "What should I wear to a wedding?",
        "How do I prepare for a job interview?",  # identical: similarity 1.0
        "How should I prepare for a job interview?",  # a rewording
        "Which documents do I need to file my taxes?",
    ]
    result = dedup_texts(texts, 0.9, block_size=2)
    assert result.kept == [0, 1, 4]
    assert result.duplicates[2][0] == 0
    assert result.duplicates[2][1] == pytest.approx(1.0, abs=1e-5)
    assert result.duplicates[3][0] == 0
    assert 0.9 <= result.duplicates[3][1] < 1.0

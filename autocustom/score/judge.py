"""GenLean: what the model says, not what it finds likely.

The model answers held-out questions freely (greedy); an embedding classifier fitted on the train
split's pole answers labels each reply. The classifier is a logistic regression on MiniLM embeddings,
fitted in numpy: a few hundred 384-d points need no extra dependency. Its accuracy on the
validation split's answers is reported next to GenLean, since a classifier that cannot tell the poles
apart makes GenLean meaningless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autocustom.chat import PLAIN, PromptCondition, render_prompt
from autocustom.data.schema import Pair


@dataclass
class PoleClassifier:
    """P(target pole | text) = sigmoid(embedding @ w + b)."""

    embedder: object  # a SentenceTransformer
    weights: np.ndarray
    bias: float

    def predict(self, texts: list[str]) -> np.ndarray:
        """1.0 where a text reads as the target pole, else 0.0."""
        features = _embed(self.embedder, texts)
        return (features @ self.weights + self.bias > 0).astype(np.float64)


def load_embedder():
    from sentence_transformers import SentenceTransformer

    from autocustom.assets import embedder_path

    return SentenceTransformer(embedder_path(), device="cpu")


def fit_pole_classifier(
    pairs: list[Pair], target: str, *, embedder=None, l2: float = 1e-2, steps: int = 500
) -> PoleClassifier:
    """Logistic regression (full-batch gradient descent, L2) on the embeddings of both poles' answers."""
    embedder = embedder or load_embedder()
    texts, labels = _labelled(pairs, target)
    x = _embed(embedder, texts)
    y = np.asarray(labels)
    w, b = np.zeros(x.shape[1]), 0.0
    rate = 1.0  # embeddings are unit-norm, so the loss is smooth with curvature <= 1/4
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ w + b)))
        w -= rate * (x.T @ (p - y) / len(y) + l2 * w)
        b -= rate * float((p - y).mean())
    return PoleClassifier(embedder, w, b)


def classifier_correct(classifier: PoleClassifier, pairs: Sequence[Pair], target: str) -> np.ndarray:
    """1.0 for each held-out pole answer the classifier labels correctly (its accuracy, per item)."""
    texts, labels = _labelled(pairs, target)
    return (classifier.predict(texts) == np.asarray(labels)).astype(np.float64)


def generate_replies(
    model,
    tokenizer,
    questions: list[str],
    *,
    condition: PromptCondition = PLAIN,
    max_new_tokens: int = 48,
    batch_size: int = 16,
) -> list[str]:
    """Greedy replies to the questions under `condition` (what the model says, not what it scores)."""
    from autocustom.generation import generate_texts

    prompts = [render_prompt(tokenizer, condition.conversation(q)) for q in questions]
    return generate_texts(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)


def _labelled(pairs: Sequence[Pair], target: str) -> tuple[list[str], list[float]]:
    texts, labels = [], []
    for pair in pairs:
        for pole, answer in pair.answers.items():
            texts.append(answer)
            labels.append(1.0 if pole == target else 0.0)
    return texts, labels


def _embed(embedder, texts: list[str]) -> np.ndarray:
    if not texts:
        return np.zeros((0, embedder.get_sentence_embedding_dimension()))
    return np.asarray(embedder.encode(texts, normalize_embeddings=True, batch_size=64), dtype=np.float64)

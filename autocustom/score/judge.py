"""GenLean: what the model says, not what it finds likely.

The model answers held-out questions freely (greedy); an embedding classifier fitted on the train
split's pole answers labels each reply. The classifier is a logistic regression on MiniLM embeddings,
fitted in numpy: a few hundred 384-d points need no extra dependency. Its accuracy on the
validation split's answers is reported next to GenLean, since a classifier that cannot tell the poles
apart makes GenLean meaningless.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autocustom.chat import PLAIN, PromptCondition, render_prompt
from autocustom.data.schema import Pair
from autocustom.errors import UsageError
from autocustom.score.stats import DEFAULT_BOOTSTRAP, Estimate, bootstrap, signed_share


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


def classifier_splits(dataset) -> tuple[list[Pair], list[Pair]]:
    """The train split (the classifier is fitted on it) and the validation split (it is checked on it)."""
    train, validation = dataset.splits.get("train", []), dataset.splits.get("validation", [])
    if not train or not validation:
        raise UsageError(
            "--gen needs the train and validation splits (classifier fit and check)", "drop --gen"
        )
    return train, validation


def classifier_accuracy(
    classifier: PoleClassifier,
    pairs: list[Pair],
    target: str,
    *,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> Estimate:
    """Share of held-out pole answers the classifier labels correctly."""
    texts, labels = _labelled(pairs, target)
    return bootstrap(classifier.predict(texts) == np.asarray(labels), n_boot=n_boot, seed=seed)


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


def measure_gen_lean(
    model,
    tokenizer,
    classifier: PoleClassifier,
    questions: list[str],
    *,
    condition: PromptCondition = PLAIN,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
) -> Estimate:
    """GenLean of a model: its greedy replies to `questions`, labelled by the pole classifier."""
    replies = generate_replies(
        model, tokenizer, questions, condition=condition, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    return gen_lean(classifier, replies, n_boot=n_boot, seed=seed)


def gen_lean(
    classifier: PoleClassifier, replies: list[str], *, n_boot: int = DEFAULT_BOOTSTRAP, seed: int = 0
) -> Estimate:
    """Share of replies labelled as the target pole, mapped to [-1, 1]."""
    return signed_share(classifier.predict(replies), n_boot=n_boot, seed=seed)


def _labelled(pairs: list[Pair], target: str) -> tuple[list[str], list[float]]:
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

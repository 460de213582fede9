"""Pairs -> token ids -> padded batches, through autocustom.llm.chat so training and scoring see one tokenisation.

A batch holds 2B sequences, [targets..., opposites...], so one forward pass scores both answers of
every pair; `answer_mask` marks the answer tokens (shifted to line up with next-token log-probs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from autocustom.axis import Poles
from autocustom.data.schema import Pair
from autocustom.llm.chat import PLAIN, PromptCondition, encode_prompt_answer, render_prompt
from autocustom.tensors import pad_rows


@dataclass(frozen=True)
class EncodedExample:
    """One training pair: (ids, prompt length) for the target and the opposite answer."""

    target_ids: list[int]
    target_prompt: int
    opposite_ids: list[int]
    opposite_prompt: int


@dataclass(frozen=True)
class EncodedRun:
    """A run's poles, checked once, and its tokenizer and train pairs, encoded once: the memory plan
    measures these rows before any weight is loaded, and training trains on the same ones."""

    poles: Poles
    tokenizer: Any
    examples: list[EncodedExample]


def encode_run(config: Any, dataset: Any) -> EncodedRun:
    """`config`'s (a TrainConfig) train pairs, toward its pole, in its model's tokenizer; AxisError
    (exit 2) when `config.toward` is not a pole of the dataset's axis."""
    from autocustom.llm.models import load_tokenizer

    poles = dataset.axis.toward(config.toward)
    tokenizer = load_tokenizer(config.model)
    examples = encode_pairs(
        tokenizer, dataset.splits["train"], poles.toward, poles.opposite, config.max_length
    )
    return EncodedRun(poles, tokenizer, examples)


def encode_pairs(
    tokenizer,
    pairs: Sequence[Pair],
    target: str,
    opposite: str,
    max_length: int,
    condition: PromptCondition = PLAIN,
) -> list[EncodedExample]:
    examples = []
    for pair in pairs:
        prompt = render_prompt(tokenizer, condition.conversation(pair.question))
        t = encode_prompt_answer(tokenizer, prompt, pair.answers[target], max_length)
        o = encode_prompt_answer(tokenizer, prompt, pair.answers[opposite], max_length)
        examples.append(EncodedExample(t.input_ids, t.prompt_length, o.input_ids, o.prompt_length))
    return examples


def nested_subset(pairs: Sequence[Pair], n: int, seed: int) -> list[Pair]:
    """The first `n` pairs of one seeded shuffle: for one seed, a smaller subset is inside a larger one,
    so a curve over n (`compare --train-sizes`) adds pairs rather than drawing new ones."""
    import random

    order = list(pairs)
    random.Random(seed).shuffle(order)
    return order[:n]


class PairDataset(torch.utils.data.Dataset):
    """Encoded pairs plus, for the preference losses, the frozen reference's summed log-probs."""

    def __init__(self, examples: list[EncodedExample], reference: torch.Tensor | None = None) -> None:
        self.examples = examples
        self.reference = reference  # [N, 2]: (target, opposite) summed log-probs, or None

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"example": self.examples[index], "index": index}
        if self.reference is not None:
            item["reference"] = self.reference[index]
        return item


def pad_sequences(
    sequences: Sequence[tuple[list[int], int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad (ids, prompt_length) rows -> input_ids, attention_mask [N, T] and answer_mask [N, T-1]."""
    input_ids, attention = pad_rows([ids for ids, _ in sequences], pad_id)
    answer = attention.clone()
    for row, (_, prompt_length) in enumerate(sequences):
        answer[row, :prompt_length] = 0
    return input_ids, attention, answer[:, 1:]  # answer_mask[t] is for the token predicted at position t


class PairCollator:
    """Collate PairDataset items into one [2B, T] batch: targets first, then opposites."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        examples = [item["example"] for item in items]
        rows = [(e.target_ids, e.target_prompt) for e in examples]
        rows += [(e.opposite_ids, e.opposite_prompt) for e in examples]
        input_ids, attention_mask, answer_mask = pad_sequences(rows, self.pad_id)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "answer_mask": answer_mask}
        batch["index"] = torch.tensor([item["index"] for item in items])  # on-policy: whose questions
        if "reference" in items[0]:
            batch["reference"] = torch.stack([item["reference"] for item in items])
        return batch


class EpochShuffleSampler(torch.utils.data.Sampler[int]):
    """A seeded permutation per epoch, independent of global RNG state.

    One process and N DDP processes then see the same global batches (accelerate hands consecutive
    batches to consecutive ranks), and a resumed run sees the order the uninterrupted run saw.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

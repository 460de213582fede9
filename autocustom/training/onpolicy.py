"""On-policy training: the policy's own replies, read by the contrast judge, become what it trains on.

The offline objectives train on text another LLM wrote; the model's own replies may never look like
it. Two on-policy objectives, each step drawing fresh samples from the policy being trained:

- **online preference** (`--on-policy`, with `--loss dpo|ipo|simpo|contrastive`): the policy samples
  `--samples` replies per train question; the contrast judge (the frozen base told each pole,
  `scoring/contrast.py`) scores them; the best and the worst reply form a chosen/rejected pair, and the
  written target answer is paired against the worst reply when that one leans the wrong way (as
  OpenCharacterTraining makes the student's own replies the rejected side). The existing loss trains
  on them, its DPO reference log-probs computed on the fly by the frozen base.
- **pole-prompt distillation** (`--loss distill`): the teacher is the frozen base *with* the target
  pole's system prompt, the student the policy without it; on the student's own samples the loss is
  the reverse KL, KL(student || teacher) over the whole vocabulary at every sampled token (GKD with
  beta = 1, on-policy as in Agarwal et al. 2024). What prompting does goes into the weights, where
  padding and an adversarial turn cannot take it away.

Why not TRL's OnlineDPOTrainer / GRPOTrainer / GKDTrainer: each is its own Trainer subclass with its
own loop, so none can share autocustom's MMLU regulariser (one forward with the pairs), its
evaluation callback (BiasShift and reply figures on validation, best checkpoint, early stopping), its
memory plan or its resume; here sampling is one more step of `PairTrainer.compute_loss`, and all of
those keep working. The samples are seeded by (seed, step, micro-step) in a forked RNG, so a resumed
run draws what the unbroken run drew and ends at the same weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from autocustom.axis import Poles
from autocustom.data.schema import Pair
from autocustom.llm.chat import PLAIN, encode_prompt_answer, render_prompt
from autocustom.scoring.contrast import ContrastJudge, pole_condition
from autocustom.tensors import answer_token_logps, padding_id
from autocustom.training.data import pad_sequences


@dataclass(frozen=True)
class Sampling:
    """How the policy samples its own replies each step."""

    samples: int  # replies per question
    temperature: float
    max_new_tokens: int
    seed: int


@dataclass(frozen=True)
class Preference:
    """One chosen/rejected pair built from samples: which question, the two texts, and why."""

    question: int
    chosen: str
    rejected: str
    kind: str  # "best-worst" or "written-wrong"


def preference_pairs(
    samples: Sequence[Sequence[str]], scores: Sequence[np.ndarray], written: Sequence[str]
) -> list[Preference]:
    """Per question, its best against its worst sample (when the judge tells them apart), and the
    written target answer against the worst sample when that one leans the wrong way (score < 0)."""
    pairs = []
    for question, (texts, score) in enumerate(zip(samples, scores, strict=True)):
        best, worst = int(np.argmax(score)), int(np.argmin(score))
        if score[best] > score[worst]:
            pairs.append(Preference(question, texts[best], texts[worst], "best-worst"))
        if score[worst] < 0:
            pairs.append(Preference(question, written[question], texts[worst], "written-wrong"))
    return pairs


@contextmanager
def evaluating(model):
    """The model in eval mode (no dropout) while it samples or is read, then back as it was."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


class OnPolicyBatches:
    """Turns a batch of written pairs into a batch of the policy's own samples, each step."""

    def __init__(
        self,
        tokenizer,
        pairs: Sequence[Pair],
        poles: Poles,
        judge: ContrastJudge,
        sampling: Sampling,
        *,
        max_length: int,
        eval_batch_size: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.pairs = list(pairs)
        self.poles = poles
        self.judge = judge
        self.sampling = sampling
        self.max_length = max_length
        self.batching = {"batch_size": eval_batch_size, "max_length": max_length}
        self.counts = {"best-worst": 0, "written-wrong": 0, "fallback": 0}  # pairs made, for the summary

    def sample(self, model, indices: Sequence[int], draw: int) -> list[list[str]]:
        """`samples` replies per question, under a seed of (run seed, draw): the same on resume."""
        from autocustom.llm.generation import generate_texts

        prompts = [self._prompt(i) for i in indices for _ in range(self.sampling.samples)]
        with evaluating(model):
            texts = generate_texts(
                model,
                self.tokenizer,
                prompts,
                max_new_tokens=self.sampling.max_new_tokens,
                batch_size=len(prompts),
                temperature=self.sampling.temperature,
                seed=self.sampling.seed * 1_000_003 + draw,
            )
        k = self.sampling.samples
        return [texts[j * k : (j + 1) * k] for j in range(len(indices))]

    def preference_batch(self, model, reference, indices: Sequence[int], draw: int) -> dict[str, Any] | None:
        """[chosen...; rejected...] rows with the reference's summed log-probs; None when no sample
        pair could be made (every question's samples scored alike and none leaned the wrong way)."""
        samples = self.sample(model, indices, draw)
        questions = [self.pairs[i].question for i in indices]
        flat = [text for texts in samples for text in texts]
        with evaluating(reference):
            scores, _ = self.judge.reply_scores(
                (reference, self.tokenizer),
                [q for q in questions for _ in range(self.sampling.samples)],
                flat,
                self.poles,
                **self.batching,
            )
        per_question = np.split(scores, len(indices))
        written = [self.pairs[i].answers[self.poles.toward] for i in indices]
        pairs = preference_pairs(samples, per_question, written)
        if not pairs:
            self.counts["fallback"] += 1
            return None
        for pair in pairs:
            self.counts[pair.kind] += 1
        rows = [self._encode(indices[p.question], p.chosen) for p in pairs]
        rows += [self._encode(indices[p.question], p.rejected) for p in pairs]
        input_ids, attention_mask, answer_mask = pad_sequences(rows, padding_id(self.tokenizer))
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "answer_mask": answer_mask}
        batch["reference"] = _summed_logps(reference, batch).view(2, len(pairs)).T
        return batch

    def distill_batch(self, model, reference, indices: Sequence[int], draw: int) -> dict[str, Any]:
        """The student's samples after the plain prompt, and the teacher's logits at each sampled
        token (the frozen base after the target pole's system prompt): what the reverse KL reads."""
        samples = self.sample(model, indices, draw)
        teacher_condition = pole_condition(self.judge.axis, self.poles.toward)
        student_rows, teacher_rows = [], []
        for index, texts in zip(indices, samples, strict=True):
            question = self.pairs[index].question
            teacher_prompt = render_prompt(self.tokenizer, teacher_condition.conversation(question))
            for text in texts:
                student = self._encode(index, text)
                teacher = encode_prompt_answer(self.tokenizer, teacher_prompt, text, self.max_length)
                student, teacher = _same_answer(student, (teacher.input_ids, teacher.prompt_length))
                student_rows.append(student)
                teacher_rows.append(teacher)
        input_ids, attention_mask, answer_mask = pad_sequences(student_rows, padding_id(self.tokenizer))
        teacher_ids, teacher_attention, teacher_answer = pad_sequences(
            teacher_rows, padding_id(self.tokenizer)
        )
        with torch.no_grad(), evaluating(reference):
            _, teacher_logits = answer_token_logps(
                reference,
                teacher_ids.to(_device(reference)),
                teacher_attention.to(_device(reference)),
                teacher_answer.bool().to(_device(reference)),
            )
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "answer_mask": answer_mask}
        batch["teacher_logits"] = teacher_logits.float()
        return batch

    def _prompt(self, index: int) -> str:
        return render_prompt(self.tokenizer, PLAIN.conversation(self.pairs[index].question))

    def _encode(self, index: int, answer: str) -> tuple[list[int], int]:
        encoded = encode_prompt_answer(self.tokenizer, self._prompt(index), answer, self.max_length)
        return encoded.input_ids, encoded.prompt_length


def _same_answer(
    student: tuple[list[int], int], teacher: tuple[list[int], int]
) -> tuple[tuple[list[int], int], tuple[list[int], int]]:
    """Both rows cut to the answer tokens they share: truncation may cut the teacher's (longer
    prompt) answer shorter, and the KL compares the two models token by token."""
    (s_ids, s_prompt), (t_ids, t_prompt) = student, teacher
    n = min(len(s_ids) - s_prompt, len(t_ids) - t_prompt)
    return (s_ids[: s_prompt + n], s_prompt), (t_ids[: t_prompt + n], t_prompt)


def _summed_logps(reference, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The frozen reference's summed answer log-probs per row (DPO's and IPO's reference term)."""
    from autocustom.training.losses import sequence_logps

    device = _device(reference)
    needed = batch["answer_mask"].bool().to(device)
    with torch.no_grad(), evaluating(reference):
        logps, _ = answer_token_logps(
            reference, batch["input_ids"].to(device), batch["attention_mask"].to(device), needed
        )
    return sequence_logps(logps, needed, normalize=False).float().cpu()


def _device(model) -> torch.device:
    return next(model.parameters()).device

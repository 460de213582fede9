"""The comparison's methods and stress conditions, as prompt edits over the same held-out pairs.

Prompting baselines (system prompt, the same instruction after the question, few-shot) answer the
reviewers' "is fine-tuning better than strong prompting?"; the stress conditions (distracting text
before the question, a user turn asking for the opposite pole) are the paper's robustness tests.
Everything is a `PromptCondition`, so every row of a comparison is scored by the same code.
"""

from __future__ import annotations

from dataclasses import replace

from autocustom.axis import Axis
from autocustom.data.schema import Pair
from autocustom.errors import UsageError
from autocustom.llm.chat import PLAIN, PromptCondition
from autocustom.prompts import load_prompt

PROMPT_METHODS = ("base", "system-prompt", "instruction-after", "few-shot")
STEERING_METHOD = "steer"  # a mean-difference activation vector (autocustom.steering.search): no training
# trained on the model's own samples (autocustom.training.onpolicy): online DPO, pole-prompt distillation
ON_POLICY_METHODS = ("online-dpo", "distill")
TRAINED_METHODS = ("contrastive", "dpo", "simpo", *ON_POLICY_METHODS)
METHODS = (*PROMPT_METHODS, STEERING_METHOD, *TRAINED_METHODS)
PLAIN_CONDITION = "plain"
ADVERSARIAL_CONDITION = "adversarial"


def check_methods(methods: list[str]) -> None:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UsageError(f"unknown method(s): {', '.join(unknown)}", f"use any of: {', '.join(METHODS)}")
    if not methods:
        raise UsageError("no methods given", f"use any of: {', '.join(METHODS)}")


def training_options(method: str) -> dict[str, object]:
    """The `TrainConfig` options a trained method sets: its loss, and whether it samples its own replies."""
    if method == "online-dpo":
        return {"loss": "dpo", "on_policy": True}
    return {"loss": method}


def method_condition(
    method: str, axis: Axis, toward: str, train_pairs: list[Pair], few_shot: int
) -> PromptCondition:
    """The prompt edit a method applies to every question (PLAIN for the base and trained models)."""
    description = axis.description(toward)
    values = {"pole": toward, "description": f" ({description})" if description else ""}
    if method == "system-prompt":
        return PromptCondition(system=_text("baseline_system", **values))
    if method == "instruction-after":
        return PromptCondition(user_suffix=_text("baseline_after", **values))
    if method == "few-shot":
        if len(train_pairs) < few_shot:
            raise UsageError(
                f"few-shot needs {few_shot} train pairs; the dataset has {len(train_pairs)}",
                "lower --few-shot",
            )
        return PromptCondition(
            few_shot=tuple((p.question, p.answers[toward]) for p in train_pairs[:few_shot])
        )
    return PLAIN


def stress_conditions(padding_lengths: list[int], adversarial: bool) -> list[str]:
    """Condition names in table order: plain, padding-N for each length, then adversarial."""
    names = [PLAIN_CONDITION, *(f"padding-{n}" for n in sorted(set(padding_lengths)))]
    return [*names, ADVERSARIAL_CONDITION] if adversarial else names


def apply_stress(
    condition: PromptCondition, stress: str, *, opposite: str, tokenizer, padding_source: list[str]
) -> PromptCondition:
    """`condition` under a stress: distracting text before the question, or an adversarial turn."""
    if stress == PLAIN_CONDITION:
        return condition
    if stress == ADVERSARIAL_CONDITION:
        return replace(condition, adversarial_turn=_text("adversarial", opposite=opposite))
    tokens = int(stress.removeprefix("padding-"))
    return replace(condition, padding_text=padding_text(tokenizer, tokens, padding_source))


def padding_length(stress: str) -> int:
    """Distracting tokens a condition adds (0 for plain and adversarial), for Lean-vs-padding plots."""
    return int(stress.removeprefix("padding-")) if stress.startswith("padding-") else 0


def padding_text(tokenizer, n_tokens: int, source: list[str]) -> str:
    """Exactly `n_tokens` tokens of unrelated text (MMLU questions: neutral, fixed, offline)."""
    ids: list[int] = []
    for text in source:
        ids.extend(tokenizer(text + "\n", add_special_tokens=False)["input_ids"])
        if len(ids) >= n_tokens:
            break
    if len(ids) < n_tokens:
        raise UsageError(f"not enough neutral text for {n_tokens} padding tokens", "use a smaller --padding")
    return tokenizer.decode(ids[:n_tokens])


def _text(name: str, **values: str) -> str:
    """A one-message template rendered to its text (the baselines insert it into other turns)."""
    return load_prompt(name).render(**values)[-1]["content"]

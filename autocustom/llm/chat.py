"""How a question becomes model input, in one place, so training and scoring see the same tokens.

A model with a chat template gets the question as a user turn rendered by its own template; a base
model without one (Gemma 3 270M base) gets "Question: ...\nAnswer:". Conditions that the prompting
baselines and stress tests need (system prompt, instruction after the question, few-shot examples,
distracting padding, an adversarial user turn) are built here as conversation edits.
"""

from __future__ import annotations

from dataclasses import dataclass

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}
Conversation = list[Message]

PLAIN_USER_PREFIX = "Question: "
PLAIN_ASSISTANT_PREFIX = "\nAnswer:"


@dataclass(frozen=True)
class PromptCondition:
    """Edits applied to every question; the default (all empty) is the plain question."""

    system: str | None = None
    user_suffix: str | None = None  # an instruction placed after the user's question
    few_shot: tuple[tuple[str, str], ...] = ()  # (question, answer) turns before the question
    padding_text: str | None = None  # unrelated text placed before the question
    adversarial_turn: str | None = None  # appended to the user message, e.g. "answer as a {opposite}"

    def conversation(self, question: str) -> Conversation:
        messages: Conversation = []
        if self.system:
            messages.append({"role": "system", "content": self.system})
        for shot_question, shot_answer in self.few_shot:
            messages.append({"role": "user", "content": shot_question})
            messages.append({"role": "assistant", "content": shot_answer})
        user = question
        if self.padding_text:
            user = f"{self.padding_text}\n\n{user}"
        if self.user_suffix:
            user = f"{user}\n\n{self.user_suffix}"
        if self.adversarial_turn:
            user = f"{user}\n\n{self.adversarial_turn}"
        messages.append({"role": "user", "content": user})
        return messages


PLAIN = PromptCondition()


def has_chat_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, conversation: Conversation) -> str:
    """The text a model sees before its answer starts (generation prompt included)."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    parts = []
    for message in conversation:
        if message["role"] == "system":
            parts.append(message["content"] + "\n\n")
        elif message["role"] == "user":
            parts.append(PLAIN_USER_PREFIX + message["content"] + PLAIN_ASSISTANT_PREFIX)
        else:
            parts.append(" " + message["content"] + "\n\n")
    return "".join(parts)


def answer_text(tokenizer, answer: str) -> str:
    """The answer as the model should produce it: after a plain prompt it starts with a space."""
    return answer if has_chat_template(tokenizer) else " " + answer


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of prompt + answer, and how many leading tokens are prompt (masked from losses)."""

    input_ids: list[int]
    prompt_length: int

    @property
    def answer_length(self) -> int:
        return len(self.input_ids) - self.prompt_length


def encode_prompt_answer(tokenizer, prompt: str, answer: str, max_length: int) -> EncodedPair:
    """Tokenize prompt and answer separately and join them, so the boundary is exact.

    Tokenizing the concatenation instead can merge tokens across the boundary and shift the mask by
    one. When too long, the prompt is cut from the left (keeping the question's end and the
    generation prompt) and the answer from the right, keeping at least one answer token.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None and not has_chat_template(tokenizer):
        prompt_ids = [tokenizer.bos_token_id, *prompt_ids]
    answer_ids = tokenizer(answer_text(tokenizer, answer), add_special_tokens=False)["input_ids"]
    if not answer_ids:
        answer_ids = [tokenizer.eos_token_id]
    overflow = len(prompt_ids) + len(answer_ids) - max_length
    if overflow > 0:
        cut_answer = min(overflow, len(answer_ids) - 1)
        answer_ids = answer_ids[: len(answer_ids) - cut_answer]
        overflow -= cut_answer
        if overflow > 0:
            prompt_ids = prompt_ids[overflow:]
    return EncodedPair([*prompt_ids, *answer_ids], len(prompt_ids))

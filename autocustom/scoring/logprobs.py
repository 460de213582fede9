"""Per-token log-probs of answers given prompts: the one scorer behind BiasShift, Lean, MMLU and Drift.

Speed comes from three things, each exact (the numbers match a one-sequence-at-a-time computation):
- a prompt with several continuations (the two answers of a pair, the four MMLU letters) is encoded
  once; its KV cache is copied to each continuation, so the shared question is never recomputed;
- prompts are left-padded and continuations right-padded, so every row's last prompt token sits at
  the same index; groups are sorted by length and cut into the batches that minimise padded tokens
  plus a per-pass overhead (`_plan_batches`), so one long prompt does not pad a whole batch;
- logits are computed only where a continuation token is predicted (`logits_to_keep` with a boolean
  mask), not over the whole sequence: the vocabulary projection is a large share of a small model.
Log-probs are taken in float32 whatever the model's dtype.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from autocustom.data.schema import Pair
from autocustom.llm.chat import PLAIN, EncodedPair, PromptCondition, encode_prompt_answer, render_prompt
from autocustom.tensors import pad_rows, padding_id, token_logprobs


@dataclass(frozen=True)
class Group:
    """One prompt and the continuations scored after it (token ids, prompt without continuation)."""

    prompt: list[int]
    continuations: list[list[int]]


def answer_logprobs(
    model,
    tokenizer,
    prompts: list[str],
    answers: list[str],
    *,
    batch_size: int = 16,
    max_length: int = 512,
) -> np.ndarray:
    """Mean per-token log-prob of `answers[i]` given the rendered prompt text `prompts[i]`, shape (n,)."""
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    groups = [
        _single(encode_prompt_answer(tokenizer, p, a, max_length))
        for p, a in zip(prompts, answers, strict=True)
    ]
    scores = score_groups(model, groups, batch_size=batch_size)
    return np.array([s[0].mean() for s in scores], dtype=np.float64)


def pair_margins(
    model,
    tokenizer,
    pairs: list[Pair],
    target: str,
    *,
    condition: PromptCondition = PLAIN,
    batch_size: int = 16,
    max_length: int = 512,
) -> np.ndarray:
    """m(q) = lp(target answer | q) - lp(opposite answer | q) for each pair, nats/token, shape (n,)."""
    target_lp, opposite_lp = pair_logprobs(
        model, tokenizer, pairs, target, condition=condition, batch_size=batch_size, max_length=max_length
    )
    return target_lp - opposite_lp


def pair_logprobs(
    model,
    tokenizer,
    pairs: list[Pair],
    target: str,
    *,
    condition: PromptCondition = PLAIN,
    batch_size: int = 16,
    max_length: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """(lp(target|q), lp(opposite|q)) per pair: the question is encoded once for both answers."""
    scored = pair_token_logprobs(
        model, tokenizer, pairs, target, condition=condition, batch_size=batch_size, max_length=max_length
    )
    lp = np.array([[part.mean() for part in parts] for parts in scored], dtype=np.float64).reshape(
        len(pairs), 2
    )
    return lp[:, 0], lp[:, 1]


def pair_token_logprobs(
    model,
    tokenizer,
    pairs: list[Pair],
    target: str,
    *,
    condition: PromptCondition = PLAIN,
    batch_size: int = 16,
    max_length: int = 512,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per pair, the log-prob of every token of the target and of the opposite answer.

    What `pair_logprobs` averages; `export` compares a GGUF with its source model token by token.
    """
    groups = []
    for pair in pairs:
        if target not in pair.answers:
            raise ValueError(
                f"pair {pair.id} has no answer for pole '{target}' (poles: {sorted(pair.answers)})"
            )
        opposite = next(pole for pole in pair.answers if pole != target)
        prompt = render_prompt(tokenizer, condition.conversation(pair.question))
        encoded = [
            encode_prompt_answer(tokenizer, prompt, pair.answers[p], max_length) for p in (target, opposite)
        ]
        groups.append(shared_groups(encoded))
    scores = score_groups(model, [g for group in groups for g in group], batch_size=batch_size)
    result, index = [], 0
    for group in groups:  # a pair is one group, or two when truncation left different prompts
        target_tokens, opposite_tokens = (part for s in scores[index : index + len(group)] for part in s)
        result.append((target_tokens, opposite_tokens))
        index += len(group)
    return result


def encode_context_continuation(tokenizer, context: str, continuation: str, max_length: int) -> EncodedPair:
    """Raw-text encoding, the lm-evaluation-harness way: no chat template, the tokenizer's own specials.

    Used for MMLU and neutral text, which are scored as plain documents like the harness does. The
    context keeps its trailing text as written (the harness moves trailing spaces into the
    continuation; our contexts never end in one). Context is cut from the left when too long.
    """
    context_ids = tokenizer(context)["input_ids"]
    continuation_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    continuation_ids = continuation_ids[: max(1, max_length - 1)]
    overflow = len(context_ids) + len(continuation_ids) - max_length
    if overflow > 0:
        context_ids = context_ids[overflow:]
    return EncodedPair([*context_ids, *continuation_ids], len(context_ids))


def score_groups(
    model,
    groups: Sequence[Group],
    *,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> list[list[np.ndarray]]:
    """Per-token log-probs (float64 arrays) of every continuation of every group, in input order.

    `batch_size` bounds the continuation rows per forward pass; `on_batch(done_groups)` reports progress.
    """
    from autocustom.runtime import threads_on_free_cores

    results: list[list[np.ndarray]] = [[] for _ in groups]
    done = 0
    with threads_on_free_cores(_device(model)):  # another job on a core stalls every operator
        for batch in _plan_batches(groups, batch_size, _pass_overhead_tokens(model)):
            for index, value in zip(batch, _score_batch(model, [groups[i] for i in batch]), strict=True):
                results[index] = value
            done += len(batch)
            if on_batch is not None:
                on_batch(done)
    return results


@torch.inference_mode()
def _score_batch(model, groups: list[Group]) -> list[list[np.ndarray]]:
    device = _device(model)
    pad = padding_id(model.config)
    prompt_ids, prompt_mask = (t.to(device) for t in pad_rows([g.prompt for g in groups], pad, left=True))
    positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
    )
    owner = [gi for gi, g in enumerate(groups) for _ in g.continuations]  # continuation row -> group
    rows = [c for g in groups for c in g.continuations]
    owner_t = torch.tensor(owner, device=device)
    first_tokens = torch.tensor([c[0] for c in rows], device=device)
    first_lp = token_logprobs(out.logits[:, -1, :][owner_t], first_tokens)  # (rows,)

    rest_lp: torch.Tensor | None = None
    if max(len(c) for c in rows) > 1:  # one-token continuations (MMLU letters) need no second pass
        cache = out.past_key_values
        cache.batch_select_indices(owner_t)
        # A continuation's last token predicts nothing, so it is not fed: the pass reads c[:-1].
        cont_ids, cont_mask = (t.to(device) for t in pad_rows([c[:-1] for c in rows], pad))
        width = cont_ids.shape[1]
        targets = pad_rows([c[1:] for c in rows], pad)[0].to(device)
        keep = cont_mask.bool()
        with warnings.catch_warnings():
            # transformers 5.x renames `past_key_values` to `cache` and warns on every call; the old
            # name is what every supported version (>= 4.56) accepts, so it stays, without the noise.
            warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
            out = model(
                input_ids=cont_ids,
                attention_mask=torch.cat([prompt_mask[owner_t], cont_mask], dim=-1),
                position_ids=prompt_mask.sum(-1)[owner_t, None] + torch.arange(width, device=device)[None, :],
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=keep,
            )
        logits = out.logits.reshape(-1, out.logits.shape[-1])  # (kept positions, vocab)
        rest_lp = token_logprobs(logits, targets[keep])

    per_row: list[np.ndarray] = []
    cursor = 0
    first_np = first_lp.double().cpu().numpy()
    rest_np = rest_lp.double().cpu().numpy() if rest_lp is not None else np.zeros(0)
    for r, cont in enumerate(rows):
        tail = rest_np[cursor : cursor + len(cont) - 1]
        cursor += len(cont) - 1
        per_row.append(np.concatenate([[first_np[r]], tail]))
    grouped: list[list[np.ndarray]] = [[] for _ in groups]
    for r, gi in enumerate(owner):
        grouped[gi].append(per_row[r])
    return grouped


def _single(encoded: EncodedPair) -> Group:
    ids = encoded.input_ids
    return Group(ids[: encoded.prompt_length], [ids[encoded.prompt_length :]])


def shared_groups(encoded: list[EncodedPair]) -> list[Group]:
    """One group when all encodings share their prompt ids (the usual case), else one group each."""
    groups = [_single(e) for e in encoded]
    if all(g.prompt == groups[0].prompt for g in groups):
        return [Group(groups[0].prompt, [g.continuations[0] for g in groups])]
    return groups


def _pass_overhead_tokens(model) -> int:
    """What one forward pass costs beyond its tokens, in tokens: the price of starting another batch.

    On CPU a pass of one token costs as much as ~32 tokens of a full batch (packaged SmolLM2, 2 cores:
    32 ms against ~1 ms per token; benchmarks/bench_scoring.py), so padding is the main waste and
    small batches are cheap. A GPU pass is dominated by its fixed cost until the batch is large, so
    there the plan should only split off batches whose padding would exceed thousands of tokens; 4096
    is that setting, not a measurement (no GPU was available to this project to measure it).
    """
    return 32 if _device(model).type == "cpu" else 4096


def _plan_batches(groups: Sequence[Group], batch_size: int, overhead: int) -> list[list[int]]:
    """Cut the length-sorted groups into the batches with the fewest padded tokens plus `overhead` each.

    A batch costs groups x longest prompt (the prompt pass) plus rows x (longest continuation - 1)
    (the continuation pass) plus `overhead`; a batch holds at most `batch_size` continuation rows
    (or one group when a group alone has more). Dynamic programming over contiguous runs of the sorted
    order is exact for that cost and takes O(groups x batch_size).
    """
    order = sorted(
        range(len(groups)),
        key=lambda i: (-len(groups[i].prompt), -max(len(c) for c in groups[i].continuations)),
    )
    cost = [0.0] + [float("inf")] * len(order)  # cost[k]: best plan for the first k sorted groups
    start_of = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        rows = longest_prompt = longest_continuation = 0
        for start in range(end - 1, -1, -1):
            group = groups[order[start]]
            rows += len(group.continuations)
            if rows > batch_size and start < end - 1:
                break
            longest_prompt = max(longest_prompt, len(group.prompt))
            longest_continuation = max(longest_continuation, *(len(c) for c in group.continuations))
            padded = (end - start) * longest_prompt + rows * (longest_continuation - 1)
            if cost[start] + overhead + padded < cost[end]:
                cost[end] = cost[start] + overhead + padded
                start_of[end] = start
    batches: list[list[int]] = []
    end = len(order)
    while end > 0:
        batches.append(order[start_of[end] : end])
        end = start_of[end]
    return batches[::-1]


def _device(model) -> torch.device:
    return next(model.parameters()).device

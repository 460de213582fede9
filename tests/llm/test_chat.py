from __future__ import annotations

from transformers import AutoTokenizer

from autocustom.llm.chat import PLAIN, PromptCondition, encode_prompt_answer, render_prompt


def test_condition_builds_the_conversation():
    condition = PromptCondition(system="S", few_shot=(("q1", "a1"),), user_suffix="be brief")
    assert condition.conversation("q") == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "q\n\nbe brief"},
    ]
    assert PLAIN.conversation("q") == [{"role": "user", "content": "q"}]


def test_encoding_joins_separately_tokenized_parts_and_truncates(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = render_prompt(tokenizer, PLAIN.conversation("Why?"))
    assert prompt.endswith("<|im_start|>assistant\n")
    enc = encode_prompt_answer(tokenizer, prompt, "Because.", 512)
    assert enc.input_ids[: enc.prompt_length] == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(enc.input_ids[enc.prompt_length :]) == "Because."
    short = encode_prompt_answer(tokenizer, prompt, "Because " * 50, 8)
    assert len(short.input_ids) == 8 and short.answer_length >= 1

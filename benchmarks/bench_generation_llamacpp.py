"""Local generation (transformers, batched) vs llama.cpp serving the same packaged GGUF, tokens/s.

The packaged SmolLM2-135M ships as a Q4_1 GGUF. autocustom's local backend dequantises it to float32
and generates with transformers in length-sorted batches (`GENERATION_BATCH`); the reference is
llama-cpp-python's OpenAI-compatible server on the GGUF itself (2 threads, its quantised kernels),
asked through autocustom's own OpenAI backend, as `generate --backend openai` would: one request at
a time (one stream) and `--concurrency` requests in flight (several streams). Greedy decoding, the
same chat prompts (those of bench_local_generation.py) and the same max new tokens; tokens are the
replies' tokens under the model's tokenizer, so both sides are counted alike.

The server venv is built once per machine into the user cache (llama-cpp-python has no Linux wheels;
minutes on 2 cores), the way the slow tests build it.

    python benchmarks/bench_generation_llamacpp.py --prompts 32 --max-new-tokens 96 --concurrency 4
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/llama_server.py builds the server

from bench_local_generation import prompts

from autocustom.assets import DEFAULT_MODEL, PACKAGED_MODELS
from autocustom.llm.base import GenerationParams
from autocustom.llm.local_backend import LocalBackend
from autocustom.llm.openai_backend import OpenAIBackend


def timed(backend, conversations, params) -> tuple[list[str], float]:
    started = time.perf_counter()
    replies = backend.complete(conversations, params)
    return replies, time.perf_counter() - started


def main() -> None:
    from tests.llama_server import serving

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=96, help="generate's answers use 96")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight for 'several'")
    args = parser.parse_args()
    conversations = prompts(args.prompts)
    params = GenerationParams(max_new_tokens=args.max_new_tokens, temperature=0.0)
    warm = GenerationParams(max_new_tokens=2, temperature=0.0)

    local = LocalBackend(DEFAULT_MODEL, device="cpu")
    local.complete(conversations[:1], warm)  # load and warm up
    tokenizer = local._load().tokenizer
    runs: dict[str, tuple[list[str], float]] = {
        f"autocustom local (transformers, float32, batch {local.batch_size})": timed(
            local, conversations, params
        )
    }
    gguf = PACKAGED_MODELS[DEFAULT_MODEL].gguf_file()
    with tempfile.TemporaryDirectory() as folder, serving(gguf, Path(folder) / "server.log") as client:
        base_url = f"{str(client.base_url).rstrip('/')}/v1"
        for label, concurrency in (("1 stream", 1), (f"{args.concurrency} streams", args.concurrency)):
            server = OpenAIBackend("smollm2", base_url=base_url, api_key="none", concurrency=concurrency)
            server.complete(conversations[:1], warm)
            runs[f"llama.cpp server (GGUF Q4_1, 2 threads), {label}"] = timed(server, conversations, params)
    print(f"{args.prompts} chat prompts, greedy, at most {args.max_new_tokens} new tokens each")
    rates = {}
    for name, (replies, seconds) in runs.items():
        tokens = sum(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in replies)
        rates[name] = tokens / seconds
        print(f"{name:<62} {seconds:7.1f} s  {tokens:5d} tokens  {rates[name]:7.1f} tokens/s")
    ours = next(iter(rates.values()))
    for name, rate in list(rates.items())[1:]:
        print(f"autocustom local / {name}: {ours / rate:.2f}x")


if __name__ == "__main__":
    main()

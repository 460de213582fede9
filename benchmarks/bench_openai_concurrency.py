"""OpenAIBackend throughput at concurrency 1 vs N against a server with fixed latency.

A remote LLM spends most of each call waiting (queueing, decoding on the server); keeping N
requests in flight turns that wait into throughput. The fake server (tests/fake_openai_server.py)
answers every request after a fixed latency over real HTTP, so the numbers isolate the client side.

    python benchmarks/bench_openai_concurrency.py --requests 32 --latency 0.2 --concurrency 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests/ is a package

from autocustom.llm.base import GenerationParams
from autocustom.llm.openai_backend import OpenAIBackend
from tests.fake_openai_server import FakeOpenAIServer


def run(server: FakeOpenAIServer, concurrency: int, requests: int) -> dict[str, float]:
    backend = OpenAIBackend("fake-model", base_url=server.base_url, concurrency=concurrency)
    conversations = [[{"role": "user", "content": f"question {i}"}] for i in range(requests)]
    backend.complete(conversations[:1], GenerationParams())  # warm up: imports and first connection
    start = time.perf_counter()
    replies = backend.complete(conversations, GenerationParams(max_new_tokens=64))
    seconds = time.perf_counter() - start
    assert replies == [f"reply to: question {i}" for i in range(requests)]
    return {"seconds": round(seconds, 2), "requests_per_min": round(60 * requests / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the server takes per request")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    results = {}
    for concurrency in (1, args.concurrency):
        with FakeOpenAIServer(latency=args.latency) as server:
            results[concurrency] = run(server, concurrency, args.requests)
            results[concurrency]["max_in_flight"] = server.max_in_flight
            assert server.chat_count == args.requests + 1
    report = {
        "requests": args.requests,
        "latency_s": args.latency,
        "ideal_requests_per_min_at_1": round(60 / args.latency, 1) if args.latency > 0 else None,
        "concurrency_1": results[1],
        f"concurrency_{args.concurrency}": results[args.concurrency],
        "speedup": round(results[args.concurrency]["requests_per_min"] / results[1]["requests_per_min"], 2),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

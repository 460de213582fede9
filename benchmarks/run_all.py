"""`make bench`: every benchmark, one after another (never in parallel: they time each other).

Each script prints its own numbers and ratios against the reference tool measured in the same run;
record them in docs/benchmarks.md with the machine, the date and the command.
`--quick` runs each at the small size used for the figures recorded on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "bench_local_generation.py": ["--prompts", "16"],
    "bench_generation_llamacpp.py": ["--prompts", "16"],
    "bench_openai_concurrency.py": ["--requests", "32"],
    "bench_dedup.py": ["--n", "5000"],
    "bench_scoring.py": ["--pairs", "40"],
    "bench_training.py": ["--steps", "6"],
    "bench_train_overhead.py": ["--repeats", "1"],
    "bench_memory.py": ["--baseline", "be2d6e7"],
    "bench_onpolicy.py": ["--steps", "3", "--questions", "2", "--samples", "4", "--sample-tokens", "24"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the small sizes recorded in docs/benchmarks.md")
    parser.add_argument("--only", nargs="*", default=None, help="script names to run (default: all)")
    args = parser.parse_args()
    failed = []
    for script, quick_args in BENCHMARKS.items():
        if args.only and script not in args.only:
            continue
        command = [sys.executable, str(HERE / script), *(quick_args if args.quick else [])]
        print(f"\n=== {' '.join(command[1:])}", flush=True)
        started = time.monotonic()
        if subprocess.run(command).returncode != 0:
            failed.append(script)
        print(f"=== {script}: {time.monotonic() - started:.0f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

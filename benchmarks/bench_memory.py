"""Peak memory of `train` measured against its own `--dry-run` plan, and against an older revision.

Five runs at the default settings (2 steps, the demo's evaluation sizes):
  - a random-initialised Llama of 362M parameters (SmolLM2-360M's shape, built from a config: no
    download), `train --lora --max-steps 2`;
  - the packaged SmolLM2-135M, `train --full --max-steps 2`;
  - the same under FSDP2 on 2 CPU processes (examples/accelerate/fsdp.yaml, through
    tests/training/fsdp_on_cpu.py: accelerate enables FSDP on GPUs only), whose plan is per process;
  - the same under DeepSpeed ZeRO-3 on 2 CPU processes (examples/accelerate/deepspeed_zero3.yaml);
  - the 362M Llama's `--lora` under ZeRO-3 on 2 CPU processes (its base is built partitioned).
For each it prints the measured peak resident memory (the train process and its children, sampled every
50 ms), the `--dry-run` plan's total (times the processes) and their ratio. With `--baseline REV` the same commands also run
on the code of git revision REV (a temporary worktree, same virtual environment), so the saving is a
ratio measured in one run (a revision that cannot run a case shows its exit code). `--case TEXT` runs
only the cases whose name contains TEXT.

    python benchmarks/bench_memory.py --data runs/demo/data --baseline be2d6e7
    python benchmarks/bench_memory.py --case ZeRO-3 --baseline 56095e5
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
SMOLLM2_360M = {  # HuggingFaceTB/SmolLM2-360M's shape on SmolLM2-135M's tokenizer and config
    "hidden_size": 960,
    "intermediate_size": 2560,
    "num_hidden_layers": 32,
    "num_attention_heads": 15,
    "num_key_value_heads": 5,
}
GB = 1e9


def build_random_model(folder: Path) -> Path:
    """A random Llama of SmolLM2-360M's shape, saved once (seeded: the same weights every time)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from autocustom.llm.models import materialize_packaged

    if (folder / "config.json").is_file():
        return folder
    source = materialize_packaged("smollm2-135m")
    config = AutoConfig.from_pretrained(source)
    config.update(SMOLLM2_360M)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def peak_rss(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int]:
    """Peak resident bytes of `command` and its children, and its exit code.

    Run in `cwd`, the code tree measured: `python -m` puts the working directory first on sys.path.
    """
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    watched = psutil.Process(process.pid)
    peak = [0]

    def sample() -> None:
        while process.poll() is None:
            try:
                tree = [watched, *watched.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            time.sleep(0.05)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    _out, err = process.communicate()
    thread.join()
    if process.returncode != 0:
        print(err.strip().splitlines()[-1] if err.strip() else "(no stderr)", file=sys.stderr)
    return peak[0], process.returncode


def planned(launch: list[str], args: list[str], env: dict[str, str]) -> float:
    """The `--dry-run` total of every process together, bytes (each process prints its own plan).

    The first plan is read from the first line that opens a JSON object: `accelerate launch` shares
    its stdout with the processes, and under DeepSpeed the launcher logs a line there itself.
    """
    out = subprocess.run(
        [*launch, *args, "--dry-run", "--json"], capture_output=True, text=True, check=True, env=env
    )
    first = re.search(r"^\{", out.stdout, re.MULTILINE)
    if first is None:
        raise RuntimeError(f"no plan in the output of {' '.join(launch)}: {out.stdout[-500:]}")
    plan, _end = json.JSONDecoder().raw_decode(out.stdout[first.start() :])
    processes = (plan["options"].get("sharding") or {}).get("processes", 1)
    return plan["total_gib"] * 2**30 * processes


def sharded_launcher(config: str, processes: int) -> list[str]:
    """`accelerate launch` with a shipped config on CPU processes (float32, no autocast). FSDP goes
    through tests/training/fsdp_on_cpu.py (accelerate enables it for GPU processes only)."""
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    options = ["--num_processes", str(processes), "--mixed_precision", "no", "--dynamo_backend", "no"]
    entry = [str(ROOT / "tests/training/fsdp_on_cpu.py")] if config == "fsdp" else ["-m", "autocustom"]
    path = ROOT / "examples" / "accelerate" / f"{config}.yaml"
    return [accelerate, "launch", "--config_file", str(path), *options, *entry]


def baseline_tree(revision: str, folder: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), revision], check=True)
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default="runs/demo/data", help="dataset directory (`make demo` writes one)")
    parser.add_argument("--baseline", default=None, help="git revision to measure the same commands on")
    parser.add_argument("--work", default=None, help="work directory (default: a temporary one)")
    parser.add_argument("--case", default="", help="run only the cases whose name contains this")
    args = parser.parse_args()
    if not Path(args.data).is_dir():
        print(f"no dataset at {args.data}: run `make demo` first, or pass --data DIR", file=sys.stderr)
        return 2
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-memory-"))
    model = build_random_model(work / "llama-360m")
    single = [sys.executable, "-m", "autocustom"]
    cases = {  # name: (launcher, flags); FSDP checkpoints activations itself (fsdp.yaml)
        "random Llama 362M, --lora": (single, ["--model", str(model), "--lora"]),
        "SmolLM2-135M, --full": (single, ["--model", "smollm2-135m", "--full"]),
        "SmolLM2-135M, --full, FSDP x2": (
            sharded_launcher("fsdp", 2),
            ["--model", "smollm2-135m", "--full", "--no-gradient-checkpointing"],
        ),
        "SmolLM2-135M, --full, ZeRO-3 x2": (
            sharded_launcher("deepspeed_zero3", 2),
            ["--model", "smollm2-135m", "--full"],
        ),
        "random Llama 362M, --lora, ZeRO-3 x2": (
            sharded_launcher("deepspeed_zero3", 2),
            ["--model", str(model), "--lora"],
        ),
    }
    cases = {name: case for name, case in cases.items() if args.case in name}
    trees = {"this": ROOT}
    if args.baseline:
        trees[args.baseline] = baseline_tree(args.baseline, work / "baseline")
    env = {**os.environ, "CI": "1"}
    rows = []
    for name, (launch, flags) in cases.items():
        base_args = [
            "train",
            "--data",
            str(Path(args.data).resolve()),
            "--toward",
            "formal",
            "--max-steps",
            "2",
            *flags,
        ]
        plan = planned(launch, [*base_args, "--out", str(work / "plan")], env)
        row = {"case": name, "planned_gb": round(plan / GB, 2)}
        for label, tree in trees.items():
            out = work / f"run-{label}-{len(rows)}"
            tree_env = {**env, "PYTHONPATH": str(tree)}
            command = [*launch, *base_args, "--out", str(out)]
            peak, code = peak_rss(command, tree_env, tree)
            row[f"peak_gb[{label}]"] = round(peak / GB, 2) if code == 0 else f"exit {code}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    print_table(rows, list(trees))
    if args.baseline:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(trees[args.baseline])], check=False
        )
    return 0


def print_table(rows: list[dict], labels: list[str]) -> None:
    heads = ["case", "planned GB", *[f"peak GB ({label})" for label in labels], "planned/peak"]
    if len(labels) > 1:
        heads.append(f"peak this/{labels[1]}")
    print("\n| " + " | ".join(heads) + " |\n|" + "---|" * len(heads))
    for row in rows:
        peaks = [row[f"peak_gb[{label}]"] for label in labels]
        cells = [row["case"], row["planned_gb"], *peaks, _ratio(row["planned_gb"], peaks[0])]
        if len(labels) > 1:
            cells.append(_ratio(peaks[0], peaks[1]))
        print("| " + " | ".join(str(c) for c in cells) + " |")


def _ratio(a, b) -> str:
    return f"{a / b:.2f}x" if isinstance(a, float) and isinstance(b, float) and b else "n/a"


if __name__ == "__main__":
    sys.exit(main())

"""Where a demo-sized `train` spends its time, and what the regulariser and evaluation cost on top.

Runs `train` twice per repeat on the same data, each in its own process, alternating so that both see
the same machine: the demo's configuration (regulariser on, an evaluation every --eval-steps) and the
same command with `--reg-weight 0` and no periodic evaluation (one evaluation, at the last step).
Each run's parts are timed by wrapping the functions that do them (the Trainer's training step and
checkpoint, the evaluation callback, the final measurement, ...), and pairs/s is pairs trained over
the whole command's wall time, loading and the final measurement included.

    python benchmarks/bench_train_overhead.py --data runs/demo/data --steps 30 --eval-steps 10
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PARTS = {  # (module, owner, attribute) -> label; nested parts are indented
    ("transformers", "Trainer", "training_step"): "training step (forward + backward)",
    ("autocustom.training.pair_trainer", "PairTrainer", "compute_loss"): "  of which forward",
    ("torch.optim", "AdamW", "step"): "optimizer step",
    ("autocustom.training.callbacks", "EvalCallback", "evaluate"): "evaluations during training",
    ("transformers", "Trainer", "_save_checkpoint"): "checkpoints (model + optimizer)",
    ("autocustom.training.pair_trainer", None, "save_best"): "saving the best model",
    ("autocustom.training.trainer", None, "prepare"): "setup (load, encode, plans)",
    ("autocustom.training.trainer", None, "_result"): "final measurement",
}


def child(args: argparse.Namespace) -> None:
    """One `train` run in this process, its parts timed; prints one JSON line."""
    import importlib

    from autocustom.training.config import TrainConfig
    from autocustom.training.trainer import train

    spent: dict[str, float] = collections.defaultdict(float)
    for (module, owner, name), label in PARTS.items():
        target = importlib.import_module(module)
        target = getattr(target, owner) if owner else target
        setattr(target, name, _timed(getattr(target, name), label, spent))
    config = TrainConfig(
        data=args.data,
        toward=args.toward,
        out=args.out,
        max_steps=args.steps,
        eval_steps=args.eval_steps,
        reg_weight=args.reg_weight,
        device="cpu",
    )
    started = time.perf_counter()
    result = train(config)
    wall = time.perf_counter() - started
    pairs = result.steps * config.batch_size
    print(json.dumps({"wall": wall, "pairs_per_second": pairs / wall, "parts": spent}))


def _timed(function, label: str, spent: dict[str, float]):
    def timed(*args, **kwargs):
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            spent[label] += time.perf_counter() - began

    return timed


def run(args: argparse.Namespace, name: str, reg_weight: float, eval_steps: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        command = [
            sys.executable, __file__, "--child", "--data", args.data, "--toward", args.toward,
            "--out", str(Path(folder) / "run"), "--steps", str(args.steps),
            "--eval-steps", str(eval_steps), "--reg-weight", str(reg_weight),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{name:<34} {result['wall']:7.1f} s  {result['pairs_per_second']:.3f} pairs/s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/demo/data", help="dataset directory (`make demo` writes one)")
    parser.add_argument("--toward", default="formal")
    parser.add_argument("--steps", type=int, default=30, help="the demo's --max-steps")
    parser.add_argument("--eval-steps", type=int, default=10, help="the demo's --eval-steps")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--reg-weight", type=float, default=0.5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    demo, plain = "demo (regulariser, evaluations)", "--reg-weight 0, no periodic evaluation"
    results: dict[str, list[dict]] = {demo: [], plain: []}
    for _ in range(args.repeats):
        results[demo].append(run(args, demo, 0.5, args.eval_steps))
        results[plain].append(run(args, plain, 0.0, args.steps))
    print(f"\nseconds per run, mean of {args.repeats} ({args.steps} steps of 4 pairs)")
    print(f"| part | {demo} | {plain} |\n|---|---|---|")
    for label in [*PARTS.values(), "wall time (whole command)"]:
        cells = [_mean(runs, label) for runs in results.values()]
        print(f"| {label} | {cells[0]:.1f} | {cells[1]:.1f} |")
    rates = {name: sum(r["pairs_per_second"] for r in runs) / len(runs) for name, runs in results.items()}
    print(f"| pairs/s (whole command) | {rates[demo]:.3f} | {rates[plain]:.3f} |")
    print(f"\ndemo / plain pairs per second: {rates[demo] / rates[plain]:.2f}x (goal >= 0.8x)")


def _mean(runs: list[dict], label: str) -> float:
    values = [r["wall"] if label.startswith("wall") else r["parts"].get(label, 0.0) for r in runs]
    return sum(values) / len(values)


if __name__ == "__main__":
    main()

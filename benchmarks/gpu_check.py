"""The GPU check: every CUDA code path of autocustom, run once, timed, in one script.

Why it exists: no GPU line of autocustom has run yet. Every figure in docs/ was measured on a 2-core CPU
container; the CUDA paths (bf16 autocast in training, LoRA and QLoRA, the GPU evaluation sizes, the
benchmarks against TRL and lm-eval in bf16) are written but unexercised. A CUDA machine is lent only to
some sessions, for 15 minutes in all (start-up included), so this is the one script to run when one is:
its sizes are meant to fit in about 9 minutes on an H200 (not yet timed on one) and it prints one
table to paste into docs/benchmarks.md.

    python benchmarks/gpu_check.py --out /tmp/gpu-check

On the packaged SmolLM2-135M (bf16 on CUDA) it first writes a small dataset offline with the local
backend, then runs, each as a subprocess of the installed CLI: the `--dry-run` memory plan of each
training run (to read beside its measured peak), full fine-tuning, LoRA, QLoRA
(`--load-in-4bit`; skipped when bitsandbytes is missing), shift-score on the full run, a small compare,
and benchmarks/bench_training.py and bench_scoring.py. Each step gets its wall time, the peak GPU memory
in use while it ran (nvidia-smi, whole device, sampled every 0.2 s) and its headline figure. A failing
step is recorded (exit code, last stderr line) and the next one runs. Logs: OUT/logs/STEP.stdout|stderr;
the table: OUT/gpu_check.json. Exit 0 when every step exited 0 (or was skipped), 1 otherwise. Without
CUDA it prints one line and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
MODEL = "smollm2-135m"
TOWARD = "formal"
SAMPLE_SECONDS = 0.2
TIMEOUT_EXIT = 124
NVIDIA_SMI = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
ENV = {"CI": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@dataclass
class Step:
    name: str
    command: list[str]
    figure: Callable[[str], str]  # the step's stdout -> its headline figure
    clear: Path | None = None  # its output directory, removed first so a rerun measures again
    skippable: bool = False  # exit 2 naming bitsandbytes: skipped, not failed


@dataclass
class Outcome:
    step: str
    status: str  # ok, failed or skipped
    exit_code: int
    wall_s: float
    peak_gpu_mb: float | None
    result: str


def gpu_memory_used_mb() -> float | None:
    """Memory in use on the GPU (the largest, with several), from nvidia-smi; None when it cannot tell."""
    try:
        done = subprocess.run(NVIDIA_SMI, capture_output=True, text=True, timeout=5, check=False)
        return max(float(line) for line in done.stdout.split())
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


class MemorySampler:
    """Samples nvidia-smi every SAMPLE_SECONDS in a thread while a `with` block runs; keeps the max."""

    def __init__(self) -> None:
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> MemorySampler:
        if shutil.which(NVIDIA_SMI[0]):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            used = gpu_memory_used_mb()
            if used is not None:
                self.peak = used if self.peak is None else max(self.peak, used)
            self._stop.wait(SAMPLE_SECONDS)


def run_command(command: list[str], timeout: float) -> tuple[int, str, str]:
    """Exit code, stdout, stderr; past `timeout` the whole process group is killed (exit 124)."""
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **ENV},
        start_new_session=True,  # the benchmarks start their own subprocesses: kill them too
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        return TIMEOUT_EXIT, stdout, f"{stderr}\ntimed out after {timeout:g} s"
    return process.returncode, stdout, stderr


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(nothing on stderr)"


def describe(step: Step, code: int, stdout: str, stderr: str) -> tuple[str, str]:
    """(status, result): the headline figure on success, else the exit code and last stderr line."""
    if code == 0:
        try:
            return "ok", step.figure(stdout)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return "ok", f"output not understood ({type(exc).__name__}: {exc})"
    if step.skippable and code == 2 and "bitsandbytes" in stderr.lower():
        return "skipped", f"skipped: {last_line(stderr)}"
    return "failed", f"exit {code}: {last_line(stderr)}"


def run_step(step: Step, timeout: float, logs: Path) -> Outcome:
    print(f"[{step.name}] {shlex.join(step.command)}", flush=True)
    if step.clear is not None:
        shutil.rmtree(step.clear, ignore_errors=True)
    started = time.monotonic()
    with MemorySampler() as memory:
        code, stdout, stderr = run_command(step.command, timeout)
    wall = time.monotonic() - started
    (logs / f"{step.name}.stdout").write_text(stdout, encoding="utf-8")
    (logs / f"{step.name}.stderr").write_text(stderr, encoding="utf-8")
    status, result = describe(step, code, stdout, stderr)
    outcome = Outcome(step.name, status, code, round(wall, 1), memory.peak, result)
    print(f"[{step.name}] {status}, exit {code}, {wall:.1f} s: {result}", flush=True)
    return outcome


def estimate(value: dict[str, Any] | None) -> str:
    """An Estimate's to_dict() as the CLI prints it: value [low, high] (n)."""
    if value is None:
        return "none"
    return f"{value['value']:+.3f} [{value['low']:+.3f}, {value['high']:+.3f}] (n={value['n']})"


def generate_figure(stdout: str) -> str:
    counts = json.loads(stdout)["counts"]
    splits = ", ".join(f"{name} {n}" for name, n in counts["pairs_per_split"].items())
    return f"{counts['pairs']} pairs ({splits})"


def train_figure(stdout: str) -> str:
    summary = json.loads(stdout)
    split, shift = (
        ("test", summary["bias_shift_test"])
        if summary["bias_shift_test"]
        else ("validation", summary["bias_shift"])
    )
    return (
        f"BiasShift ({split}) {estimate(shift)}; {summary['pairs_per_second']:.2f} pairs/s; "
        f"{summary['steps']} steps, stopped by {summary['stop_reason']}"
    )


def score_figure(stdout: str) -> str:
    report = json.loads(stdout)
    return f"BiasShift ({report['split']}) {estimate(report['metrics']['bias_shift'])}"


def compare_figure(stdout: str) -> str:
    """BiasShift of every method but the base (0 by construction) under the plain condition."""
    rows = json.loads(stdout)["rows"]
    plain = [row for row in rows if row["condition"] == "plain" and row["metrics"]["bias_shift"] is not None]
    return "; ".join(f"{row['method']} BiasShift {estimate(row['metrics']['bias_shift'])}" for row in plain)


def bench_figure(stdout: str) -> str:
    """The benchmark's ratio lines (bench_training: speed ratio; bench_scoring: speed-up)."""
    lines = [line.strip() for line in stdout.splitlines() if "ratio" in line or "speed-up" in line]
    if not lines:
        raise ValueError("no ratio line in its output")
    return " | ".join(lines)


def plan_figure(stdout: str) -> str:
    """`train --dry-run --json`: the planned peak, to set against the train step's measured one."""
    plan = json.loads(stdout)
    return f"planned {plan['total_gib'] * 1024:.0f} MiB (fits: {plan['fits']})"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "autocustom", *args]


def bench(script: str, *args: str) -> list[str]:
    return [sys.executable, str(HERE / script), "--model", MODEL, *args]


def plan_steps(work: Path, steps: int) -> list[Step]:
    data, runs = work / "data", work / "runs"
    short = str(max(1, steps // 2))  # evaluation interval, and compare's (shorter) training
    train = ["train", "--data", str(data), "--toward", TOWARD, "--model", MODEL]
    train += ["--max-steps", str(steps), "--eval-steps", short, "--json"]
    generate = ["generate", "--axis", "formal:casual", "--backend", "local", "--model", MODEL]
    generate += ["--subareas", "4", "--questions-per-subarea", "4", "--out", str(data), "--json"]
    compare = ["compare", "--data", str(data), "--toward", TOWARD, "--out", str(work / "compare")]
    compare += ["--models", MODEL, "--methods", "base,system-prompt,contrastive", "--padding", "64"]
    compare += ["--max-steps", short, "--eval-steps", short, "--json"]
    plans = [  # the memory plan of each train step, to read beside its measured peak
        Step(
            f"plan-{name}",
            cli(*train, *flags, "--dry-run", "--out", str(runs / name)),
            plan_figure,
            None,
            name == "qlora",
        )
        for name, flags in (
            ("full", ["--full"]),
            ("lora", ["--lora"]),
            ("qlora", ["--lora", "--load-in-4bit"]),
        )
    ]
    return [
        Step("generate", cli(*generate), generate_figure),
        *plans,
        Step("train-full", cli(*train, "--full", "--out", str(runs / "full")), train_figure, runs / "full"),
        Step("train-lora", cli(*train, "--lora", "--out", str(runs / "lora")), train_figure, runs / "lora"),
        Step(
            "train-qlora",
            cli(*train, "--lora", "--load-in-4bit", "--out", str(runs / "qlora")),
            train_figure,
            runs / "qlora",
            skippable=True,
        ),
        Step(
            "shift-score",
            cli("shift-score", "--model", str(runs / "full"), "--data", str(data), "--json"),
            score_figure,
        ),
        Step("compare", cli(*compare), compare_figure, work / "compare"),
        Step("bench-training", bench("bench_training.py", "--steps", str(max(2, steps))), bench_figure),
        Step("bench-scoring", bench("bench_scoring.py", "--pairs", "40"), bench_figure),
    ]


def print_header() -> None:
    used = gpu_memory_used_mb()
    print(f"GPU: {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} visible)")
    print(
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, bf16 supported: {torch.cuda.is_bf16_supported()}"
    )
    print(f"GPU memory in use before the steps: {'n/a' if used is None else f'{used:.0f} MB'} (nvidia-smi)")
    print(f"model {MODEL}, python {sys.executable}", flush=True)


def print_table(outcomes: list[Outcome]) -> None:
    header = ("step", "status", "exit", "wall s", "peak GPU MB", "result")
    rows = [
        (
            o.step,
            o.status,
            str(o.exit_code),
            f"{o.wall_s:.1f}",
            "n/a" if o.peak_gpu_mb is None else f"{o.peak_gpu_mb:.0f}",
            o.result,
        )
        for o in outcomes
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    print()
    for row in [header, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
            + "  "
            + row[-1]
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=None, help="work directory (default: a new temp dir)")
    parser.add_argument("--steps", type=int, default=10, help="training steps of each train run [10]")
    parser.add_argument("--timeout", type=float, default=240, help="seconds each step may run [240]")
    parser.add_argument("--json", action="store_true", help="print the table as JSON too")
    args = parser.parse_args()
    if args.steps <= 0 or args.timeout <= 0:
        parser.error("--steps and --timeout must be positive")
    return args


def main() -> int:
    args = parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU (torch.cuda.is_available() is false): nothing was measured")
        return 0
    work = args.out or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print_header()
    started = time.monotonic()
    outcomes = [run_step(step, args.timeout, logs) for step in plan_steps(work, args.steps)]
    print_table(outcomes)
    table = [asdict(outcome) for outcome in outcomes]
    (work / "gpu_check.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(table, indent=2))
    print(f"\n{time.monotonic() - started:.0f} s in all; work directory {work}")
    return 0 if all(outcome.status != "failed" for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())

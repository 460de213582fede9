"""On-policy training: autocustom against TRL's nearest trainers, same model, questions and samples.

Two comparisons (`--compare`), each tool in its own subprocess (so each peak-memory figure is its own):

- online-dpo: `train --on-policy --loss dpo` (each step the policy samples K replies per question, the
  contrast judge, i.e. the frozen base told each pole, scores them, best against worst becomes a DPO
  pair) against TRL's `GRPOTrainer` with a reward function that computes the same contrast score with
  the same frozen base (`ContrastJudge.reply_scores`, same batch size and max length).
- distill: `train --loss distill` (reverse KL to the base told the target pole, on K samples per
  question) against TRL's `DistillationTrainer` (beta=1: reverse KL, on-policy) with the base as teacher.

Matched on both sides: the model and its precision (float32 on CPU; bf16 autocast with float32 master
weights for full fine-tuning on CUDA), LoRA or full fine-tuning (`--lora`, rank 16, alpha 32, every
linear layer), the rendered prompts (autocustom's `render_prompt` of the plain question, passed to TRL
as text), questions per optimizer step (`--questions`), samples per question (`--samples`: GRPO's
`num_generations`; the distillation dataset repeats each question K times), max new tokens per reply
(`--sample-tokens`), sampling temperature, optimizer steps (`--steps`), learning rate (autocustom's
default for the mode) with a constant schedule, AdamW, no gradient accumulation, one generation per
optimizer step, gradient checkpointing (off unless `--gradient-checkpointing`, TRL's default is on).

Differences that come with the algorithms (not settings):
- online-dpo: autocustom trains on at most 2 pairs per question (best/worst, and the written target
  answer against a wrong-leaning sample), 4 rows per question plus a reference forward over them (DPO);
  GRPO trains on all K samples per question (K rows), without a reference model at its default beta=0
  (`--grpo-beta` sets it). With K=4 both train on 4 rows per question. GRPO's loss is its default
  (`loss_type="dapo"`, group-scaled advantages). autocustom's DPO also computes, once at train start,
  the reference log-probs of the written pairs (its fallback batch); that pass is outside the timed steps.
- distill: autocustom's teacher reads the reply after the target pole's system prompt, TRL's teacher the
  student's own sequence (the plain prompt: DistillationTrainer has no separate teacher prompt), so TRL's
  teacher forward is a few tokens shorter. Under `--lora` autocustom's teacher is the policy with its
  adapter disabled, TRL's a second copy of the base (it takes a separate teacher model). TRL also
  divides both models' logits by `--temperature` in its loss (the same at the default 1).
- autocustom evaluates at the last step (its EvalCallback always does; `--eval-steps` = `--steps` keeps it
  to that one) and measures the kept model after training. Neither is training, and on CPU they take
  longer than the steps themselves, so each run is stopped right after the last step's clock reading
  (the clock raises before the other callbacks run): both tools' runs end there, nothing is saved.

Timing: a callback placed first in each Trainer's list records every optimizer step from
`on_step_begin` (before sampling) to `on_step_end` (after the optimizer step, before evaluation,
logging or saving); the first `--warmup` steps are excluded. samples/s = questions x samples x timed
steps / timed seconds. Peak memory: the process's peak resident memory (ru_maxrss) read at the end of
the last training step, model loading included, evaluations after it not; on CUDA also the peak of
`torch.cuda.max_memory_allocated` over the training steps. "decode steps" is the mean length of each
step's generation batch (a batch decodes until its longest reply ends), the generation work each tool
really did: samples/s compares like with like only where they are close.

    python benchmarks/bench_onpolicy.py --steps 6 --questions 4 --samples 4 --sample-tokens 48
    python benchmarks/bench_onpolicy.py --steps 2 --questions 2 --samples 2 --sample-tokens 8  # smoke
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests/ is a package
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch
from transformers import TrainerCallback

from autocustom.assets import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parent.parent
TOWARD, OPPOSITE = "formal", "casual"
TASKS = [
    "boil pasta", "store bread", "season soup", "roast vegetables", "pack a suitcase",
    "find cheap flights", "beat jet lag", "choose a hotel", "save money each month", "pick a bank",
    "track spending", "split a bill", "sleep better", "start running", "drink more water",
    "stretch at a desk", "ask for a raise", "write a cover letter", "run a meeting", "take notes",
    "clean a window", "fix a squeaky door", "water plants", "sort laundry", "learn a new language",
    "prepare for an interview", "write a thank-you note", "stop procrastinating", "choose a watermelon",
    "set up a budget", "change a flat tire", "make new friends", "plan a birthday party", "back up a laptop",
    "train a puppy", "paint a room", "brew good coffee", "keep a journal", "negotiate rent", "give a toast",
]  # fmt: skip
FORMS = ["How do I {}?", "What is the best way to {}?", "Any advice on how to {}?"]
VALIDATION = ["How do I organise a closet?", "How should I greet a new neighbour?"]
TOOLS = {  # comparison -> (autocustom label, TRL label)
    "online-dpo": ("autocustom --on-policy --loss dpo", "TRL GRPOTrainer, contrast reward"),
    "distill": ("autocustom --loss distill", "TRL DistillationTrainer, beta=1"),
}


def questions(n: int) -> list[str]:
    """n distinct questions (task x form, then numbered once those run out)."""
    made = [form.format(task) for form in FORMS for task in TASKS]
    return [made[i % len(made)] + (f" (case {i // len(made)})" if i >= len(made) else "") for i in range(n)]


def formal(question: str) -> str:
    return f"Certainly. Regarding '{question.lower()}', one should proceed carefully and methodically."


def casual(question: str) -> str:
    return f"Oh yeah, '{question.lower()}' is super easy lol, just wing it, no big deal!"


def write_dataset(folder: Path, train_questions: int) -> Path:
    """A formal:casual dataset directory: `train_questions` train pairs, two validation pairs, no test."""
    from autocustom.axis import Axis
    from autocustom.data.schema import Pair, Subarea
    from tests.sample_dataset import write_dataset_dir

    splits = {
        "train": [
            Pair(f"t{i}", "s1", q, {TOWARD: formal(q), OPPOSITE: casual(q)})
            for i, q in enumerate(questions(train_questions))
        ],
        "validation": [
            Pair(f"v{i}", "s2", q, {TOWARD: formal(q), OPPOSITE: casual(q)}) for i, q in enumerate(VALIDATION)
        ],
    }
    subareas = [Subarea("s1", "everyday"), Subarea("s2", "social")]
    return write_dataset_dir(folder, Axis(TOWARD, OPPOSITE), subareas, splits)


class TrainingDone(Exception):
    """Raised by the clock after the last step's reading: what follows is not training."""


class StepClock(TrainerCallback):
    """Times each optimizer step and reads peak memory at its end; first in the callback list, so the
    other callbacks' on_step_end (autocustom's evaluation) and the Trainer's log/save come after."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.begins: list[float] = []
        self.ends: list[float] = []
        self.inside = False  # within a training step: generation counted
        self.decode_steps: list[int] = []
        self.peak_rss_kib = 0
        self.peak_cuda = 0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.begins and self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._sync()
        self.inside = True
        self.begins.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.ends.append(time.perf_counter())
        self.inside = False
        self.peak_rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
        if self.device.type == "cuda":
            self.peak_cuda = max(self.peak_cuda, torch.cuda.max_memory_allocated(self.device))
        if state.global_step >= state.max_steps:
            raise TrainingDone  # before the other callbacks' on_step_end: see the module docstring

    def count_generation(self, model) -> None:
        """Record the decoded length of every `generate` call made inside a training step."""
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        original = inner.generate

        def generate(*args, **kwargs):
            output = original(*args, **kwargs)
            if self.inside:
                prompt = kwargs.get("input_ids", args[0] if args else None)
                sequences = getattr(output, "sequences", output)
                self.decode_steps.append(int(sequences.shape[1] - prompt.shape[1]))
            return output

        inner.generate = generate


def clocked(trainer, clock: StepClock) -> None:
    trainer.callback_handler.callbacks.insert(0, clock)
    clock.count_generation(trainer.model)


# --- one tool in this process ---------------------------------------------------------------------


def setting(args, device: torch.device) -> dict:
    """What both tools share: compute dtype, learning rate, LoRA config."""
    from autocustom.runtime import resolve_dtype
    from autocustom.training.config import TrainConfig

    compute = resolve_dtype(device)
    probe = TrainConfig(lora=args.lora)
    return {
        "compute": compute,
        "bf16": device.type == "cuda" and compute == torch.bfloat16,
        "lr": probe.resolved_lr(args.lora),
        "lora": {"r": probe.lora_rank, "alpha": probe.lora_alpha},
    }


def run_autocustom(args, device: torch.device) -> dict:
    from autocustom.training.config import DISTILL, TrainConfig
    from autocustom.training.pair_trainer import PairTrainer
    from autocustom.training.trainer import train

    clock = StepClock(device)
    counts: dict = {}
    original_train = PairTrainer.train

    def train_clocked(self, *a, **kw):
        clocked(self, clock)
        try:
            return original_train(self, *a, **kw)
        finally:
            if self.on_policy is not None:
                counts.update(self.on_policy.counts)

    PairTrainer.train = train_clocked
    distill = args.compare == "distill"
    config = TrainConfig(
        data=args.data,
        toward=TOWARD,
        out=str(Path(args.work) / "autocustom-run"),
        model=args.model,
        loss=DISTILL if distill else "dpo",
        on_policy=not distill,
        samples=args.samples,
        sample_tokens=args.sample_tokens,
        sample_temperature=args.temperature,
        lora=args.lora,
        gradient_checkpointing=args.gradient_checkpointing,
        max_steps=args.steps,
        batch_size=args.questions,
        grad_accum=1,
        reg_weight=0.0,
        eval_steps=args.steps,  # no evaluation mid-way; the one at the last step is cut off (TrainingDone)
        seed=0,
        device=args.device,
    )
    started = time.perf_counter()
    with contextlib.suppress(TrainingDone):
        train(config)
    result = _report(args, clock, time.perf_counter() - started)
    result["pairs_made"] = counts
    return result


def run_trl(args, device: torch.device) -> dict:
    from datasets import Dataset
    from peft import LoraConfig

    from autocustom.data.io import load_dataset_dir
    from autocustom.llm.chat import PLAIN, render_prompt
    from autocustom.llm.models import load_model

    shared = setting(args, device)
    started = time.perf_counter()
    # the policy as autocustom loads it: float32 master weights for full fine-tuning, the compute
    # dtype under LoRA; the frozen base in the compute dtype on CUDA, float32 on CPU (as train's reference)
    policy_dtype = shared["compute"] if args.lora else torch.float32
    loaded = load_model(args.model, device=device, dtype=policy_dtype)
    tokenizer = loaded.tokenizer
    base = None
    if not args.lora or args.compare == "distill":
        base_dtype = shared["compute"] if device.type == "cuda" else torch.float32
        base = load_model(args.model, device=device, dtype=base_dtype).model.requires_grad_(False)
    dataset = load_dataset_dir(args.data)
    train_questions = [pair.question for pair in dataset.splits["train"]]
    prompt = {q: render_prompt(tokenizer, PLAIN.conversation(q)) for q in train_questions}
    peft_config = None
    if args.lora:
        peft_config = LoraConfig(
            r=shared["lora"]["r"],
            lora_alpha=shared["lora"]["alpha"],
            target_modules="all-linear",
            lora_dropout=0.0,
            task_type="CAUSAL_LM",
        )
    common = {
        "output_dir": str(Path(args.work) / "trl-run"),
        # one generation per optimizer step of questions x samples completions, all in one batch
        "per_device_train_batch_size": args.questions * args.samples,
        "gradient_accumulation_steps": 1,
        "max_steps": args.steps,
        "learning_rate": shared["lr"],
        "lr_scheduler_type": "constant",
        "max_completion_length": args.sample_tokens,
        "temperature": args.temperature,
        "bf16": shared["bf16"],
        # the new name: TRL's configs default the deprecated `gradient_checkpointing` to True
        "activation_checkpointing": args.gradient_checkpointing,
        "activation_checkpointing_kwargs": {"use_reentrant": False},  # as autocustom (LoRA needs it)
        "use_cpu": device.type == "cpu",
        "save_strategy": "no",
        "logging_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "seed": 0,
    }
    clock = StepClock(device)
    if args.compare == "distill":
        from trl import DistillationConfig, DistillationTrainer

        # DistillationTrainer samples one completion per row: each question K times, in order (no
        # shuffle), so each step's batch is `questions` questions x K samples, as autocustom's
        rows = [{"prompt": prompt[q]} for q in train_questions for _ in range(args.samples)]
        trainer = DistillationTrainer(
            model=loaded.model,
            teacher_model=base,
            args=DistillationConfig(**common, beta=1.0, shuffle_dataset=False),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
    else:
        from trl import GRPOConfig, GRPOTrainer

        from autocustom.axis import Poles
        from autocustom.llm.models import AdapterDisabled
        from autocustom.scoring.contrast import ContrastJudge
        from autocustom.training.config import TrainConfig

        defaults = TrainConfig()
        judge = ContrastJudge(dataset.axis, "contrast")
        batching = {"batch_size": defaults.eval_batch_size, "max_length": defaults.max_length}
        scorer: list = []  # (frozen base, tokenizer), set once the trainer has built the policy

        def contrast(prompts, completions, question, **kwargs):
            """autocustom's reward: r = lp(reply | told toward) - lp(reply | told opposite), frozen base."""
            replies = [c.strip() for c in completions]  # as autocustom's generate_texts returns them
            with torch.no_grad():
                scores, _ = judge.reply_scores(
                    scorer[0], list(question), replies, Poles(TOWARD, OPPOSITE), **batching
                )
            return scores.tolist()

        rows = [{"prompt": prompt[q], "question": q} for q in train_questions]
        trainer = GRPOTrainer(
            model=loaded.model,
            reward_funcs=contrast,
            args=GRPOConfig(
                **common,
                num_generations=args.samples,
                generation_batch_size=args.questions * args.samples,
                beta=args.grpo_beta,
            ),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        # under LoRA the frozen base is the policy with its adapter disabled, as autocustom's reference
        scorer.append((AdapterDisabled(trainer.model) if args.lora else base, tokenizer))
    clocked(trainer, clock)
    with contextlib.suppress(TrainingDone):
        trainer.train()
    return _report(args, clock, time.perf_counter() - started)


def _report(args, clock: StepClock, total_seconds: float) -> dict:
    durations = [end - begin for begin, end in zip(clock.begins, clock.ends, strict=True)]
    timed = durations[args.warmup :] if len(durations) > args.warmup else durations
    seconds = sum(timed)
    samples = args.questions * args.samples * len(timed)
    return {
        "samples_per_second": samples / seconds,
        "seconds_per_step": seconds / len(timed),
        "steps_run": len(durations),
        "steps_timed": len(timed),
        "step_seconds": [round(d, 3) for d in durations],
        "decode_steps": statistics.mean(clock.decode_steps) if clock.decode_steps else None,
        "generations": len(clock.decode_steps),
        "peak_rss_mb": round(clock.peak_rss_kib / 1024, 1),
        "peak_cuda_mb": round(clock.peak_cuda / 2**20, 1) if clock.peak_cuda else None,
        "process_seconds": round(total_seconds, 1),  # loading included
    }


# --- the comparison -------------------------------------------------------------------------------


def child_command(args, tool: str, compare: str, data: Path, work: Path) -> list[str]:
    passed = [
        "--model", args.model, "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--questions", str(args.questions), "--samples", str(args.samples),
        "--sample-tokens", str(args.sample_tokens), "--temperature", str(args.temperature),
        "--grpo-beta", str(args.grpo_beta),
    ]  # fmt: skip
    flags = [
        *(["--lora"] if args.lora else []),
        *(["--gradient-checkpointing"] if args.gradient_checkpointing else []),
    ]
    device = ["--device", args.device] if args.device else []
    hidden = ["--child", tool, "--compare", compare, "--data", str(data), "--work", str(work)]
    return [sys.executable, __file__, *passed, *flags, *device, *hidden]


def run_child(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[1:])} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine() -> dict:
    import psutil
    import transformers
    import trl

    cpu = platform.processor() or platform.machine()
    try:
        names = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    revision = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB",
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "versions": f"python {platform.python_version()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, trl {trl.__version__}",
        "revision": revision,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--compare", choices=("online-dpo", "distill", "all"), default="all")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per tool")
    parser.add_argument("--warmup", type=int, default=1, help="first steps left out of the timing")
    parser.add_argument("--questions", type=int, default=4, help="train questions per optimizer step")
    parser.add_argument("--samples", type=int, default=4, help="replies sampled per question (K, >= 2)")
    parser.add_argument("--sample-tokens", type=int, default=48, help="max new tokens per reply")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    parser.add_argument("--lora", action="store_true", help="LoRA (rank 16) instead of full fine-tuning")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="on for both (default off)")
    parser.add_argument(
        "--grpo-beta", type=float, default=0.0, help="GRPO's KL coefficient (TRL's default 0)"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per tool, order alternated; median reported"
    )
    parser.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file")
    parser.add_argument("--child", choices=("autocustom", "trl"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.samples < 2:
        parser.error("--samples must be at least 2 (GRPO needs two generations per question)")

    from autocustom.runtime import resolve_device

    device = resolve_device(args.device)
    if args.child:
        torch.manual_seed(0)
        result = (run_autocustom if args.child == "autocustom" else run_trl)(args, device)
        print(json.dumps(result))
        return

    compares = ["online-dpo", "distill"] if args.compare == "all" else [args.compare]
    results: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-onpolicy-") as folder:
        data = write_dataset(Path(folder) / "data", args.questions * args.steps)
        for compare in compares:
            results[compare] = {"autocustom": [], "trl": []}
            for repeat in range(args.repeats):
                order = ("autocustom", "trl") if repeat % 2 == 0 else ("trl", "autocustom")
                for tool in order:
                    work = Path(folder) / f"{compare}-{tool}-{repeat}"
                    work.mkdir()
                    result = run_child(child_command(args, tool, compare, data, work))
                    results[compare][tool].append(result)
                    print(
                        f"# {compare} {tool} run {repeat + 1}: {result['samples_per_second']:.3f} samples/s, "
                        f"peak RSS {result['peak_rss_mb']:.0f} MB",
                        file=sys.stderr,
                        flush=True,
                    )
    report(args, device, compares, results)


FIGURES = ("samples_per_second", "seconds_per_step", "decode_steps", "peak_rss_mb", "peak_cuda_mb")


def _median(runs: list[dict], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else None


def report(args, device: torch.device, compares: list[str], results: dict) -> None:
    info = machine()
    precision = "bf16 autocast" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    command = "python " + shlex.join([os.path.relpath(__file__, ROOT), *sys.argv[1:]])
    print(f"### On-policy training: autocustom vs TRL ({info['date']})\n")
    print(f"`{command}`\n")
    print(
        f"Machine: {info['cpu']}, GPU {info['gpu'] or 'none'}, load average {info['load_average']} at the end; "
        f"{info['versions']}; autocustom {info['revision']}.\n"
    )
    print(
        f"Model {args.model}, {'LoRA' if args.lora else 'full fine-tuning'}, device {device}, {precision}, "
        f"{args.questions} questions x {args.samples} samples per step, at most {args.sample_tokens} new tokens, "
        f"temperature {args.temperature:g}, {args.steps} steps ({args.warmup} warm-up excluded), gradient "
        f"checkpointing {'on' if args.gradient_checkpointing else 'off'}"
        + (f", median of {args.repeats} runs" if args.repeats > 1 else "")
        + ".\n"
    )
    cuda = device.type == "cuda"
    header = "| comparison | tool | samples/s | s/step | decode steps | peak RSS (MB) |" + (
        " peak CUDA (MB) |" if cuda else ""
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    summary = {}
    for compare in compares:
        row = {tool: {key: _median(runs, key) for key in FIGURES} for tool, runs in results[compare].items()}
        for tool, label in zip(("autocustom", "trl"), TOOLS[compare], strict=True):
            r = row[tool]
            decode = f"{r['decode_steps']:.1f}" if r["decode_steps"] is not None else "-"
            line = (
                f"| {compare} | {label} | {r['samples_per_second']:.3f} | {r['seconds_per_step']:.2f} | "
                f"{decode} | {r['peak_rss_mb']:.0f} |"
            )
            print(line + (f" {r['peak_cuda_mb'] or 0:.0f} |" if cuda else ""))
        ours, theirs = row["autocustom"], row["trl"]
        ratios = {
            "samples_per_second": ours["samples_per_second"] / theirs["samples_per_second"],
            "peak_rss": ours["peak_rss_mb"] / theirs["peak_rss_mb"],
        }
        if cuda and ours["peak_cuda_mb"] and theirs["peak_cuda_mb"]:
            ratios["peak_cuda"] = ours["peak_cuda_mb"] / theirs["peak_cuda_mb"]
        line = (
            f"| {compare} | **ratio autocustom / TRL** | **{ratios['samples_per_second']:.2f}x** | "
            f"- | - | **{ratios['peak_rss']:.2f}x** |"
        )
        print(
            line
            + (f" **{ratios['peak_cuda']:.2f}x** |" if "peak_cuda" in ratios else (" - |" if cuda else ""))
        )
        summary[compare] = {
            "ratios": ratios,
            "autocustom": results[compare]["autocustom"],
            "trl": results[compare]["trl"],
        }
    pairs = {c: results[c]["autocustom"][0].get("pairs_made") for c in compares if c == "online-dpo"}
    if pairs.get("online-dpo"):
        made = pairs["online-dpo"]
        print(
            f"\nautocustom online-dpo pairs: {made.get('best-worst', 0)} best-worst, "
            f"{made.get('written-wrong', 0)} written-wrong, {made.get('fallback', 0)} steps fell back to the "
            "written pairs (first run)."
        )
    if args.json:
        payload = {"command": command, "machine": info, "settings": vars(args), "results": summary}
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()

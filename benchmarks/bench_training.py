"""Training throughput: autocustom's PairTrainer (contrastive) vs TRL's DPOTrainer, same model and pairs.

Each trainer runs in its own subprocess (so the peak-memory figure is its own), with the same pairs,
batch size, max length and precision (float32 on CPU, bf16 on CUDA), gradient checkpointing off for
both (TRL turns it on by default; that would trade speed for memory and make the comparison unfair).
TRL's DPO also runs its reference model every step (its default); ours needs no reference for the
contrastive loss. pairs/s excludes the first step (warm-up).

BiasShift reached per minute: before training (untimed) each subprocess scores the base model's margins
on held-out pairs (questions never trained on); after the last step it scores them again; BiasShift (mean
margin change toward the chosen pole, nats/token, with its 95% bootstrap interval) divided by the
training wall time, first step included, says how fast each trainer moves the model, not just how fast
it steps.

    python benchmarks/bench_training.py --steps 6 --model smollm2-135m
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
from transformers import TrainerCallback, TrainingArguments

from autocustom.assets import DEFAULT_MODEL

QUESTIONS = [
    "How do I boil pasta?",
    "How should I pack a suitcase?",
    "How can I save money each month?",
    "How can I sleep better?",
    "How do I ask for a raise?",
    "How do I clean a window?",
    "How do I make my laptop faster?",
    "How do I learn a new language?",
]
HELD_OUT = [
    "How do I fix a flat bicycle tire?",
    "How should I prepare for a job interview?",
    "How do I keep houseplants alive?",
    "How can I cook rice without a rice cooker?",
    "How do I write a thank-you note?",
    "How do I stop procrastinating?",
    "How do I choose a good watermelon?",
    "How do I set up a monthly budget?",
]


def pairs(n: int, questions: list[str] = QUESTIONS) -> list[tuple[str, str, str]]:
    """(question, chosen, rejected): formal vs casual answers of ~60 tokens."""
    out = []
    for i in range(n):
        q = questions[i % len(questions)]
        formal = f"Certainly. Regarding '{q.lower()}', one should proceed methodically. " * 3
        casual = f"Oh yeah, '{q.lower()}' is super easy lol, just wing it! " * 3
        out.append((q, formal.strip(), casual.strip()))
    return out


class StepClock(TrainerCallback):
    def __init__(self) -> None:
        self.begin = 0.0
        self.ends: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


class HeldOutShift:
    """Margins toward the chosen pole on held-out pairs, before and after training (untimed)."""

    def __init__(self, loaded) -> None:
        from autocustom.data.schema import Pair

        self.loaded = loaded
        self.pairs = [
            Pair(f"h{i}", "s", q, {"formal": c, "casual": r})
            for i, (q, c, r) in enumerate(pairs(8, HELD_OUT))
        ]
        self.base = self._margins(loaded.model)

    def _margins(self, model):
        from autocustom.scoring.logprobs import pair_margins

        was_training = model.training
        model.eval()
        margins = pair_margins(model, self.loaded.tokenizer, self.pairs, "formal")
        model.train(was_training)
        return margins

    def after(self, model) -> dict:
        from autocustom.scoring.shift import bias_shift

        return bias_shift(self._margins(model), self.base).to_dict()


def run_ours(args, device, dtype_name) -> dict:
    from autocustom.llm.models import load_model
    from autocustom.training.config import TrainConfig
    from autocustom.training.data import PairCollator, PairDataset, encode_pairs
    from autocustom.training.pair_trainer import PairTrainer

    loaded = load_model(args.model, device=device, dtype=torch.float32)
    held_out = HeldOutShift(loaded)
    rows = pairs(args.pairs)
    from autocustom.data.schema import Pair

    data = [Pair(str(i), "s", q, {"formal": c, "casual": r}) for i, (q, c, r) in enumerate(rows)]
    examples = encode_pairs(loaded.tokenizer, data, "formal", "casual", args.max_length)
    config = TrainConfig(data="-", toward="formal", out="-", reg_weight=0.0, batch_size=args.batch_size)
    clock = StepClock()
    trainer = PairTrainer(
        model=loaded.model,
        args=_training_args(args, device, dtype_name, TrainingArguments),
        train_dataset=PairDataset(examples),
        data_collator=PairCollator(loaded.tokenizer.pad_token_id),
        callbacks=[clock],
        config=config,
        regularizer=None,
        reference=None,
    )
    trainer.train()
    return _report(args, clock, device, held_out.after(trainer.model))


def run_trl(args, device, dtype_name) -> dict:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from autocustom.llm.models import load_model

    loaded = load_model(args.model, device=device, dtype=torch.float32)
    held_out = HeldOutShift(loaded)
    rows = pairs(args.pairs)
    dataset = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": q}],
                "chosen": [{"role": "assistant", "content": c}],
                "rejected": [{"role": "assistant", "content": r}],
            }
            for q, c, r in rows
        ]
    )
    clock = StepClock()
    trl_args = _training_args(args, device, dtype_name, DPOConfig, max_length=args.max_length, beta=0.1)
    trainer = DPOTrainer(
        model=loaded.model,
        args=trl_args,
        train_dataset=dataset,
        processing_class=loaded.tokenizer,
        callbacks=[clock],
    )
    trainer.train()
    return _report(args, clock, device, held_out.after(trainer.model))


def _training_args(args, device, dtype_name, cls, **extra):
    return cls(
        output_dir=f"/tmp/bench-training-{cls.__name__}",
        per_device_train_batch_size=args.batch_size,
        max_steps=args.steps,
        learning_rate=2e-5,
        lr_scheduler_type="constant",
        bf16=dtype_name == "bfloat16",
        gradient_checkpointing=False,
        use_cpu=device.type == "cpu",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        **extra,
    )


def _report(args, clock: StepClock, device, shift: dict) -> dict:
    timed = clock.ends[1:] if len(clock.ends) > 1 else clock.ends
    seconds = timed[-1] - clock.ends[0] if len(clock.ends) > 1 else float("nan")
    steps = len(timed)
    minutes = (clock.ends[-1] - clock.begin) / 60
    return {
        "pairs_per_second": steps * args.batch_size / seconds,
        "seconds_per_step": seconds / steps,
        "steps_timed": steps,
        "peak_memory_mb": round(peak_memory_mb(device), 1),
        "training_minutes": minutes,
        "bias_shift": shift,
        "bias_shift_per_minute": shift["value"] / minutes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per trainer (first is warm-up)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--device", default=None)
    parser.add_argument("--only", choices=("ours", "trl"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    from autocustom.runtime import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype_name = "bfloat16" if resolve_dtype(device) == torch.bfloat16 else "float32"
    if args.only:
        torch.manual_seed(0)
        result = (run_ours if args.only == "ours" else run_trl)(args, device, dtype_name)
        print(json.dumps(result))
        return
    results = {}
    for name in ("ours", "trl"):
        command = [sys.executable, __file__, "--only", name, *sys.argv[1:]]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    ratio = results["ours"]["pairs_per_second"] / results["trl"]["pairs_per_second"]
    print(
        f"model {args.model}, device {device}, precision {dtype_name}, batch {args.batch_size} pairs, "
        f"max length {args.max_length}, {args.steps} steps (first excluded), gradient checkpointing off"
    )
    for name, label in (("ours", "autocustom contrastive"), ("trl", "TRL DPOTrainer (sigmoid)")):
        r = results[name]
        print(
            f"{label:28s} {r['pairs_per_second']:7.3f} pairs/s  {r['seconds_per_step']:6.2f} s/step  "
            f"peak memory {r['peak_memory_mb']:8.1f} MB"
        )
    for name, label in (("ours", "autocustom contrastive"), ("trl", "TRL DPOTrainer (sigmoid)")):
        r, b = results[name], results[name]["bias_shift"]
        print(
            f"{label:28s} held-out BiasShift {b['value']:+.3f} [{b['low']:+.3f}, {b['high']:+.3f}] "
            f"(n={b['n']}) after {r['training_minutes']:.2f} min: {r['bias_shift_per_minute']:+.3f} per minute"
        )
    print(f"speed ratio (ours / TRL): {ratio:.2f}x  (goal >= 1.5x)")


if __name__ == "__main__":
    main()

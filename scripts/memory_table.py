"""The memory table of docs/training.md: `train`'s plan for 1B, 8B and 70B Llamas against common GPUs.

Computed by autocustom.training.memory from the models' configs (their published shapes, built on the
meta device: no download), at `train`'s defaults but batch 4 and length 512, on CUDA in bf16; the
sharded rows are per GPU of 8: full fine-tuning under accelerate's FSDP, LoRA under DeepSpeed ZeRO-3
(docs/distributed.md).
`--check` fails when docs/training.md holds another table (tests/test_docs.py runs it).

    python scripts/memory_table.py            # print the table
    python scripts/memory_table.py --write    # put it into docs/training.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from transformers import LlamaConfig

from autocustom.training.config import TrainConfig
from autocustom.training.memory import GIB, Sharding, model_shape, plan_memory, workload_for

DOC = Path(__file__).resolve().parents[1] / "docs" / "training.md"
BEGIN, END = "<!-- memory-table -->", "<!-- /memory-table -->"
GPUS_GIB = (24, 48, 80, 141)
MODELS = {  # the published shapes of Llama 3.2 1B, Llama 3.1 8B and Llama 3.1 70B
    "Llama-3.2-1B": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, tie_word_embeddings=True),
    "Llama-3.1-8B": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32),
    "Llama-3.1-70B": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64),
}  # fmt: skip
SETUPS = {
    "full": {"lora": False},
    "full, FSDP on 8 GPUs": {"lora": False, "sharding": Sharding.fsdp(8)},
    "LoRA": {"lora": True},
    "LoRA, ZeRO-3 on 8 GPUs": {"lora": True, "sharding": Sharding.zero(3, 8)},
    "QLoRA (4-bit)": {"lora": True, "quantized_bits": 4},
}


def table() -> str:
    workload = workload_for(TrainConfig(batch_size=4, max_length=512), None)
    heads = [
        "model",
        "setup",
        "weights",
        "grads + optimizer",
        "reference",
        "activations",
        "evaluation (excess)",
        "loading (excess)",
        "DeepSpeed buffers",
        "total",
    ]
    lines = [
        "| " + " | ".join([*heads, *[f"{g} GB" for g in GPUS_GIB]]) + " |",
        "|" + "---|" * (len(heads) + len(GPUS_GIB)),
    ]
    for name, shape_args in MODELS.items():
        config = LlamaConfig(vocab_size=128256, num_key_value_heads=8, **shape_args)
        shape = model_shape(config)
        for setup, options in SETUPS.items():
            plan = plan_memory(shape, workload, device="cuda", compute_bytes=2, **options)
            parts = plan.parts
            cells = [parts["weights"], parts["gradients"] + parts["optimizer"], parts["reference"]]
            cells += [parts["activations"], parts["evaluation"], parts.get("loading", 0)]
            cells += [parts.get("buffers", 0), plan.total]
            fits = ["fits" if plan.total <= g * GIB else "no" for g in GPUS_GIB]
            lines.append("| " + " | ".join([name, setup, *[f"{c / GIB:.1f}" for c in cells], *fits]) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    text = table()
    if not (args.check or args.write):
        print(text)
        return 0
    doc = DOC.read_text()
    start, end = doc.index(BEGIN) + len(BEGIN), doc.index(END)
    if args.check:
        if doc[start:end].strip() != text:
            print(
                "docs/training.md's memory table is stale: run python scripts/memory_table.py --write",
                file=sys.stderr,
            )
            return 1
        return 0
    DOC.write_text(doc[:start] + "\n" + text + "\n" + doc[end:])
    return 0


if __name__ == "__main__":
    sys.exit(main())

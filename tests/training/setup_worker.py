"""One torchrun worker of `test_a_lora_base_is_built_partitioned_under_zero3`: MODEL_DIR DATA_DIR OUT.

Run with the environment `accelerate launch --use_deepspeed` sets. Prepares a LoRA run as `train`
does (the Trainer's arguments first, then the models) and prints, on every rank, whether the LoRA
base was built partitioned: with DeepSpeed's config registered before loading, no rank ever holds the
whole base.
"""

from __future__ import annotations

import sys
from pathlib import Path

from accelerate import PartialState

from autocustom.progress import no_progress
from autocustom.training.config import TrainConfig
from autocustom.training.data import encode_run
from autocustom.training.pair_trainer import training_args
from autocustom.training.setup import device_for, prepare, training_data
from autocustom.training.sharding import partitioned


def main(model_dir: str, data_dir: str, out: str) -> None:
    config = TrainConfig(
        data=data_dir, toward="formal", out=out, model=model_dir, lora=True, loss="dpo", device="cpu"
    )
    state = PartialState(cpu=True)
    dataset = training_data(config)
    device = device_for(config, state)
    # registers DeepSpeed's config, as in train; transformers holds it by a weak reference: keep `args`
    args = training_args(config, Path(out), device, use_lora=True)
    setup = prepare(config, dataset, device, True, encode_run(config, dataset), no_progress)
    base = setup.model.get_base_model()
    print(f"rank {state.process_index} of {args.world_size}: partitioned {partitioned(base)}", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])

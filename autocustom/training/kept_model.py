"""The kept model and the resume points of a run directory.

`save_best` writes the best model (or adapter) to OUT/model, swapped in atomically; `kept_model` loads
it back for the final measurement (into the sharded policy where there is one); `last_checkpoint` and
`callback_state` find where a stopped run resumes.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from autocustom.fileio import read_json
from autocustom.layout import RUN_MODEL
from autocustom.llm.models import load_model
from autocustom.training.callbacks import EvalCallback
from autocustom.training.sharding import (
    fully_sharded,
    gathered,
    load_into_partitioned,
    load_into_sharded,
    partitioned,
    state_dict_name,
    tied_aliases,
)


def save_best(trainer: Trainer, tokenizer, out: Path, base_reference: str) -> None:
    """Write the whole model (or adapter) + tokenizer to out/model, swapped in so a kill leaves one intact.

    Every rank calls this: under FSDP and ZeRO-3 gathering the weights is a collective. Only rank 0
    writes.
    """
    state_dict = gathered(trainer)
    if not trainer.accelerator.is_main_process:
        return
    staging = out / f".{RUN_MODEL}-staging"
    shutil.rmtree(staging, ignore_errors=True)
    if hasattr(trainer.model, "peft_config"):
        _save_adapter(trainer.model, state_dict, staging, base_reference)
    else:
        trainer.model.save_pretrained(staging, state_dict=_without_aliases(state_dict, trainer.model))
    tokenizer.save_pretrained(staging)
    target, old = out / RUN_MODEL, out / f".{RUN_MODEL}-old"
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def _save_adapter(model, state_dict: dict[str, Any], folder: Path, base_reference: str) -> None:
    """The adapter's weights and config, in the files and key format PeftModel.save_pretrained writes.

    Not through save_pretrained: peft picks the adapter's entries by module names, which under FSDP's
    activation checkpointing carry the checkpoint wrapper, and a gathered state dict's names do not, so
    peft would save an empty adapter. The config names the base as the user did (offline resolution).
    """
    from peft.utils import SAFETENSORS_WEIGHTS_NAME, get_peft_model_state_dict
    from safetensors.torch import save_file

    names = {state_dict_name(name): name for name, _ in model.named_parameters()}
    as_modules = {names.get(name, name): tensor for name, tensor in state_dict.items()}
    adapter = get_peft_model_state_dict(model, state_dict=as_modules)
    folder.mkdir(parents=True)
    weights = {state_dict_name(name): tensor.contiguous() for name, tensor in adapter.items()}
    save_file(weights, folder / SAFETENSORS_WEIGHTS_NAME, metadata={"format": "pt"})
    config = replace(model.peft_config[model.active_adapter], base_model_name_or_path=base_reference)
    config.inference_mode = True
    config.save_pretrained(str(folder))


def _without_aliases(state_dict: dict[str, Any], model) -> dict[str, Any]:
    """Drop the names of tied parameters (lm_head tied to the embeddings) from a gathered state dict.

    save_pretrained finds ties by shared storage, and a gathered state dict holds separate copies, so
    without this a tied model's file would carry its embedding matrix twice.
    """
    aliases = tied_aliases(model)
    return {name: tensor for name, tensor in state_dict.items() if name not in aliases}


def kept_model(policy, out: Path, *, adapter: bool, device: torch.device) -> Any:
    """The saved best model. Under LoRA, FSDP or ZeRO-3 its weights are loaded into `policy`, not a
    second model; `adapter`: the run trained a LoRA adapter."""
    if fully_sharded(policy):
        load_into_sharded(policy, out / RUN_MODEL, adapter=adapter)
        return policy
    if partitioned(policy):
        load_into_partitioned(policy, out / RUN_MODEL, adapter=adapter)
        return policy
    if adapter:
        from peft.utils import load_peft_weights, set_peft_model_state_dict

        # read to the host (the adapter is small); loading copies it onto the parameters' own devices
        set_peft_model_state_dict(policy, load_peft_weights(str(out / RUN_MODEL), device="cpu"))
        return policy
    return load_model(str(out), device=device, dtype=torch.float32).model


def wait_for_writer() -> None:
    """Every rank reads the kept model only after rank 0 has written it."""
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint: one a kill cut mid-write (its trainer_state.json, the Trainer's
    last file, missing or not valid JSON) is passed over, so a resume never fails on it."""
    found = [p for p in folder.glob("checkpoint-*") if _complete(p)]
    return max(found, key=checkpoint_step) if found else None


def _complete(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return checkpoint.name.rsplit("-", 1)[-1].isdigit()


def checkpoint_step(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1])


def callback_state(checkpoint: Path) -> dict[str, Any]:
    state = read_json(checkpoint / "trainer_state.json").get("stateful_callbacks", {})
    return state.get(EvalCallback.__name__, {}).get("attributes", {})

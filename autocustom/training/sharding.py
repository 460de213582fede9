"""Sharding: what `accelerate launch` asked for (`Sharding`, `launched_sharding`, read by the memory
plan and by `train`), and what autocustom does beyond the Trainer under FSDP2 and ZeRO-3.

The Trainer shards the policy; autocustom also shards the frozen reference (`shard_frozen`,
`partitioned_engine`), gathers the kept weights to save them (`gathered`) and scatters them back into
the sharded policy for the final measurement (`load_into_sharded`, `load_into_partitioned`): a second
whole model per rank is what sharding is used to avoid.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

log = logging.getLogger(__name__)

SHARDED_PARTS = ("weights", "gradients", "optimizer")  # ZeRO order: stage s shards the last s


FULLY_SHARDED = (*SHARDED_PARTS, "reference")  # FSDP and ZeRO-3, whose reference autocustom shards too


DEEPSPEED_REDUCE_BUCKET = 5 * 10**8  # DeepSpeed's default reduce_bucket_size (what accelerate's YAML gives)


DEEPSPEED_MAX_LIVE = 10**9  # DeepSpeed's default stage3_max_live_parameters (accelerate's YAML has no key)


@dataclass(frozen=True)
class Sharding:
    """How `accelerate launch` set this process up to split the training state over `processes`.

    `parts` are the plan's parts each process holds 1/processes of: FSDP (full shard) and ZeRO-3 split
    weights, gradients, optimizer state and (autocustom shards it too) the reference, ZeRO-2 gradients
    and optimizer state, ZeRO-1 the optimizer. `loads`: where the models (the policy and reference, or
    a LoRA base) are whole before they are sharded: "device", "host" (FSDP: the device only ever holds
    shards) or "partitioned" (ZeRO-3: built partitioned, never whole). A 4-bit or 8-bit base loads
    whole on the device whatever the sharding: bitsandbytes quantizes it there. `checkpoints_activations`:
    FSDP's own activation checkpointing wraps each layer (the Trainer's must then stay off: it refuses
    both).
    """

    strategy: str  # "fsdp" or "deepspeed-zero<stage>"
    processes: int
    parts: tuple[str, ...]
    loads: str = "device"
    checkpoints_activations: bool = False
    reduce_bucket: int | None = DEEPSPEED_REDUCE_BUCKET  # ZeRO-3's gradient bucket; None: "auto" (hidden^2)
    max_live: int = DEEPSPEED_MAX_LIVE  # ZeRO-3's gathered parameters kept between uses, elements

    @classmethod
    def fsdp(cls, processes: int, checkpoints_activations: bool = False) -> Sharding:
        """accelerate's FSDP (full shard), with autocustom's host loading and sharded reference."""
        return cls("fsdp", processes, FULLY_SHARDED, "host", checkpoints_activations)

    @classmethod
    def zero(
        cls,
        stage: int,
        processes: int,
        reduce_bucket: int | None = DEEPSPEED_REDUCE_BUCKET,
        max_live: int = DEEPSPEED_MAX_LIVE,
    ) -> Sharding | None:
        """DeepSpeed's ZeRO at `stage` (None at 0: nothing sharded); stage 3 builds models partitioned."""
        if stage == 3:
            return cls(
                "deepspeed-zero3",
                processes,
                FULLY_SHARDED,
                "partitioned",
                reduce_bucket=reduce_bucket,
                max_live=max_live,
            )
        parts = SHARDED_PARTS[3 - stage :] if stage > 0 else ()
        return cls(f"deepspeed-zero{stage}", processes, parts) if parts else None

    def loads_for(self, quantized: bool) -> str:
        """Where this run's models are whole before sharding: `loads`, but a 4-bit or 8-bit base always
        on the device (bitsandbytes quantizes it as it moves it there)."""
        return "device" if quantized else self.loads

    def loads_whole(self, device: str, quantized: bool) -> bool:
        """Whether loading holds whole models in this process's device memory before sharding them."""
        where = self.loads_for(quantized)
        return where == "device" or (where == "host" and device != "cuda")


def launched_sharding() -> Sharding | None:
    """The sharding the launcher's environment asks for, or None (one process, or DDP).

    Read from the variables `accelerate launch` sets, not from accelerate's state: before the Trainer
    builds its Accelerator, that state says MULTI_GPU under FSDP.
    """
    import os

    from accelerate.utils import parse_flag_from_env

    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if processes < 2:
        return None
    if parse_flag_from_env("ACCELERATE_USE_FSDP"):
        return Sharding.fsdp(processes, parse_flag_from_env("FSDP_ACTIVATION_CHECKPOINTING"))
    if parse_flag_from_env("ACCELERATE_USE_DEEPSPEED"):
        zero = _deepspeed_json().get("zero_optimization", {})
        bucket = zero.get("reduce_bucket_size", DEEPSPEED_REDUCE_BUCKET)
        live = zero.get("stage3_max_live_parameters", DEEPSPEED_MAX_LIVE)
        return Sharding.zero(
            _zero_stage(zero),
            processes,
            None if bucket == "auto" else int(float(bucket)),
            DEEPSPEED_MAX_LIVE if live == "auto" else int(float(live)),
        )
    return None


def _deepspeed_json() -> dict[str, Any]:
    """The launch's DeepSpeed JSON config (`deepspeed_config_file`), {} without one."""
    import json
    import os
    from pathlib import Path

    config_file = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    return json.loads(Path(config_file).read_text()) if config_file and Path(config_file).is_file() else {}


def _zero_stage(zero: dict[str, Any]) -> int:
    """The ZeRO stage of the launch: the accelerate config's, else its DeepSpeed JSON's (`zero`).

    0 when neither says: the plan is then unsharded, an upper bound, rather than a guess.
    """
    import os

    stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", zero.get("stage"))
    return int(stage) if isinstance(stage, int | str) and str(stage).isdigit() else 0


def sharded_as(trainer: Trainer, processes: int) -> str | None:
    """How the Trainer really sharded the model ("fsdp", "deepspeed"), None when it did not.

    A launch can ask for FSDP and get DDP: accelerate enables FSDP for GPU processes only, silently.
    """
    sharding = "fsdp" if trainer.is_fsdp_enabled else "deepspeed" if trainer.is_deepspeed_enabled else None
    launched = launched_sharding()
    if launched is not None and sharding is None and processes > 1:
        log.warning("the launch asked for %s, but accelerate ran the processes unsharded", launched.strategy)
    return sharding


def shard_frozen(model, device: torch.device) -> None:
    """FSDP2-shard the frozen reference over every process, as accelerate wraps the policy.

    One unit per decoder layer (the launch's `fsdp_transformer_layer_cls_to_wrap`, else the model's
    `_no_split_modules`, as accelerate chooses), then the root; each rank keeps 1/N of it on `device`.
    Every call of it is then a collective, and every rank makes each one: all compute the same DPO
    reference log-probs and evaluate the same items, and the KL regulariser calls it once per
    micro-step on each.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    named = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP")
    layers = set(named.split(",") if named else getattr(model, "_no_split_modules", None) or ())
    for module in model.modules():
        if type(module).__name__ in layers:
            fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)


def numel(parameter: torch.Tensor) -> int:
    """A parameter's element count, also when ZeRO-3 has partitioned it (its own tensor is then empty)."""
    return getattr(parameter, "ds_numel", parameter.numel())


def partitioned(model) -> bool:
    """ZeRO-3 has partitioned the model's parameters (built under deepspeed.zero.Init, or by an engine)."""
    return any(hasattr(parameter, "ds_id") for parameter in model.parameters())


def partitioned_engine(model):
    """The frozen ZeRO-3-partitioned reference inside a DeepSpeed engine of its own, without an optimizer.

    A partitioned model runs only with an engine's hooks, which gather each layer's weights for its
    forward pass; TRL's `prepare_deepspeed` runs its reference the same way. The engine partitions as
    the policy's does (the config the Trainer registered); DeepSpeed's defaults replace "auto" values,
    which the Trainer would fill for the policy's engine only. Every call of it is a collective, as
    under FSDP (see `shard_frozen`).
    """
    import deepspeed
    from transformers.integrations.deepspeed import deepspeed_config

    registered = deepspeed_config()
    zero = {key: value for key, value in registered["zero_optimization"].items() if value != "auto"}
    dtype = next(model.parameters()).dtype
    config = {
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == torch.bfloat16},
        "fp16": {"enabled": dtype == torch.float16},
        "train_micro_batch_size_per_gpu": 1,  # required by DeepSpeed, unused: this engine never steps
    }
    engine, *_ = deepspeed.initialize(model=model, config=config)
    engine.eval()
    return engine


def gathered(trainer: Trainer) -> dict[str, Any]:
    """The model's whole state dict on rank 0 (empty or partial elsewhere), gathered only where sharded.

    FSDP2 gathers through torch's state-dict API, an adapter's trainable weights alone (not a 140 GB
    base for a 70B adapter); FSDP1 and ZeRO-3 through accelerate's `get_state_dict` (ZeRO-3 on the
    engine). Unsharded (one process, DDP, ZeRO-1/2), rank 0 reads its own copy: no gather, no clone.
    """
    model = trainer.model
    if fully_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        adapter = hasattr(model, "peft_config")
        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=adapter)
        return get_model_state_dict(model, options=options)
    if trainer.is_fsdp_enabled or partitioned(model):
        return trainer.accelerator.get_state_dict(trainer.model_wrapped)
    return model.state_dict() if trainer.accelerator.is_main_process else {}


CHECKPOINT_WRAPPER = "_checkpoint_wrapped_module."  # torch's activation-checkpoint wrapper, in module names


def state_dict_name(name: str) -> str:
    """A parameter's module name as state dicts spell it: without the checkpoint wrapper's part."""
    return name.replace(CHECKPOINT_WRAPPER, "")


def tied_aliases(model) -> set[str]:
    """State-dict names of the parameters that are another's second name (a head tied to the embeddings)."""
    every = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    aliases = every - {name for name, _ in model.named_parameters()}
    return {state_dict_name(name) for name in aliases}


def fully_sharded(model) -> bool:
    """FSDP2 has sharded the policy: no rank holds a whole parameter, loading must scatter."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(module, FSDPModule) for module in model.modules())


def load_into_sharded(model, folder: Path, *, adapter: bool) -> None:
    """Load the saved weights into an FSDP2-sharded policy: rank 0 reads them, every rank takes its shard.

    peft's loader copies whole tensors into sharded ones and drops them as size mismatches (a warning,
    no error), so this goes through torch's distributed state-dict API. A second whole model per rank
    (what the unsharded path loads) is what FSDP is used to avoid.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    from torch.distributed.fsdp import FSDPModule

    state = _kept_state(model, folder, adapter=adapter)
    for module in model.modules():  # FSDP2 leaves the root's parameters gathered after a forward pass
        if isinstance(module, FSDPModule):
            module.reshard()
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
    result = set_model_state_dict(model, state, options=options)
    _refuse_mismatch(model, folder, result.unexpected_keys, result.missing_keys, adapter=adapter)


def load_into_partitioned(model, folder: Path, *, adapter: bool) -> None:
    """Load the saved weights into a ZeRO-3-partitioned policy: rank 0 reads them and writes each
    parameter gathered, and DeepSpeed hands every rank its partition back.

    peft's loader sees a partitioned parameter as an empty tensor and fails on the size; a second whole
    model per rank is what ZeRO-3 is used to avoid. The Trainer's engine must still be alive: its hooks
    gather the weights for the measurement's forward passes.
    """
    import deepspeed
    import torch.distributed as dist

    state = _kept_state(model, folder, adapter=adapter)
    names = [sorted(state)]
    dist.broadcast_object_list(names, src=0)  # every rank gathers the same parameters, in one order
    parameters = dict(model.named_parameters())
    _refuse_mismatch(
        model, folder, set(names[0]) - set(parameters), set(parameters) - set(names[0]), adapter=adapter
    )
    for name in names[0]:
        with deepspeed.zero.GatheredParameters([parameters[name]], modifier_rank=0):
            if dist.get_rank() == 0:
                parameters[name].data.copy_(state[name])


def _kept_state(model, folder: Path, *, adapter: bool) -> dict[str, torch.Tensor]:
    """The kept weights under the policy's parameter names, on rank 0 (which alone reads them); {} elsewhere."""
    import torch.distributed as dist
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    if dist.get_rank() != 0:
        return state
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(file))
    if adapter:  # the file leaves out the adapter's name ("lora_A.weight"; "lora_A.default.weight" here)
        marker = f".{model.active_adapter}."
        names = {name.replace(marker, "."): name for name in model.state_dict() if marker in name}
        state = {names.get(name, name): tensor for name, tensor in state.items()}
    return state


def _refuse_mismatch(model, folder: Path, unexpected, missing, *, adapter: bool) -> None:
    """Every saved weight must find its parameter, and a whole model must cover every parameter but
    tied aliases (an adapter covers only its own): otherwise the final figures would silently be the
    last step's."""
    missing = set() if adapter else set(missing) - tied_aliases(model)
    if unexpected or missing:
        raise RuntimeError(
            f"the kept model in {folder} does not match the policy: "
            f"unexpected {sorted(unexpected)[:5]}, missing {sorted(missing)[:5]}"
        )

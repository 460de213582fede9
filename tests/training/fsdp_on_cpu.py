"""`python -m autocustom` with accelerate's FSDP allowed on CPU processes, for the FSDP tests.

accelerate turns `distributed_type: FSDP` into FSDP only for GPU-type process groups: on a machine
without GPUs the same launch silently runs as DDP (MULTI_CPU). PyTorch's FSDP2 itself runs on CPU over
gloo, so this lifts that one check and nothing else: the Trainer, accelerate's `fully_shard` wrapping,
its state-dict gathering and autocustom's code run as they do on GPUs.

Run it where `-m autocustom` would go: `accelerate launch --config_file fsdp.yaml tests/training/fsdp_on_cpu.py train ...`.
"""

from __future__ import annotations

import runpy
import sys

import accelerate.state as state
from accelerate.utils import DistributedType

_accelerator_state_init = state.AcceleratorState.__init__


def _fsdp_on_cpu(self, *args, **kwargs) -> None:
    _accelerator_state_init(self, *args, **kwargs)
    if self.distributed_type == DistributedType.MULTI_CPU and kwargs.get("fsdp_plugin") is not None:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = kwargs["fsdp_plugin"]
        state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP


if __name__ == "__main__":
    state.AcceleratorState.__init__ = _fsdp_on_cpu
    sys.argv = ["autocustom", *sys.argv[1:]]
    runpy.run_module("autocustom", run_name="__main__")

"""Device and precision choice, in one place so every command agrees.

CUDA when present, with bf16 where the GPU supports it (halves memory and is the precision the
reference tools use by default); float32 on CPU, where bf16 is fast only on CPUs with bf16 units (AMX,
AVX512-BF16) and moves margins by up to 0.01 nats/token (docs/training.md, "Precision").
"""

from __future__ import annotations

import random

import torch

from autocustom.errors import UsageError


def resolve_device(preference: str | None = None) -> torch.device:
    """`None`/"auto" picks CUDA if available; otherwise the named device, checked to exist."""
    if preference in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(preference)
    except RuntimeError:
        raise UsageError(f"unknown device '{preference}'", "use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but no CUDA GPU is visible", "use --device cpu or auto")
    return device


def resolve_dtype(device: torch.device, preference: str | None = None) -> torch.dtype:
    """bf16 on CUDA where supported, else float32; `preference` ("float32", "bfloat16", ...) overrides."""
    if preference not in (None, "", "auto"):
        names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        if preference not in names:
            raise UsageError(f"unknown dtype '{preference}'", f"use one of: auto, {', '.join(names)}")
        return names[preference]
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


CPU_MMAP_THRESHOLD = 8 * 2**20  # bytes; measured: 3.1 GiB instead of 7.7 GiB for one 360M LoRA step


def limit_heap_growth(device: torch.device) -> None:
    """On CPU under glibc, give every allocation over 8 MiB its own mapping, returned to the OS when freed.

    glibc raises its mmap threshold each time a large block is freed, so the activations of the next
    step land on the heap, which fragments and never shrinks: a 360M LoRA step held 7.7 GiB resident
    for 3.1 GiB of live tensors. A fixed threshold stops that, at ~15% more time for the first step
    (page faults of fresh mappings; docs/training.md, "Memory"). Must run before the first big tensor.
    """
    import ctypes
    import ctypes.util
    import sys

    if device.type != "cpu" or not sys.platform.startswith("linux"):
        return
    name = ctypes.util.find_library("c")
    if name is None:
        return
    m_mmap_threshold = -3  # <malloc.h>; setting it also turns glibc's dynamic threshold off
    ctypes.CDLL(name).mallopt(m_mmap_threshold, CPU_MMAP_THRESHOLD)


def seed_everything(seed: int) -> None:
    """Seed Python and torch (all devices) so a rerun gives the same numbers."""
    random.seed(seed)
    torch.manual_seed(seed)

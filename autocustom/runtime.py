"""Device and precision choice, in one place so every command agrees.

CUDA when present, with bf16 where the GPU supports it (halves memory and is the precision the
reference tools use by default); float32 on CPU, where bf16 matmuls are slower on most machines.
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


def seed_everything(seed: int) -> None:
    """Seed Python and torch (all devices) so a rerun gives the same numbers."""
    random.seed(seed)
    torch.manual_seed(seed)

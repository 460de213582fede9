"""Device and precision choice, in one place so every command agrees.

CUDA when present, with bf16 where the GPU supports it (halves memory and is the precision the
reference tools use by default); float32 on CPU, where bf16 is fast only on CPUs with bf16 units (AMX,
AVX512-BF16) and moves margins by up to 0.01 nats/token (docs/training.md, "Precision").
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

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


CPU_SAMPLE_SECONDS = 0.05  # how long `free_cores` watches the machine before a scoring pass


def free_cores(sample_seconds: float = CPU_SAMPLE_SECONDS) -> int:
    """Cores this process may use that no other process is busy on now (at least 1).

    Sampled with psutil over `sample_seconds`: the cores of this process's affinity minus the busy
    share of the whole machine, rounded.
    """
    import psutil

    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    busy = sum(psutil.cpu_percent(interval=sample_seconds, percpu=True)) / 100
    return max(1, min(allowed, round(allowed - busy)))


@contextmanager
def threads_on_free_cores(device: torch.device) -> Iterator[None]:
    """On CPU, run torch's intra-op threads only on cores no other process is using, then restore.

    Every operator of a forward pass waits for all its threads; when another job holds a core, the
    thread sharing it is descheduled and every operator stalls on it. Measured on 2 cores with a busy
    loop beside it (benchmarks/bench_scoring.py --contention): 16 pairs scored in 20.2 s on 2 threads
    against 7.4 s on 1, when the same pairs take 3.7 s on 2 threads on an idle machine. Idle, this
    keeps every core.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(min(before, free_cores()))
    try:
        yield
    finally:
        torch.set_num_threads(before)

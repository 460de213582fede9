"""Load a causal LM and its tokenizer from any reference a user may pass.

A reference is one of: a packaged name (`smollm2-135m`), an autocustom run directory, a peft adapter
directory, a plain Hugging Face model directory, a directory holding a GGUF file, or a hub id.
Packaged GGUF models are converted once into a plain safetensors directory in the user cache, because
a GGUF-loaded model refuses `save_pretrained` and takes ~20 s to dequantise, while the plain copy
reloads in well under a second with identical logits.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autocustom.assets import PACKAGED_MODELS, cache_dir
from autocustom.errors import ModelLoadError
from autocustom.layout import RUN_MODEL, is_run_dir, read_run_config

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: Any  # transformers PreTrainedModel (or peft PeftModel)
    tokenizer: Any
    reference: str  # what the user passed
    base_reference: str | None  # the base model recorded for a run or adapter, when known


def recorded_base(reference: str) -> str | None:
    """The base model a run directory or adapter was trained from, as the user named it."""
    path = Path(reference)
    if is_run_dir(path):
        return read_run_config(path)["model"]
    adapter = path / "adapter_config.json"
    if adapter.is_file():
        return json.loads(adapter.read_text()).get("base_model_name_or_path")
    return None


def resolve_model_dir(reference: str) -> str:
    """A local directory or hub id that `from_pretrained` can read for `reference` (no adapter logic)."""
    if reference in PACKAGED_MODELS:
        return str(materialize_packaged(reference))
    path = Path(reference).expanduser()
    if is_run_dir(path):
        return str(path / RUN_MODEL)
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model path {path} is a file", "pass the model's directory")
        return str(path)
    if _looks_like_path(reference):
        raise ModelLoadError(
            f"model path {reference} does not exist",
            f"pass an existing directory, a hub id, or a packaged name ({', '.join(PACKAGED_MODELS)})",
        )
    return reference


def check_loadable(reference: str, *, trust_remote_code: bool = False) -> None:
    """Fail now, with ModelLoadError, when `reference` cannot be loaded; reads a config, not weights.

    Lets a command refuse a missing path or an offline hub id before it writes anything.
    """
    location = resolve_model_dir(reference)
    if Path(location).exists():
        return
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _cannot_load(reference, exc) from None


def load_model(
    reference: str,
    *,
    device: Any = None,
    dtype: Any = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load model + tokenizer in eval mode on `device`; tokenizer gets a pad token if it lacks one."""
    import torch
    from transformers import AutoModelForCausalLM

    from autocustom.runtime import resolve_device, resolve_dtype

    device = device if device is not None else resolve_device(None)
    dtype = dtype if dtype is not None else resolve_dtype(torch.device(device))
    location = resolve_model_dir(reference)
    adapter_config = Path(location) / "adapter_config.json"
    base_reference = recorded_base(reference)
    try:
        if adapter_config.is_file():
            from peft import PeftModel

            base_name = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
            if not base_name:
                raise ModelLoadError(f"adapter {location} names no base model", "re-save the adapter")
            base = load_model(base_name, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
            model = PeftModel.from_pretrained(base.model, location)
            tokenizer = _load_tokenizer(location, trust_remote_code, fallback=base.tokenizer)
            base_reference = base_reference or base_name
        else:
            gguf = _single_gguf(location)
            model = AutoModelForCausalLM.from_pretrained(
                location, gguf_file=gguf, dtype=dtype, trust_remote_code=trust_remote_code
            )
            tokenizer = _load_tokenizer(location, trust_remote_code, gguf_file=gguf)
    except ModelLoadError:
        raise
    except (OSError, ValueError) as exc:
        raise _cannot_load(reference, exc) from None
    model.to(device)
    model.eval()
    return LoadedModel(model, tokenizer, reference, base_reference)


def _load_tokenizer(location: str, trust_remote_code: bool, gguf_file: str | None = None, fallback=None):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            location, gguf_file=gguf_file, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError):
        if fallback is None:
            raise
        tokenizer = fallback
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def materialize_packaged(name: str) -> Path:
    """The plain-safetensors copy of a packaged model, converted from its GGUF on first use.

    Written to a temporary directory and renamed into place, so concurrent first uses (two test
    processes, two DDP ranks) never see a half-written model.
    """
    target = cache_dir() / "models" / name
    if (target / "config.json").is_file():
        return target
    spec = PACKAGED_MODELS[name]
    gguf = spec.gguf_file()
    if gguf is None:
        log.info("%s is not installed as a package; using the hub id %s", name, spec.hub_id)
        return Path(spec.hub_id)  # from_pretrained treats it as a hub id
    log.info("converting packaged %s from %s (once)", name, gguf)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        _convert_gguf(gguf, staging)
        try:
            os.replace(staging, target)
        except OSError:  # another process finished first: keep theirs
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, filename = str(gguf.parent), gguf.name
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=filename)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict(), strict=False)
    plain.tie_weights()
    plain.save_pretrained(out_dir)
    AutoTokenizer.from_pretrained(folder, gguf_file=filename).save_pretrained(out_dir)


def _single_gguf(location: str) -> str | None:
    path = Path(location)
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    found = sorted(path.glob("*.gguf"))
    return found[0].name if found else None


def _looks_like_path(reference: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else that does not exist was meant as a path."""
    return reference.startswith((".", "/", "~")) or reference.count("/") >= 2


def _cannot_load(reference: str, exc: BaseException) -> ModelLoadError:
    return ModelLoadError(
        f"cannot load model '{reference}': {_first_line(exc)}",
        "pass a local model directory, a run directory, or a packaged name "
        f"({', '.join(PACKAGED_MODELS)}); hub ids need network access",
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

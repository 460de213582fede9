"""Load a causal LM and its tokenizer from any reference a user may pass.

A reference is one of: a packaged name (`smollm2-135m`), an autocustom run directory, a peft adapter
directory, a plain Hugging Face model directory, a directory holding a GGUF file, or a hub id.
Packaged GGUF models are converted once into a plain safetensors directory in the user cache, because
a GGUF-loaded model refuses `save_pretrained` and takes ~20 s to dequantise, while the plain copy
reloads in well under a second with identical logits.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocustom.assets import PACKAGED_MODELS, cache_dir
from autocustom.errors import ModelLoadError
from autocustom.fileio import temp_dir
from autocustom.layout import ADAPTER_CONFIG, run_source

log = logging.getLogger(__name__)


QUANTIZATION_HELP = "needs a CUDA GPU and bitsandbytes (pip install 'autocustom[quantization]')"


@dataclass(kw_only=True)
class LoadOptions:
    """How the weights are loaded: precision, quantization and attention kernel (train and every scorer).

    `dtype` is the compute dtype: the frozen weights (a LoRA base, the reference, a scored model) are
    held in it. "auto" is bf16 on a CUDA GPU that supports it and float32 on CPU: bf16 was measured
    faster on an AMX CPU but 0.01 nats/token off float32's margins (docs/training.md, "Precision").
    """

    dtype: str = field(
        default="auto",
        metadata={"help": "compute dtype: auto (bf16 on CUDA, float32 on CPU), float32, bfloat16 or float16"},
    )
    attn_implementation: str | None = field(
        default=None,
        metadata={
            "help": "attention kernel: eager, sdpa or flash_attention_2 (default: transformers' choice)"
        },
    )
    load_in_4bit: bool = field(
        default=False,
        metadata={
            "help": f"load the base in 4-bit NF4 (QLoRA); {QUANTIZATION_HELP}",
            "flag": "--load-in-4bit",
        },
    )
    load_in_8bit: bool = field(
        default=False,
        metadata={"help": f"load the base in 8-bit; {QUANTIZATION_HELP}", "flag": "--load-in-8bit"},
    )

    def load_options(self) -> dict[str, Any]:
        """These options alone, to pass on to another config (compare's training runs)."""
        from dataclasses import fields

        return {f.name: getattr(self, f.name) for f in fields(LoadOptions)}

    @property
    def quantized(self) -> bool:
        return self.load_in_4bit or self.load_in_8bit

    def check_loading(self, device: Any) -> None:
        """Refuse a quantized load that cannot work here (UsageError: exit 2, one line with the fix)."""
        import importlib.util

        from autocustom.errors import UsageError
        from autocustom.runtime import resolve_dtype

        resolve_dtype(device, self.dtype)  # an unknown dtype is refused here
        if not self.quantized:
            return
        flag = "--load-in-4bit" if self.load_in_4bit else "--load-in-8bit"
        if self.load_in_4bit and self.load_in_8bit:
            raise UsageError("--load-in-4bit and --load-in-8bit both given", "pass one of them")
        if getattr(device, "type", str(device)) != "cuda":
            raise UsageError(
                f"{flag} needs a CUDA GPU (bitsandbytes' kernels) and this run is on {device}",
                f"drop {flag} here (float32 fits a small model), or run on a GPU",
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise UsageError(
                f"{flag} needs bitsandbytes, which is not installed", "pip install 'autocustom[quantization]'"
            )

    def quantization_config(self, compute_dtype: Any) -> Any:
        """transformers' BitsAndBytesConfig for the chosen load, or None: QLoRA's NF4 with double quantization."""
        if not self.quantized:
            return None
        from transformers import BitsAndBytesConfig

        if self.load_in_8bit:
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",  # the QLoRA paper's data type for normally distributed weights
            bnb_4bit_use_double_quant=True,  # quantizes the quantization constants too: ~0.4 bit/param saved
            bnb_4bit_compute_dtype=compute_dtype,
        )


DEFAULT_LOAD = LoadOptions()


@dataclass
class LoadedModel:
    model: Any  # transformers PreTrainedModel (or peft PeftModel)
    tokenizer: Any
    reference: str  # what the user passed
    base_reference: str | None  # the base model recorded for a run or adapter, when known


def resolve_model_dir(reference: str) -> str:
    """A local directory or hub id that `from_pretrained` can read for `reference` (no adapter logic)."""
    if reference in PACKAGED_MODELS:
        return str(materialize_packaged(reference))
    path = Path(reference).expanduser()
    source = run_source(path)
    if source.run_config:  # a train or run directory: its kept model
        return str(source.weights)
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


def model_identity(reference: str) -> str:
    """What a cache keys a local model's replies by, beyond the name typed: a packaged model's package
    version; a directory's resolved path and the sizes and times of its files (a model retrained into
    the same path, or another model put there, makes new calls); a hub id as given."""
    if reference in PACKAGED_MODELS:
        package = PACKAGED_MODELS[reference].package
        try:
            return f"{reference} ({package} {importlib.metadata.version(package)})"
        except importlib.metadata.PackageNotFoundError:
            return reference
    path = Path(resolve_model_dir(reference))
    if not path.is_dir():
        return reference
    files = sorted(p for p in path.iterdir() if p.is_file())
    stamp = "\n".join(f"{p.name} {p.stat().st_size} {p.stat().st_mtime_ns}" for p in files)
    return f"{path.resolve()} ({hashlib.sha256(stamp.encode()).hexdigest()[:16]})"


def resolve_base_dir(reference: str) -> str:
    """The model directory (or hub id) whose config describes `reference`: an adapter's base for an adapter."""
    location = resolve_model_dir(reference)
    adapter = Path(location) / ADAPTER_CONFIG
    if adapter.is_file():
        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        if not base:
            raise ModelLoadError(f"adapter {location} names no base model", "re-save the adapter")
        return resolve_base_dir(base)
    return location


def load_tokenizer(reference: str, *, trust_remote_code: bool = False) -> Any:
    """The tokenizer of `reference` without its weights (an adapter's own, else its base's)."""
    location = resolve_model_dir(reference)
    try:
        try:
            return _load_tokenizer(location, trust_remote_code, gguf_file=_single_gguf(location))
        except (OSError, ValueError):
            return _load_tokenizer(resolve_base_dir(reference), trust_remote_code)
    except (OSError, ValueError) as exc:
        raise cannot_load(reference, exc) from None


def load_config(reference: str, *, trust_remote_code: bool = False) -> Any:
    """The transformers config of `reference` (an adapter's base's), read without any weight.

    ModelLoadError (exit 2, one line) when it cannot be read: a missing path, a hub id offline.
    """
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(resolve_base_dir(reference), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise cannot_load(reference, exc) from None


def check_loadable(reference: str, *, trust_remote_code: bool = False) -> None:
    """Fail now, with ModelLoadError, when `reference` cannot be loaded; reads a config, not weights.

    Lets a command refuse a missing path or an offline hub id before it writes anything.
    """
    if not Path(resolve_model_dir(reference)).exists():
        load_config(reference, trust_remote_code=trust_remote_code)


def load_model(
    reference: str,
    *,
    device: Any = None,
    dtype: Any = None,
    options: LoadOptions = DEFAULT_LOAD,
    device_map: str | None = None,
    trust_remote_code: bool = False,
    tokenizer: Any = None,
) -> LoadedModel:
    """Load model + tokenizer in eval mode on `device`; tokenizer gets a pad token if it lacks one.

    `tokenizer`: the reference's tokenizer, already loaded (`load_tokenizer`): it is used, not read again.

    `dtype` (a torch dtype) overrides `options.dtype`. `device_map` ("auto") spreads a model that does
    not fit one device over the GPUs and the CPU through accelerate; the model is then not moved.
    """
    import torch
    from safetensors import SafetensorError

    from autocustom.runtime import resolve_device, resolve_dtype

    device = torch.device(device if device is not None else resolve_device(None))
    dtype = dtype if dtype is not None else resolve_dtype(device, options.dtype)
    location = resolve_model_dir(reference)
    adapter_config = Path(location) / ADAPTER_CONFIG
    base_reference = run_source(reference).base
    try:
        if adapter_config.is_file():
            from peft import PeftModel

            base_name = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
            if not base_name:
                raise ModelLoadError(f"adapter {location} names no base model", "re-save the adapter")
            base = load_model(
                base_name,
                device=device,
                dtype=dtype,
                options=options,
                device_map=device_map,
                trust_remote_code=trust_remote_code,
                tokenizer=tokenizer,
            )
            model = PeftModel.from_pretrained(base.model, location)
            tokenizer = tokenizer or _load_tokenizer(location, trust_remote_code, fallback=base.tokenizer)
            base_reference = base_reference or base_name
        else:
            gguf = _single_gguf(location)
            model = _from_pretrained(location, gguf, dtype, options, device, device_map, trust_remote_code)
            tokenizer = tokenizer or _load_tokenizer(location, trust_remote_code, gguf_file=gguf)
    except ModelLoadError:
        raise
    except (OSError, ValueError, ImportError, SafetensorError) as exc:
        raise cannot_load(reference, exc) from None
    if device_map is None and not options.quantized:  # placed models stay where accelerate put them
        model.to(device)
    model.eval()
    return LoadedModel(model, tokenizer, reference, base_reference)


def _from_pretrained(location, gguf, dtype, options: LoadOptions, device, device_map, trust_remote_code):
    from transformers import AutoModelForCausalLM

    extra: dict[str, Any] = {}
    if options.attn_implementation:
        extra["attn_implementation"] = options.attn_implementation
    quantization = options.quantization_config(dtype)
    if quantization is not None:
        extra["quantization_config"] = quantization
        # bitsandbytes quantizes while placing the weights: all of them on this GPU
        device_map = device_map or {"": device.index if device.index is not None else 0}
    if device_map is not None:
        extra["device_map"] = device_map
    return AutoModelForCausalLM.from_pretrained(
        location, gguf_file=gguf, dtype=dtype, trust_remote_code=trust_remote_code, **extra
    )


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


class ModelView(abc.ABC):
    """A model seen through a context that holds while the view runs: the adapter off, a steering
    vector on. It shares the model's weights, so a reference or a steered model costs no second copy.

    A subclass says what `running()` changes; `__call__` and `generate` run inside it, and the rest
    (parameters, config, device, train/eval mode) is the model's own.
    """

    def __init__(self, model: Any) -> None:
        self.model = model

    @abc.abstractmethod
    def running(self) -> contextlib.AbstractContextManager[Any]:
        """The context the model runs in while this view is called (the subclass's one change)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.running():
            return self.model(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        with self.running():
            return self.model.generate(*args, **kwargs)

    def parameters(self):
        return self.model.parameters()

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def device(self) -> Any:
        return self.model.device

    @property
    def training(self) -> bool:
        return self.model.training

    def eval(self) -> ModelView:
        self.model.eval()
        return self

    def train(self, mode: bool = True) -> ModelView:
        self.model.train(mode)
        return self


class AdapterDisabled(ModelView):
    """The base model inside a peft model: the same weights, run with the adapter turned off.

    Under LoRA the frozen base *is* the reference, so every reference computation (DPO/IPO reference
    log-probs, base margins, the KL regulariser, Drift) runs the policy's own weights with the adapter
    disabled, instead of a second full copy of the model. Run in eval mode, as a separate frozen copy
    would be, and restored to the peft model's mode after; its own mode is always eval.
    """

    @contextlib.contextmanager
    def running(self):
        model = self.model
        was_training = model.training
        model.eval()
        try:
            with model.disable_adapter():
                yield
        finally:
            model.train(was_training)

    @property
    def training(self) -> bool:
        return False

    def eval(self) -> AdapterDisabled:
        return self

    def train(self, mode: bool = True) -> AdapterDisabled:
        return self


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
    staging = temp_dir(f".{name}-", target.parent)
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


def cannot_load(reference: str, exc: BaseException) -> ModelLoadError:
    if type(exc).__name__ == "SafetensorError":  # a weights file cut short (a full disk, a killed copy)
        return ModelLoadError(
            f"cannot load model '{reference}': a weights file is damaged ({_first_line(exc)})",
            "train or download it again",
        )
    return ModelLoadError(
        f"cannot load model '{reference}': {_first_line(exc)}",
        "pass a local model directory, a run directory, or a packaged name "
        f"({', '.join(PACKAGED_MODELS)}); hub ids need network access",
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

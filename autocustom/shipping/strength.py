"""A trained model at any strength `s`: the model `base + s * (tuned - base)`, for `dial` and `export`.

`s = 0` is the base model and `s = 1` the run's own model, both exactly; `s > 1` amplifies the change.
- Under LoRA the adapter's scaling is multiplied by `s` (peft's `LoraLayer.set_scale`, which sets the
  initial `alpha / r` times `s`): the frozen base weights are never copied.
- Under full fine-tuning the weights are set to `torch.lerp(base, tuned, s)`, one scale at a time.
  `lerp` returns `start` at weight 0 and `end` at weight 1 bit for bit (it switches formula at 0.5), so
  both ends are exact. The tuned weights are read back from the run's safetensors at every scale
  instead of being kept as a third copy in memory, which also restores them exactly afterwards.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autocustom.errors import ModelLoadError, UsageError
from autocustom.layout import RunSource, run_source


def find_run(reference: str) -> RunSource:
    """The trained model `reference` names: a `train` directory, a `run` directory, or a LoRA adapter.

    Anything else (a plain model, a missing path) has no base to scale from: UsageError, exit 2.
    """
    source = run_source(reference)
    if source.trained:
        return source
    raise UsageError(
        f"{reference} is not a training run or a LoRA adapter, so it has no base to scale from",
        "pass the --out directory of `autocustom train` (it holds run_config.json and model/), "
        "a `run` directory, or a peft adapter directory",
    )


def recorded_run(reference: str) -> RunSource:
    """A run that records its base, axis and target pole, as `selectivity` and `compose` need (a bare
    adapter records no axis): UsageError otherwise."""
    run = find_run(reference)
    if run.axis is None or run.toward is None or not run.base:
        raise UsageError(
            f"{reference} records no axis and target pole (a bare adapter?)",
            "pass the --out directory of `autocustom train` or of `autocustom run`",
        )
    return run


@dataclass
class ScaledModel:
    """A trained model that `set_scale` puts at any strength, beside the frozen base it came from."""

    source: RunSource
    model: Any  # the tuned model (a peft PeftModel under LoRA)
    tokenizer: Any
    base: Any  # the frozen base: the reference of every measurement, and `lerp`'s start
    base_reference: str
    scale: float = 1.0

    def set_scale(self, scale: float) -> None:
        """Put the model at strength `scale` (absolute, not relative to the current scale)."""
        if self.source.lora:
            _set_lora_scale(self.model, scale)
        else:
            _interpolate(self.model, self.base, self.source.weights, scale)
        self.scale = scale

    def merged(self, scale: float) -> Any:
        """A plain transformers model at `scale` (the LoRA merged into its base): what `export` saves.

        Consumes this ScaledModel under LoRA (peft merges into the base weights in place).
        """
        self.set_scale(scale)
        return self.model.merge_and_unload() if self.source.lora else self.model


def open_scaled(source: RunSource, base_reference: str, device: Any, options: Any = None) -> ScaledModel:
    """Load the tuned model and its base on `device`.

    Under LoRA the base is the tuned model with its adapter disabled (no second copy); under full
    fine-tuning it is loaded separately, because `lerp` and Drift read its weights.
    """
    from autocustom.llm.models import DEFAULT_LOAD, AdapterDisabled, load_model

    options = options or DEFAULT_LOAD
    tuned = load_model(str(source.weights), device=device, options=options)
    if source.lora and tuned.base_reference == base_reference:
        base: Any = AdapterDisabled(tuned.model)
    else:
        base = load_model(base_reference, device=device, options=options).model
    return ScaledModel(source, tuned.model, tuned.tokenizer, base, base_reference)


def _set_lora_scale(model: Any, scale: float) -> None:
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer):
            for adapter in module.active_adapters:
                module.set_scale(adapter, scale)


def _interpolate(model: Any, base: Any, weights: Path, scale: float) -> None:
    """Every parameter to lerp(base, tuned, scale), tuned read from the run's safetensors by name."""
    import torch
    from safetensors import safe_open

    files = sorted(weights.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"{weights} holds no .safetensors weights", "re-save the run's model")
    base_parameters = dict(base.named_parameters())
    with ExitStack() as stack, torch.no_grad():
        handles = [stack.enter_context(safe_open(str(f), framework="pt", device="cpu")) for f in files]
        where = {name: handle for handle in handles for name in handle.keys()}  # noqa: SIM118
        for name, parameter in model.named_parameters():
            if name not in where:
                raise ModelLoadError(
                    f"{weights} has no tensor {name}: the dial reads the tuned weights by parameter name",
                    "re-save the run's model with save_pretrained",
                )
            if name not in base_parameters or base_parameters[name].shape != parameter.shape:
                raise UsageError(
                    f"the base model has no parameter {name} of shape {tuple(parameter.shape)}",
                    "the run records the base it was trained from; restore that model",
                )
            end = where[name].get_tensor(name).to(parameter.device, torch.float32)
            start = base_parameters[name].to(torch.float32)
            parameter.copy_(torch.lerp(start, end, scale).to(parameter.dtype))

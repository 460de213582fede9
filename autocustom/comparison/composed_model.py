"""Several customizations in one model, each at its own scale: what `compose` measures.

A *part* is a customization of one axis: a LoRA run, a full fine-tuning run or a steering vector
(`steer`'s directory). On one base model, the composition at scales (s_1, ..., s_k) is

- **LoRA**: every adapter loaded into one peft model under its own name and all active at once
  (peft's `LoraModel.set_adapter([...])`); a part's scale multiplies its adapter's scaling
  (`LoraLayer.set_scale`, as the dial's), so the adapters' changes add, each scaled;
- **full fine-tuning**: the base weights set to base + sum_i s_i (tuned_i - base), computed as
  lerp(base, tuned_k, s_k) + sum_{i != k} s_i (tuned_i - base) with k the first part whose scale is
  not 0: one part at 1 and the others at 0 is that run's weights bit for bit, all at 0 the base's;
- **steering**: each vector's chosen layers and coefficient, times the part's scale, summed per layer
  and added by forward hooks only while the composed model runs (`steering.vector.Steered`).

Kinds mix in that order (deltas into the weights, adapters on top, vectors in the hooks), because each
is a change added to the same base. What cannot be composed is refused in one line: parts of
different base models (a different tokenizer or shape), two parts of one axis (which one counts?).
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autocustom.errors import UsageError
from autocustom.layout import STEER_VECTOR
from autocustom.shipping.strength import recorded_run
from autocustom.steering.vector import Steered, SteeringVector

KINDS = ("lora", "full", "steering")


@dataclass(frozen=True)
class Part:
    """One customization to compose: where it lies, its kind, and the base, axis and pole it records."""

    reference: str
    kind: str  # one of KINDS
    base: str
    axis: str  # "formal:casual"
    toward: str
    weights: Path  # the adapter or model directory, or the steering vector's file
    data: str | None = None  # the dataset it was made from, as recorded


def read_part(reference: str) -> Part:
    """The part `reference` names: a `steer` directory, or a `train`/`run` directory (LoRA or full)."""
    vector_file = Path(reference).expanduser() / STEER_VECTOR
    if vector_file.is_file():
        metadata = SteeringVector.load(vector_file).metadata
        if not metadata.get("axis") or not metadata.get("toward") or not metadata.get("model"):
            raise UsageError(
                f"{vector_file} records no axis, target pole or model", "fit it again with `autocustom steer`"
            )
        return Part(
            reference, "steering", metadata["model"], metadata["axis"], metadata["toward"], vector_file
        )
    run = recorded_run(reference)
    kind = "lora" if run.lora else "full"
    return Part(reference, kind, run.base, run.axis, run.toward, run.weights, run.data)


def check_parts(parts: list[Part]) -> None:
    """At least two parts, of one base, each of its own axis: UsageError (exit 2) otherwise."""
    if len(parts) < 2:
        raise UsageError(
            f"compose needs at least two runs, got {len(parts)}",
            "pass --run twice or more (one run at a strength is `autocustom dial`)",
        )
    bases = {part.base for part in parts}
    if len(bases) > 1:
        named = "; ".join(f"{part.reference}: {part.base}" for part in parts)
        raise UsageError(
            f"the runs have different base models ({named}); their changes cannot be added",
            "compose runs trained (or steered) from the same base model",
        )
    seen: dict[str, str] = {}
    for part in parts:
        if part.axis in seen:
            raise UsageError(
                f"{seen[part.axis]} and {part.reference} are both of the axis {part.axis}",
                "compose one run per axis (to weigh one run, use its scale)",
            )
        seen[part.axis] = part.reference


@dataclass
class Composition:
    """The composed model (`model`, what is measured), its frozen base (`base`, the reference), and
    `set_scales`, which puts every part at its own scale (absolute, not relative)."""

    parts: list[Part]
    model: Any
    base: Any
    tokenizer: Any
    _policy: Any  # the (peft-wrapped) weights the parts change
    _weights: dict[str, Any]  # the base model's parameters by name, as the runs' safetensors name them
    _frozen: dict[str, Any]  # the untouched base's parameters by name (full fine-tuning parts only)
    scales: tuple[float, ...] = ()

    def set_scales(self, scales: tuple[float, ...]) -> None:
        if len(scales) != len(self.parts):
            raise UsageError(f"{len(scales)} scales for {len(self.parts)} parts", "give one scale per part")
        by_kind = {
            kind: [(p, s) for p, s in zip(self.parts, scales, strict=True) if p.kind == kind]
            for kind in KINDS
        }
        if by_kind["full"]:
            _sum_deltas(self._weights, self._frozen, by_kind["full"])
        for index, (part, scale) in enumerate(zip(self.parts, scales, strict=True)):
            if part.kind == "lora":
                _set_adapter_scale(self._policy, _adapter_name(index), scale)
        self.model = _steered(self._policy, by_kind["steering"])
        self.scales = tuple(scales)


def open_composition(parts: list[Part], device: Any, options: Any = None) -> Composition:
    """Load the base once, the parts onto it, and the reference: the adapters disabled when only LoRA
    parts change weights (no second copy), a separate frozen base when full fine-tuning parts do."""
    from autocustom.llm.models import DEFAULT_LOAD, AdapterDisabled, load_model

    options = options or DEFAULT_LOAD
    loaded = load_model(parts[0].base, device=device, options=options)
    policy = loaded.model
    weights = dict(policy.named_parameters())  # before peft renames them (the tensors stay the same)
    frozen: dict[str, Any] = {}
    reference: Any = policy
    if any(part.kind == "full" for part in parts):
        reference = load_model(parts[0].base, device=device, options=options).model
        frozen = dict(reference.named_parameters())
    adapters = [(index, part) for index, part in enumerate(parts) if part.kind == "lora"]
    if adapters:
        policy = _load_adapters(policy, adapters)
        if not frozen:
            reference = AdapterDisabled(policy)
    composition = Composition(parts, policy, reference, loaded.tokenizer, policy, weights, frozen)
    composition.set_scales(tuple(1.0 for _ in parts))
    return composition


def _adapter_name(index: int) -> str:
    return f"part{index}"


def _load_adapters(model: Any, adapters: list[tuple[int, Part]]) -> Any:
    from peft import PeftModel

    (first_index, first), *rest = adapters
    wrapped = PeftModel.from_pretrained(model, str(first.weights), adapter_name=_adapter_name(first_index))
    for index, part in rest:
        wrapped.load_adapter(str(part.weights), adapter_name=_adapter_name(index))
    # every adapter active at once: LoraModel's set_adapter takes a list (PeftModel's takes one name)
    wrapped.base_model.set_adapter([_adapter_name(index) for index, _ in adapters], inference_mode=True)
    wrapped.eval()
    return wrapped


def _set_adapter_scale(model: Any, adapter: str, scale: float) -> None:
    from peft.tuners.lora import LoraLayer

    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.set_scale(adapter, scale)


def _sum_deltas(weights: dict[str, Any], frozen: dict[str, Any], parts: list[tuple[Part, float]]) -> None:
    """Every base parameter to base + sum_i s_i (tuned_i - base) (the module doc's exact form), the
    tuned tensors read from each run's safetensors by name, as the dial reads one run's."""
    import torch
    from safetensors import safe_open

    moving = [(part, scale) for part, scale in parts if scale != 0]
    with ExitStack() as stack, torch.no_grad():
        handles = []
        for part, scale in moving:
            files = sorted(part.weights.glob("*.safetensors"))
            opened = [stack.enter_context(safe_open(str(f), framework="pt", device="cpu")) for f in files]
            handles.append(({name: h for h in opened for name in h.keys()}, scale))  # noqa: SIM118
        for name, parameter in weights.items():
            start = frozen[name].to(torch.float32)
            total = start
            for position, (where, scale) in enumerate(handles):
                if name not in where:
                    raise UsageError(
                        f"{moving[position][0].reference} has no tensor {name}",
                        "compose runs of one base model",
                    )
                tuned = where[name].get_tensor(name).to(parameter.device, torch.float32)
                total = torch.lerp(start, tuned, scale) if position == 0 else total + scale * (tuned - start)
            parameter.copy_(total.to(parameter.dtype))


def _steered(model: Any, parts: list[tuple[Part, float]]) -> Any:
    """The model seen with every steering part's vector, times its scale, summed per layer (the model
    itself when no part steers)."""
    if not parts:
        return model
    additions: dict[int, Any] = {}
    for part, scale in parts:
        for layer, vector in SteeringVector.load(part.weights).applied().items():
            added = scale * vector
            additions[layer] = additions[layer] + added if layer in additions else added
    # coefficient 1 over the summed additions: applied() is then the sums themselves
    return Steered(model, SteeringVector(additions, tuple(additions), 1.0))

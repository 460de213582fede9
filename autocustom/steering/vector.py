"""Steering vectors: the mean difference of the poles' activations, added to the residual stream.

The representation-steering baseline the field compares fine-tuning with (AxBench finds mean
difference the strongest of its representation methods): for every decoder layer, the mean over the
train pairs of (the target answer's activations - the opposite answer's), each answer's activations
averaged over its tokens, read at the layer's output (the residual stream after the layer, where
llama.cpp's control vectors are added too). At inference `coefficient x direction` is added to the
output of the chosen layer (or of each layer of a range) through forward hooks, at every position.

The directions are computed here rather than with repeng: repeng fits a PCA direction (not the mean
difference), on its own prompt format, and wraps the model in place; autocustom needs the mean
difference on the same tokens training and scoring see (`chat.encode_prompt_answer`), and a view of the
base model that steers only while the steered side of a measurement runs (`Steered`), so the same
weights stay the unsteered reference.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autocustom.data.schema import Pair
from autocustom.errors import ModelLoadError, UsageError
from autocustom.llm.chat import PLAIN, PromptCondition, encode_prompt_answer, render_prompt
from autocustom.llm.models import ModelView

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: `compare` and `steer` read this module's names for their
# --help, which must not pay torch's import time

GGUF_ARCHITECTURE = "controlvector"  # what llama.cpp's control-vector loader reads
FIT_MAX_LENGTH = 512  # tokens of prompt + answer when reading activations: the scorer's own limit
Layers = tuple[int, ...]  # one layer, or a range of layers each steered by its own direction


@dataclass
class SteeringVector:
    """Per-layer directions (float32, [hidden]) and where and how strongly they are applied."""

    directions: dict[int, torch.Tensor]  # by decoder layer index, 0-based as llama.cpp counts
    layers: Layers = ()
    coefficient: float = 0.0
    metadata: dict[str, str] = field(default_factory=dict)  # axis, toward, model, model_type

    def applied(self) -> dict[int, torch.Tensor]:
        """What is added to each chosen layer's output: coefficient x its direction."""
        return {layer: self.coefficient * self.directions[layer] for layer in self.layers}

    def save(self, path: Path) -> None:
        """A safetensors file: every layer's direction, with the choice and the axis as metadata."""
        from safetensors.torch import save_file

        from autocustom.fileio import atomic_path

        tensors = {f"direction.{layer}": vector.contiguous() for layer, vector in self.directions.items()}
        metadata = {
            **self.metadata,
            "layers": ",".join(map(str, self.layers)),
            "coefficient": repr(self.coefficient),
        }
        with atomic_path(path) as staging:
            save_file(tensors, str(staging), metadata=metadata)

    @classmethod
    def load(cls, path: Path) -> SteeringVector:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            directions = {int(key.split(".")[1]): handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        layers = tuple(int(x) for x in metadata.pop("layers", "").split(",") if x)
        coefficient = float(metadata.pop("coefficient", "0"))
        return cls(dict(sorted(directions.items())), layers, coefficient, metadata)

    def write_gguf(self, path: Path) -> None:
        """A llama.cpp control vector of the chosen layers (`llama-cli --control-vector-scaled FILE S`).

        The directions are written unscaled, so S is the coefficient; layer 0 is left out because
        llama.cpp never applies a control vector to it.
        """
        import gguf

        from autocustom.fileio import atomic_path

        layers = [layer for layer in self.layers if layer >= 1]
        if not layers:
            raise UsageError("a llama.cpp control vector cannot steer layer 0", "choose layers from 1 up")
        with atomic_path(path) as staging:
            writer = gguf.GGUFWriter(str(staging), GGUF_ARCHITECTURE)
            writer.add_string(f"{GGUF_ARCHITECTURE}.model_hint", self.metadata.get("model_type", ""))
            writer.add_uint32(f"{GGUF_ARCHITECTURE}.layer_count", len(layers))
            for layer in layers:
                writer.add_tensor(f"direction.{layer}", self.directions[layer].float().numpy())
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()


def read_gguf(path: Path) -> dict[int, torch.Tensor]:
    """The directions of a control-vector GGUF, by layer (what llama.cpp will add, before its scale)."""
    import gguf
    import torch

    reader = gguf.GGUFReader(str(path))
    return {
        int(tensor.name.split(".")[1]): torch.tensor(tensor.data.copy(), dtype=torch.float32)
        for tensor in reader.tensors
        if tensor.name.startswith("direction.")
    }


def decoder_layers(model: Any) -> Sequence[torch.nn.Module]:
    """The decoder blocks of a causal LM (Llama, Gemma, Qwen, Mistral, GPT-2 layouts; peft-wrapped too)."""
    import torch

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    for path in ("model.layers", "model.language_model.layers", "transformer.h", "gpt_neox.layers"):
        module = inner
        for name in path.split("."):
            module = getattr(module, name, None)
        if isinstance(module, torch.nn.ModuleList):
            return module
    raise ModelLoadError(
        f"cannot find the decoder layers of {type(inner).__name__}",
        "steering supports Llama-, Gemma-, Qwen-, Mistral-, GPT-2- and NeoX-style models",
    )


@contextmanager
def _added(model: Any, additions: dict[int, torch.Tensor]) -> Iterator[None]:
    """Forward hooks that add a vector to the output hidden states of the given layers."""
    layers = decoder_layers(model)

    def hook_for(vector: torch.Tensor):
        def hook(_module, _inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            steered = hidden + vector.to(device=hidden.device, dtype=hidden.dtype)
            return (steered, *output[1:]) if isinstance(output, tuple) else steered

        return hook

    handles = [layers[layer].register_forward_hook(hook_for(vector)) for layer, vector in additions.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class Steered(ModelView):
    """A model seen with a steering vector applied: the hooks are on only while this view runs.

    The same weights stay the unsteered reference of every measurement (base margins, Drift), so
    steering costs no second copy of the model.
    """

    def __init__(self, model: Any, vector: SteeringVector) -> None:
        super().__init__(model)
        self.additions = vector.applied()

    def running(self):
        return _added(self.model, self.additions)


def layer_activations(
    model: Any,
    tokenizer: Any,
    pairs: Sequence[Pair],
    pole: str,
    *,
    condition: PromptCondition = PLAIN,
    batch_size: int = 8,
) -> torch.Tensor:
    """[pairs, layers, hidden] float32: each pole answer's activations, averaged over its tokens."""
    import torch

    from autocustom.tensors import pad_rows, padding_id

    layers = decoder_layers(model)
    encoded = [
        encode_prompt_answer(
            tokenizer,
            render_prompt(tokenizer, condition.conversation(p.question)),
            p.answers[pole],
            FIT_MAX_LENGTH,
        )
        for p in pairs
    ]
    device = next(model.parameters()).device
    means = []
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start : start + batch_size]
        ids, mask = pad_rows([e.input_ids for e in batch], padding_id(tokenizer))
        answer = torch.zeros_like(mask, dtype=torch.float32)
        for row, e in enumerate(batch):
            answer[row, e.prompt_length : len(e.input_ids)] = 1.0
        outputs = _layer_outputs(model, layers, ids.to(device), mask.to(device))
        weights = (answer / answer.sum(-1, keepdim=True)).to(device)  # mean over each answer's tokens
        means.append(torch.stack([torch.einsum("bt,bth->bh", weights, o.float()) for o in outputs], 1).cpu())
    return torch.cat(means)


def _layer_outputs(model: Any, layers: Sequence[torch.nn.Module], ids, mask) -> list[torch.Tensor]:
    """The output hidden states of every layer for one batch (read by hooks, so the last layer's is
    taken before the final norm, as the steering hook sees it)."""
    captured: list[torch.Tensor] = []

    def capture(_module, _inputs, output):
        captured.append(output[0] if isinstance(output, tuple) else output)

    import torch

    handles = [layer.register_forward_hook(capture) for layer in layers]
    try:
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def mean_difference(
    model: Any, tokenizer: Any, pairs: Sequence[Pair], toward: str, opposite: str, *, batch_size: int = 8
) -> dict[int, torch.Tensor]:
    """Per layer, the mean over pairs of (target answer activations - opposite answer activations)."""
    if not pairs:
        raise UsageError(
            "a steering vector needs train pairs; the train split is empty", "regenerate the data"
        )
    target = layer_activations(model, tokenizer, pairs, toward, batch_size=batch_size)
    other = layer_activations(model, tokenizer, pairs, opposite, batch_size=batch_size)
    difference = (target - other).mean(0)
    return {layer: difference[layer].clone() for layer in range(difference.shape[0])}


def default_layers(n_layers: int) -> list[Layers]:
    """Five single layers spread over the middle of the network (25% to 75% of its depth).

    Steering works best in the middle layers (AxBench, repeng's defaults); the ends either carry
    little of the concept yet or leave too little computation to use it.
    """
    picks = sorted({max(1, round(n_layers * f)) for f in (0.25, 0.375, 0.5, 0.625, 0.75)})
    return [(layer,) for layer in picks if layer < n_layers]


def parse_layers(specs: Sequence[str], n_layers: int) -> list[Layers]:
    """`["8", "6-10"]` -> [(8,), (6, 7, 8, 9, 10)]; empty -> `default_layers`."""
    if not specs:
        return default_layers(n_layers)
    candidates = []
    for spec in specs:
        first, _, last = spec.partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            raise UsageError(
                f"--layers entry '{spec}' is not a layer or a range", "e.g. --layers 8,6-10"
            ) from None
        if not 0 <= low <= high < n_layers:
            raise UsageError(
                f"--layers entry '{spec}' is outside the model's layers 0-{n_layers - 1}",
                f"choose layers between 1 and {n_layers - 1}",
            )
        candidates.append(tuple(range(low, high + 1)))
    return candidates


def layers_label(layers: Layers) -> str:
    return str(layers[0]) if len(layers) == 1 else f"{layers[0]}-{layers[-1]}"

"""Steering vectors: the hook adds its vector at the chosen layer only, 0 is the base, files round-trip."""

from __future__ import annotations

import contextlib

import pytest
import torch

from autocustom.errors import UsageError
from autocustom.llm.models import load_model
from autocustom.scoring.logprobs import pair_margins
from autocustom.steering.vector import (
    Steered,
    SteeringVector,
    decoder_layers,
    default_layers,
    layer_activations,
    mean_difference,
    parse_layers,
    read_gguf,
)
from tests.sample_dataset import write_small_dataset


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from autocustom.data.io import load_dataset_dir

    return load_dataset_dir(write_small_dataset(tmp_path_factory.mktemp("steer-data"), per_subarea=3))


def _outputs(model, ids, view: Steered | None = None) -> list[torch.Tensor]:
    """Every layer's output; under `view`, as the next layer receives it (after the steering hook)."""
    captured = []
    with view.running() if view is not None else contextlib.nullcontext():
        handles = [  # registered after the steering hooks, so they run after them
            layer.register_forward_hook(
                lambda _m, _i, out: captured.append(out[0] if isinstance(out, tuple) else out)
            )
            for layer in decoder_layers(model)
        ]
        try:
            with torch.no_grad():
                model(input_ids=ids)
        finally:
            for handle in handles:
                handle.remove()
    return [c.clone() for c in captured]


def test_the_hook_adds_the_vector_at_the_chosen_layer_only(tiny):
    model = tiny.model
    hidden = model.config.hidden_size
    direction = torch.randn(hidden)
    vector = SteeringVector({0: torch.zeros(hidden), 1: direction}, layers=(1,), coefficient=2.5)
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    plain = _outputs(model, ids)
    steered = _outputs(model, ids, Steered(model, vector))
    assert torch.equal(steered[0], plain[0])  # before the chosen layer: untouched
    assert torch.allclose(steered[1], plain[1] + 2.5 * direction, atol=1e-5)  # at it: exactly c x v
    assert torch.equal(_outputs(model, ids)[1], plain[1])  # the hooks are gone once the view returns


def test_coefficient_zero_gives_the_base_margins_exactly(tiny, dataset):
    pairs = dataset.split("test")
    directions = mean_difference(tiny.model, tiny.tokenizer, dataset.split("train"), "formal", "casual")
    zero = SteeringVector(directions, layers=(1,), coefficient=0.0)
    base = pair_margins(tiny.model, tiny.tokenizer, pairs, "formal")
    assert (pair_margins(Steered(tiny.model, zero), tiny.tokenizer, pairs, "formal") == base).all()
    some = SteeringVector(directions, layers=(1,), coefficient=4.0)
    assert not (pair_margins(Steered(tiny.model, some), tiny.tokenizer, pairs, "formal") == base).all()


def test_the_direction_is_the_mean_difference_of_the_answers_activations(tiny, dataset):
    train = dataset.split("train")
    directions = mean_difference(tiny.model, tiny.tokenizer, train, "formal", "casual")
    formal = layer_activations(tiny.model, tiny.tokenizer, train, "formal", batch_size=1)
    casual = layer_activations(tiny.model, tiny.tokenizer, train, "casual", batch_size=len(train))
    assert sorted(directions) == [0, 1]
    # batching (padding) does not change a pair's activations, and the vector is their mean difference
    assert torch.allclose(directions[1], (formal - casual).mean(0)[1], atol=1e-4)


def test_the_vector_round_trips_through_safetensors_and_gguf(tmp_path):
    directions = {layer: torch.randn(16) for layer in range(4)}
    vector = SteeringVector(directions, (2, 3), 1.5, {"axis": "formal:casual", "model_type": "llama"})
    vector.save(tmp_path / "v.safetensors")
    loaded = SteeringVector.load(tmp_path / "v.safetensors")
    assert (
        loaded.layers == (2, 3) and loaded.coefficient == 1.5 and loaded.metadata["axis"] == "formal:casual"
    )
    assert all(torch.equal(loaded.directions[k], directions[k]) for k in directions)
    vector.write_gguf(tmp_path / "v.gguf")
    written = read_gguf(tmp_path / "v.gguf")
    assert sorted(written) == [2, 3]  # only the chosen layers: llama.cpp adds every direction it finds
    assert all(torch.equal(written[k], directions[k]) for k in written)

    import gguf

    reader = gguf.GGUFReader(str(tmp_path / "v.gguf"))
    architecture = reader.fields["general.architecture"]
    assert bytes(architecture.parts[architecture.data[0]]).decode() == "controlvector"


def test_layer_zero_cannot_be_a_control_vector(tmp_path):
    with pytest.raises(UsageError, match="layer 0"):
        SteeringVector({0: torch.zeros(4)}, (0,), 1.0).write_gguf(tmp_path / "v.gguf")


def test_layer_specs():
    assert parse_layers(["8", "6-10"], 24) == [(8,), (6, 7, 8, 9, 10)]
    assert default_layers(24) == [(6,), (9,), (12,), (15,), (18,)]
    assert parse_layers([], 2) == [(1,)]
    for bad in ("x", "3-1", "30"):
        with pytest.raises(UsageError, match="--layers"):
            parse_layers([bad], 24)

"""`generate` on real models: the packaged SmolLM2 (local and behind `transformers serve`) + MiniLM."""

from __future__ import annotations

import pytest

from autocustom.axis import Axis
from autocustom.data.generate import GenerateConfig, generate
from autocustom.data.io import load_dataset_dir
from autocustom.data.schema import SPLITS
from tests.serve_fixture import transformers_server  # noqa: F401  (registers the fixture)

# Small sizes and short answers keep each run to a few minutes on 2 CPU cores.
SMALL = {"subareas": 3, "questions_per_subarea": 3, "answer_max_new_tokens": 64, "max_retries": 2}


def assert_usable_dataset(out, config: GenerateConfig) -> None:
    dataset = load_dataset_dir(out)  # every record checked against the schema and the axis' poles
    subareas_of = {name: {p.subarea for p in dataset.split(name)} for name in SPLITS}
    for first in SPLITS:
        for second in SPLITS:
            assert first == second or not subareas_of[first] & subareas_of[second]
    counts = dataset.manifest.counts
    # at least 3 answered pairs; the pair check and the audit may drop some of a tiny run's (recorded)
    checked_out = sum(
        counts["dropped"].get(reason, 0) for reason in ("content-mismatch", "degenerate", "leak")
    )
    assert counts["pairs"] >= 1 and counts["pairs"] + checked_out >= 3, counts
    if len({s for ids in subareas_of.values() for s in ids}) >= 3:
        assert all(subareas_of.values()), counts
    assert counts["calls_made"] > 0
    assert all(
        p.answers[pole].strip() for name in SPLITS for p in dataset.split(name) for pole in config.axis.poles
    )


@pytest.mark.slow
def test_generate_on_packaged_smollm2(tmp_path):
    config = GenerateConfig(axis=Axis("formal", "casual"), out=tmp_path / "ds", device="cpu", **SMALL)
    result = generate(config)
    assert result.manifest.model == "smollm2-135m" and result.manifest.backend == "local"
    assert_usable_dataset(config.out, config)


@pytest.mark.slow
def test_generate_through_transformers_serve(tmp_path, transformers_server):  # noqa: F811
    config = GenerateConfig(
        axis=Axis("formal", "casual"),
        out=tmp_path / "ds",
        backend="openai",
        model=transformers_server.model,
        base_url=transformers_server.base_url,
        concurrency=1,  # transformers serve answers one request at a time; more would only queue and time out
        **{**SMALL, "questions_per_subarea": 2, "answer_max_new_tokens": 48, "max_rounds": 2},
    )
    result = generate(config)
    assert result.manifest.backend == "openai"
    assert_usable_dataset(config.out, config)

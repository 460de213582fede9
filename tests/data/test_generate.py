"""The pipeline end to end on a scripted backend: files, schema, split, manifest, drops and resume."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from autocustom import __version__
from autocustom.axis import Axis
from autocustom.data.generate import GenerateConfig, GenerateResult, generate
from autocustom.data.io import load_dataset_dir, read_dropped
from autocustom.data.schema import SPLITS, Pair
from autocustom.errors import OutputExistsError, UsageError
from autocustom.fileio import read_jsonl
from autocustom.prompts import load_prompt
from tests.conftest import ScriptedBackend
from tests.data import NEAR_DUPLICATE, QUESTIONS, REFUSED_QUESTION, TOPICS, fake_reply

AXIS = Axis("formal", "casual")


def make_config(tmp_path, **overrides) -> GenerateConfig:
    settings = {"axis": AXIS, "out": tmp_path / "ds", "subareas": 4, "questions_per_subarea": 3, "seed": 1}
    return GenerateConfig(**{**settings, **overrides})


class BatchRecordingBackend(ScriptedBackend):
    """A ScriptedBackend that also records how the prompts were grouped into `complete` calls."""

    def __init__(self, reply) -> None:
        super().__init__(reply)
        self.batches: list[list[str]] = []

    def complete(self, conversations, params, on_reply=None):
        self.batches.append([c[-1]["content"] for c in conversations])
        return super().complete(conversations, params, on_reply)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[GenerateResult, BatchRecordingBackend, GenerateConfig]:
    """One scripted run shared by the tests that only read its output (a run embeds with MiniLM)."""
    config = make_config(tmp_path_factory.mktemp("generated"), subareas=6, split=(0.5, 0.25, 0.25))
    backend = BatchRecordingBackend(fake_reply)
    return generate(config, backend=backend), backend, config


def test_files_match_the_schema_and_the_split_holds(generated):
    _result, _backend, config = generated
    dataset = load_dataset_dir(config.out)  # validates every record and the answers' poles
    assert [s.name.lower() for s in dataset.subareas] == TOPICS
    by_split = {name: {p.subarea for p in dataset.split(name)} for name in SPLITS}
    assert all(by_split.values())  # 6 subareas: every split has at least one
    assert not (by_split["train"] & by_split["validation"] or by_split["train"] & by_split["test"])
    assert not by_split["validation"] & by_split["test"]
    pairs = read_jsonl(config.out / "pairs.jsonl", Pair.from_dict)
    assert sorted(p.id for p in pairs) == sorted(p.id for name in SPLITS for p in dataset.split(name))
    assert all(set(p.answers) == {"formal", "casual"} for p in pairs)
    assert all(p.answers["formal"] != p.answers["casual"] for p in pairs)
    assert not list(config.out.glob(".*.tmp"))


def test_drops_are_recorded_with_their_reason(generated):
    result, _backend, config = generated
    dropped = read_dropped(config.out / "dropped.jsonl")
    near = [d for d in dropped if d.reason == "near-duplicate"]
    assert [d.text for d in near] == [NEAR_DUPLICATE]
    pairs = {p.id: p for p in read_jsonl(config.out / "pairs.jsonl", Pair.from_dict)}
    assert pairs[near[0].of].question == QUESTIONS["job interviews"][0]
    assert 0.9 <= near[0].similarity < 1.0
    refused = [d for d in dropped if d.reason == "refused"]
    assert [d.text for d in refused] == [REFUSED_QUESTION]
    assert result.counts["dropped"] == {"near-duplicate": 1, "refused": 1}


def test_manifest_records_what_made_the_dataset(generated):
    result, backend, config = generated
    manifest = json.loads((config.out / "manifest.json").read_text())
    assert manifest["axis"]["pole_a"] == "formal" and manifest["axis"]["pole_b"] == "casual"
    assert (manifest["backend"], manifest["model"]) == ("scripted", "scripted-model")
    assert manifest["prompts"] == {n: load_prompt(n).sha256 for n in ("subareas", "questions", "answers")}
    assert manifest["seed"] == 1 and manifest["version"] == __version__
    assert manifest["settings"]["split"] == [0.5, 0.25, 0.25]
    counts = manifest["counts"]
    assert counts["subareas"] == 6 and counts["questions_asked"] == 18
    assert counts["questions_kept"] == 18  # the near-duplicate was replaced by asking again
    assert counts["pairs"] == 17  # minus the refused one
    assert sum(counts["pairs_per_split"].values()) == 17
    assert counts["shortfall"] == {"subareas": 0, "questions": 0, "pairs": 1}
    assert counts["calls_made"] == len(backend.calls) and counts["cache_hits"] == 0
    refusals = sum(REFUSED_QUESTION in c[-1]["content"] for c in backend.calls)
    assert refusals == 2 * (config.max_retries + 1)  # both poles' answers re-sampled, then dropped
    assert result.to_dict()["counts"] == counts


def test_rerun_makes_no_new_call_and_writes_the_same_files(generated, scripted_backend):
    _result, _backend, config = generated
    before = {p.name: p.read_bytes() for p in config.out.glob("*.jsonl")}
    stale = config.out / ".pairs.jsonl.k1ll3d.tmp"  # what a kill during an atomic write leaves
    stale.write_text('{"id": "p0001", "subar')
    again = scripted_backend(fake_reply)
    result = generate(config, backend=again)
    assert not stale.exists()
    assert again.calls == []
    assert result.counts["calls_made"] == 0 and result.counts["cache_hits"] > 0
    assert {p.name: p.read_bytes() for p in config.out.glob("*.jsonl")} == before


def test_datasets_reads_the_files_as_they_are(generated):
    from datasets import load_dataset

    _result, _backend, config = generated
    files = {name: str(config.out / f"{name}.jsonl") for name in SPLITS}
    loaded = load_dataset("json", data_files=files)
    assert sum(len(loaded[name]) for name in SPLITS) == 17
    assert set(loaded["train"].column_names) == {"id", "subarea", "question", "answers"}


def test_a_model_that_repeats_itself_is_asked_again_then_the_shortfall_is_reported(
    tmp_path, scripted_backend
):
    def stubborn(messages):
        text = messages[-1]["content"]
        if text.startswith("List "):
            return "1. Job Interviews\n2. job interviews!\n3. Job interviews"
        return fake_reply(messages)

    backend = scripted_backend(stubborn)
    config = make_config(tmp_path, subareas=3, max_rounds=3)
    result = generate(config, backend=backend)
    topic_calls = [c for c in backend.calls if c[-1]["content"].startswith("List ")]
    assert len(topic_calls) == 3  # every round asked again, listing what it already had
    assert "Do not repeat any of these" in topic_calls[1][-1]["content"]
    assert result.counts["subareas"] == 1
    assert result.shortfall["subareas"] == 2
    assert result.counts["dropped"]["duplicate-subarea"] == 2 + 2 * 3


def test_one_topic_under_two_names_is_merged_and_the_model_asked_again(tmp_path, scripted_backend):
    def rewording(messages):
        text = messages[-1]["content"]
        if text.startswith("List ") and "Do not repeat" not in text:
            return "1. Job interviews\n2. Interviews for a job\n3. Wedding toasts\n4. Customer complaints"
        if text.startswith("List "):
            return "1. Handling customer complaints\n2. Tax forms\n3. Team meetings"
        return fake_reply(messages)

    result = generate(make_config(tmp_path, subareas=4), backend=scripted_backend(rewording))
    names = [s.name for s in load_dataset_dir(result.out).subareas]
    assert names == ["Job interviews", "Wedding toasts", "Customer complaints", "Tax forms"]
    merged = result.counts["subareas_merged"]
    assert [(m["name"], m["into"]) for m in merged] == [
        ("Interviews for a job", "Job interviews"),
        ("Handling customer complaints", "Customer complaints"),
    ]
    assert all(m["cosine"] >= 0.8 for m in merged)
    audit = json.loads((result.out / "manifest.json").read_text())["counts"]["audit"]
    assert audit["passed"] and audit["questions"]["n"] > 0 and audit["subarea_threshold"] == 0.8


def test_unparseable_replies_are_retried_then_recorded(tmp_path, scripted_backend):
    def junk_for_one_topic(messages):
        if "about wedding toasts" in messages[-1]["content"].lower():
            return "I love weddings. They are nice."
        return fake_reply(messages)

    backend = scripted_backend(junk_for_one_topic)
    config = make_config(tmp_path, max_retries=2, max_rounds=2)
    result = generate(config, backend=backend)
    asks = [c for c in backend.calls if "about Wedding Toasts" in c[-1]["content"]]
    assert len(asks) == (config.max_retries + 1) * config.max_rounds
    failed = [d for d in read_dropped(config.out / "dropped.jsonl") if d.reason == "parse-failed"]
    assert len(failed) == config.max_rounds and "I love weddings" in failed[0].text
    assert result.counts["questions_kept"] == 9 and result.shortfall["questions"] == 3


def test_another_axis_in_the_same_directory_is_refused(generated, scripted_backend):
    _result, _backend, config = generated
    before = (config.out / "manifest.json").read_bytes()
    other = GenerateConfig(axis=Axis("polite", "rude"), out=config.out)
    with pytest.raises(OutputExistsError, match="formal:casual"):
        generate(other, backend=scripted_backend(fake_reply))
    assert (config.out / "manifest.json").read_bytes() == before


@pytest.mark.parametrize(
    "overrides",
    [
        {"subareas": 0},
        {"questions_per_subarea": 0},
        {"split": (0.7, 0.2, 0.2)},
        {"dedup_threshold": 0.0},
        {"pairing": "paraphrase"},
    ],
)
def test_bad_settings_are_usage_errors(tmp_path, overrides):
    with pytest.raises(UsageError):
        make_config(tmp_path, **overrides)


def test_question_and_answer_prompts_go_out_in_batches(generated):
    _result, backend, _config = generated
    question_batches = [b for b in backend.batches if "questions a person might ask" in b[0]]
    answer_batches = [b for b in backend.batches if b[0].startswith("Question:")]
    assert len(question_batches[0]) == 6  # every subarea's question prompt in one call
    assert len(answer_batches[0]) == 2 * 18  # every answer prompt, both poles, in one call
    assert [len(b) for b in answer_batches[1:]] == [2, 2, 2]  # then only the refused pair, re-sampled


def rewriting_reply() -> tuple[object, dict[str, int]]:
    """fake_reply, and a rewrite prompt answered with its source (unchanged) the first time it is
    asked and with the source in the other pole's words after that."""
    asked: dict[str, int] = {}
    pattern = re.compile(
        r"Here is an? (\w+) answer to it:\n(.+)\n\nRewrite this answer in the style of an? (\w+)"
    )

    def reply(messages):
        text = messages[-1]["content"]
        if not (match := pattern.search(text)):
            return fake_reply(messages)
        _source_pole, source, pole = match.groups()
        asked[text] = asked.get(text, 0) + 1
        return source if asked[text] == 1 else f"Put the {pole} way: {source}"

    return reply, asked


def test_rewrite_pairing_rewrites_the_first_answer_into_the_other_pole(tmp_path):
    reply, asked = rewriting_reply()
    backend = BatchRecordingBackend(reply)
    result = generate(make_config(tmp_path, pairing="rewrite"), backend=backend)
    pairs = read_jsonl(tmp_path / "ds" / "pairs.jsonl", Pair.from_dict)
    assert pairs and len(asked) == len(pairs)  # one rewrite prompt per pair
    first_poles = []
    for pair in pairs:
        [(rewritten, text)] = [(p, a) for p, a in pair.answers.items() if a.startswith("Put the")]
        [(first, source)] = [(p, a) for p, a in pair.answers.items() if p != rewritten]
        assert text == f"Put the {rewritten} way: {source}"  # the first answer was in the prompt
        assert source.startswith(f"Speaking as someone {first}")  # written from the question
        first_poles.append(first)
    assert set(first_poles) == {"formal", "casual"}  # alternating: neither pole is always the rewrite
    assert abs(first_poles.count("formal") - first_poles.count("casual")) <= 1
    assert all(count == 2 for count in asked.values())  # the unchanged rewrite was asked again
    assert result.counts["rewrite_first"] == {
        "formal": first_poles.count("formal"),
        "casual": first_poles.count("casual"),
    }
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["settings"]["pairing"] == "rewrite"
    assert manifest["prompts"]["rewrite"] == load_prompt("rewrite").sha256


def test_the_lean_reader_it_is_handed_reads_every_checked_pair_and_its_verdict_is_kept(
    tmp_path, scripted_backend
):
    """`generate` hands the pairs to the reader `--lean-judge` builds (tests/scoring/test_pair_lean.py
    reads with the real model); a pair read as leaning the wrong way is dropped and recorded."""
    read = []

    def read_lean(pairs, axis):
        read.extend(pairs)
        return np.array([-1.0 if i == 0 else 1.0 for i in range(len(pairs))])

    config = make_config(tmp_path, lean_judge="a-judge", lean_margin=0.0)
    result = generate(config, backend=scripted_backend(fake_reply), read_lean=read_lean)
    figure = result.counts["lean_check"]
    assert figure["n"] == len(read) and figure["k"] == len(read) - 1 and figure["dropped"] == 1
    [wrong] = [d for d in read_dropped(tmp_path / "ds" / "dropped.jsonl") if d.reason == "wrong-lean"]
    assert wrong.id == read[0].id and result.counts["pairs"] == len(read) - 1
    assert result.manifest.settings["lean_judge"] == "a-judge"

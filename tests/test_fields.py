"""fields: what a run records of its options (no credentials) and which of them a resume must match."""

from __future__ import annotations

from autocustom.data.generate import GenerateConfig
from autocustom.fields import config_record, public_url, result_settings
from autocustom.training.config import TrainConfig


def test_urls_are_recorded_without_credentials():
    assert (
        public_url("https://me:s3cret@api.example.com:8443/v1?api-key=s3cret")
        == "https://api.example.com:8443/v1"
    )
    config = GenerateConfig("formal:casual", "out", backend="openai", model="m", base_url="http://u:p@h/v1")
    assert config_record(config)["base_url"] == "http://h/v1"
    assert "p@" not in str(config.settings()) and "p@" not in str(result_settings(config))


def test_a_resume_must_match_what_changes_results_and_nothing_else():
    config = TrainConfig(data="d", toward="formal", out="o", max_steps=5)
    settings = result_settings(config)
    assert settings["max_steps"] == 5 and settings["toward"] == "formal"
    assert not {"out", "device", "resume", "force_restart", "eval_batch_size", "report_to"} & settings.keys()

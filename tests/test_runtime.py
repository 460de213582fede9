"""runtime: scoring threads only on the cores no other process is using."""

from __future__ import annotations

import psutil
import pytest
import torch

from autocustom import runtime


@pytest.mark.parametrize(("busy", "expected"), [([0.0, 0.0], 2), ([100.0, 3.0], 1), ([100.0, 100.0], 1)])
def test_free_cores_are_the_allowed_ones_no_other_process_keeps_busy(monkeypatch, busy, expected):
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval, percpu: busy)
    assert runtime.free_cores() == expected


def test_threads_follow_the_free_cores_while_scoring_and_come_back(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(runtime, "free_cores", lambda: 1)
    with runtime.threads_on_free_cores(torch.device("cpu")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    monkeypatch.setattr(runtime, "free_cores", lambda: 64)
    with runtime.threads_on_free_cores(torch.device("cpu")):
        assert torch.get_num_threads() == before  # never more threads than torch was given

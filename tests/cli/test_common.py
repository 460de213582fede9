"""Plain progress (CI logs): every stage start and ~10% step shows, including a stage that restarts;
`--json` output stays alone on stdout."""

from __future__ import annotations

import json

from autocustom.cli.common import _plain_progress, emit_json, user_errors
from autocustom.progress import ProgressEvent


def lines(events, capsys) -> list[str]:
    update = _plain_progress()
    for stage, done, total in events:
        update(ProgressEvent(stage, done, total, ""))
    return capsys.readouterr().err.splitlines()


def test_one_line_per_tenth_and_at_the_end(capsys):
    printed = lines([("train", step, 100) for step in range(1, 101)], capsys)
    assert printed[0] == "[train] 1/100"
    assert printed[-1] == "[train] 100/100"
    assert len(printed) == 11


def test_a_stage_that_starts_again_is_shown_again(capsys):
    first = [("train", step, 20) for step in range(1, 21)]
    second = [("train", step, 20) for step in range(1, 21)]
    evaluations = [("evaluate", 10, None), ("evaluate", 20, None), ("evaluate", 10, None)]
    printed = lines([*first, *evaluations[:2], *second, evaluations[2]], capsys)
    assert printed.count("[train] 1/20") == printed.count("[train] 3/20") == 2  # not held back
    assert printed.count("[train] 20/20") == 2
    assert printed[-1] == "[evaluate] 10"


def test_what_the_library_prints_to_stdout_goes_to_stderr_and_the_json_stays_alone(capsys):
    """DeepSpeed, imported by accelerate when installed, logs to stdout: it must not precede the JSON."""
    with user_errors():
        print("[WARNING] Setting accelerator to CPU.")
        emit_json({"steps": 2})
    out, err = capsys.readouterr()
    assert json.loads(out) == {"steps": 2}
    assert "Setting accelerator" in err

"""`run`: generate -> train -> shift-score -> report in one directory, resumable at every stage.

Each stage resumes on its own (the generation call cache, the Trainer checkpoints, a finished run's
summary), so re-running the same command after a kill continues where it stopped and redoes nothing
that finished. Layout of the run directory::

    OUT/data/        the dataset (autocustom generate)
    OUT/train/       the training run (autocustom train)
    OUT/score.json   shift-score on the held-out test subareas
    OUT/report.md    the report, with OUT/plots/*.png
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autocustom.data.generate import GenerateConfig, GenerateResult, generate
from autocustom.errors import OutputExistsError
from autocustom.fileio import read_json, write_json_atomic
from autocustom.layout import RUN_DATA, RUN_SCORE, RUN_TRAIN
from autocustom.llm.base import ChatBackend
from autocustom.progress import ProgressCallback, ProgressEvent, no_progress
from autocustom.report import ReportResult, build_report
from autocustom.scoring.shift_score import ScoreConfig, shift_score
from autocustom.training.config import TrainConfig
from autocustom.training.trainer import TrainResult, train

STAGES = ("generate", "train", "shift-score", "report")


@dataclass
class RunResult:
    out: Path
    generated: GenerateResult
    trained: TrainResult
    score: dict[str, Any]  # the shift-score report as written to score.json
    report: ReportResult

    def to_dict(self) -> dict[str, Any]:
        return {
            "headline": headline(self.score),
            "out": str(self.out),
            "generate": self.generated.to_dict(),
            "train": self.trained.to_dict(),
            "score": self.score,
            "report": self.report.to_dict(),
            "passed": self.score["passed"],
        }


def run(
    out: str | Path,
    generate_config: GenerateConfig,
    train_config: TrainConfig,
    score_config: ScoreConfig,
    *,
    backend: ChatBackend | None = None,
    progress: ProgressCallback = no_progress,
) -> RunResult:
    """Run every stage into `out`; the stage configs' own paths are replaced by the run layout.

    `backend`, when given, writes the data instead of the one `generate_config` names (scripts, tests).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"--out {out} is a file", "pass a directory")
    data_dir, train_dir, score_path = out / RUN_DATA, out / RUN_TRAIN, out / RUN_SCORE
    train_config = replace(train_config, data=str(data_dir), out=str(train_dir), resume=True)
    train_config.validate()  # bad training and scoring options fail before the data is generated
    score_config.check(score_config.max_mmlu_drop)
    _announce(progress, 0)
    generated = generate(replace(generate_config, out=data_dir), backend=backend, progress=progress)
    _announce(progress, 1)
    trained = train(
        replace(train_config, data=str(data_dir), out=str(train_dir), resume=True), progress=progress
    )
    _announce(progress, 2)
    score = _score_once(replace(score_config, model=str(train_dir), data=str(data_dir)), score_path, progress)
    _announce(progress, 3)
    report = build_report(out)
    _announce(progress, 4)
    return RunResult(out, generated, trained, score, report)


def headline(score: dict[str, Any]) -> str:
    """The run's result in words a new user can read: the test BiasShift and what it means, then what
    the contrast judge read in the model's own replies when `--judge contrast` asked for them."""
    from autocustom.scoring.contrast import reply_sentence

    replies = reply_sentence(score["metrics"], score["toward"])
    return _shift_sentence(score) + (f" {replies}" if replies else "")


def _shift_sentence(score: dict[str, Any]) -> str:
    shift, toward, opposite = score["metrics"].get("bias_shift"), score["toward"], score["opposite"]
    if shift is None:
        return "no base model to compare with: BiasShift was not measured"
    figure = f"test BiasShift toward {toward} {shift['value']:+.3f} [{shift['low']:+.3f}, {shift['high']:+.3f}] (n={shift['n']})"
    if shift["low"] > 0:
        meaning = (
            f"on questions from topics never seen in training, the tuned model finds the {toward} answer "
            f"likelier than the {opposite} one by {shift['value']:.3f} nats per token more than the base model does"
        )
    elif shift["high"] < 0:
        meaning = f"the model moved away from {toward}, toward {opposite}, on topics never seen in training"
    else:
        meaning = f"the interval includes 0: on these {shift['n']} held-out pairs the move toward {toward} is not distinguishable from none"
    return f"{figure}: {meaning}."


def _score_once(config: ScoreConfig, path: Path, progress: ProgressCallback) -> dict[str, Any]:
    """Score the trained model, reusing a report already written for the same settings."""
    if path.is_file():
        previous = read_json(path)
        if previous.get("run_settings") == _settings(config):
            return previous
    report = {**shift_score(config, progress=progress).to_dict(), "run_settings": _settings(config)}
    write_json_atomic(path, report)
    return report


def _settings(config: ScoreConfig) -> dict[str, Any]:
    return {k: v for k, v in vars(config).items() if v is None or isinstance(v, (str, int, float, bool))}


def _announce(progress: ProgressCallback, done: int) -> None:
    message = STAGES[done] if done < len(STAGES) else "done"
    progress(ProgressEvent("run", done, len(STAGES), message))

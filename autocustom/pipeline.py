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

from autocustom.assets import DEFAULT_MODEL
from autocustom.axis import Axis, parse_axis
from autocustom.data.generate import PAIRING_HELP, PAIRINGS, GenerateConfig, GenerateResult, generate
from autocustom.data.pair_check import LEAN_JUDGE_HELP, LEAN_MARGIN, LEAN_MARGIN_HELP
from autocustom.fields import AXIS_HELP, SPLIT_HELP, force_restart, option, required, result_settings
from autocustom.fileio import read_json, write_json_atomic
from autocustom.layout import RUN_DATA, RUN_RECORD, RUN_SCORE, RUN_TRAIN, claim_output
from autocustom.llm.base import ChatBackend
from autocustom.progress import ProgressCallback, ProgressEvent, no_progress
from autocustom.report import ReportResult, build_report
from autocustom.scoring.judge import DEFAULT_GEN_TOKENS
from autocustom.scoring.pair_lean import lean_reader
from autocustom.scoring.shift_score import ScoreConfig, shift_score
from autocustom.training.config import TrainConfig
from autocustom.training.result import TrainResult

STAGES = ("generate", "train", "shift-score", "report")


@dataclass
class RunConfig:
    """What `run` takes, one field per option of the command (cli/options.py): the few settings of each
    stage a first run changes, with the sizes of a run that finishes on a CPU. `stages()` makes the
    stage configs; a script that wants every setting builds those itself and calls `run`."""

    axis: Axis = required(AXIS_HELP, cli_type=str)  # "formal:casual" or a YAML file, parsed on creation
    toward: str = required("The pole to move the model toward.")
    out: Path = required("Run directory (data/, train/, score.json, report.md).")
    model: str = option(DEFAULT_MODEL, "Model to customize (and to score against).")
    generator_model: str | None = option(None, "LLM that writes the data (default: --model for local).")
    backend: str = option("local", "Data generation backend: local or openai.")
    base_url: str | None = option(None, "OpenAI-compatible server (openai backend).", url=True)
    concurrency: int = option(4, "Parallel requests (openai backend).")
    subareas: int = option(6, "Subareas (topics) where the poles differ.")
    questions_per_subarea: int = option(8, "Questions per subarea.")
    pairing: str = option(PAIRINGS[0], PAIRING_HELP)
    lean_judge: str | None = option(None, LEAN_JUDGE_HELP)
    lean_margin: float = option(LEAN_MARGIN, LEAN_MARGIN_HELP)
    # half the subareas train; validation and test each get a quarter: enough pairs to select and to score
    split: tuple[float, float, float] = option((0.5, 0.25, 0.25), SPLIT_HELP, cli_type=list[float])
    loss: str = option("contrastive", "contrastive, dpo, ipo or simpo.")
    max_steps: int = option(60, "Optimizer steps (early stopping may end sooner).")
    eval_steps: int = option(20, "Evaluate on validation every N steps.")
    batch_size: int = option(4, "Pairs per training step.")
    lr: float | None = option(None, "Learning rate (default 2e-5 full, 2e-4 LoRA).")
    reg: str = option("nll", "MMLU regulariser: nll or kl.")
    reg_weight: float = option(0.5, "Weight of the regulariser (0 = off).")
    mmlu_questions: int | None = option(None, "MMLU retention subset size.")
    drift_texts: int | None = option(None, "Neutral texts for Drift.")
    min_shift: float | None = option(None, "Gate: test BiasShift at least this.")
    min_lean: float | None = option(None, "Gate: test Lean at least this.")
    judge: str | None = option(None, "contrast: also judge the model's own replies (reply share, fluency).")
    gen_tokens: int = option(DEFAULT_GEN_TOKENS, "Max new tokens per reply for --judge.")
    seed: int = option(0, "Seed of every stage.")
    device: str | None = option(None, "auto, cpu, cuda, cuda:N.", neutral=True)
    force_restart: bool = force_restart()

    def __post_init__(self) -> None:
        self.axis = parse_axis(self.axis) if isinstance(self.axis, str) else self.axis
        self.axis.opposite(self.toward)  # AxisError (exit 2) before any work when --toward is not a pole
        self.out = Path(self.out)

    def stages(self) -> tuple[GenerateConfig, TrainConfig, ScoreConfig]:
        """The configs of generate, train and shift-score; `run` puts their paths in the run layout."""
        generated = GenerateConfig(
            axis=self.axis,
            out=self.out,
            subareas=self.subareas,
            questions_per_subarea=self.questions_per_subarea,
            pairing=self.pairing,
            lean_judge=self.lean_judge,
            lean_margin=self.lean_margin,
            split=self.split,
            seed=self.seed,
            backend=self.backend,
            model=self.generator_model or (self.model if self.backend == "local" else None),
            base_url=self.base_url,
            concurrency=self.concurrency,
            device=self.device,
        )
        shared = {"mmlu_questions": self.mmlu_questions, "drift_texts": self.drift_texts, "seed": self.seed}
        trained = TrainConfig(
            data=str(self.out),
            toward=self.toward,
            out=str(self.out),
            model=self.model,
            loss=self.loss,
            max_steps=self.max_steps,
            eval_steps=self.eval_steps,
            batch_size=self.batch_size,
            lr=self.lr,
            reg=self.reg,
            reg_weight=self.reg_weight,
            device=self.device,
            **shared,
        )
        scored = ScoreConfig(
            model=str(self.out),
            data=str(self.out),
            base=self.model,
            toward=self.toward,
            device=self.device,
            min_shift=self.min_shift,
            min_lean=self.min_lean,
            judge=self.judge,
            gen_tokens=self.gen_tokens,
            **shared,
        )
        return generated, trained, scored


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
    restart: bool = False,
    progress: ProgressCallback = no_progress,
) -> RunResult:
    """Run every stage into `out`; the stage configs' own paths are replaced by the run layout.

    `out` is claimed first (`claim_output`): a folder of other files is refused untouched, and a run
    directory continues only under the same generate and train settings (`restart` starts it over).
    `backend`, when given, writes the data instead of the one `generate_config` names (scripts, tests).
    """
    from autocustom.training.trainer import train  # transformers' Trainer takes seconds: not at --help

    out = Path(out)
    data_dir, train_dir, score_path = out / RUN_DATA, out / RUN_TRAIN, out / RUN_SCORE
    generate_config = replace(generate_config, out=data_dir)
    # measure_final off: the shift-score stage measures the kept model on the same test split next
    train_config = replace(
        train_config, data=str(data_dir), out=str(train_dir), resume=True, measure_final=False
    )
    train_config.validate()  # bad training and scoring options fail before the data is generated
    score_config.check(score_config.max_mmlu_drop)
    settings = {
        f"{stage} {name}": value
        for stage, config in (("generate", generate_config), ("train", train_config))
        for name, value in result_settings(config).items()
    }
    claim_output(out, RUN_RECORD, settings, command="run", restart=restart)
    _announce(progress, 0)
    read_lean = lean_reader(generate_config.lean_judge, generate_config.device)
    generated = generate(generate_config, backend=backend, read_lean=read_lean, progress=progress)
    _announce(progress, 1)
    trained = train(train_config, progress=progress)
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

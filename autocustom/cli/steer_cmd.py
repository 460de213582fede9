"""`autocustom steer`: move a model toward a pole with an activation vector, no training (autocustom.steering)."""

from __future__ import annotations

from typing import Any

import typer

from autocustom.cli.common import (
    JSON_OUTPUT,
    VERBOSE,
    configure_logging,
    emit_json,
    progress_reporter,
    stdout,
    user_errors,
)
from autocustom.cli.options import config_options


def register(app: typer.Typer) -> None:
    app.command("steer")(steer_command)


@config_options("autocustom.steering.search:SteerConfig")
def steer_command(
    values: dict[str, Any],  # SteerConfig's fields, one option each (see autocustom.cli.options)
    json_output: bool = JSON_OUTPUT,
    verbose: bool = VERBOSE,
) -> None:
    """Steer a model toward a pole with a mean-difference activation vector, no training.

    Example:

        autocustom steer --data data/formal --toward formal --out runs/formal-steer --coefficients 1,2,4

    The vector comes from the train pairs; its layer and coefficient are chosen on the validation
    split (the largest BiasShift within --max-drift), then it is measured on --split. Writes
    steering.safetensors, control_vector.gguf (for llama.cpp's --control-vector-scaled) and
    steer.json; a killed run resumes its grid. Exit 0 on success, 2 on bad input.
    """
    configure_logging(verbose)
    with user_errors():
        from autocustom.steering.search import SteerConfig, steer

        with progress_reporter() as progress:
            result = steer(SteerConfig(**values), progress=progress)
    if json_output:
        emit_json(result.to_dict())
        return
    for line in result.summary_lines():
        stdout.print(line)

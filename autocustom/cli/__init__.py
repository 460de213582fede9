"""The `autocustom` command: a thin typer layer over the library (see docs/cli.md).

Command modules import only typer and the CLI helpers at import time; each command imports the
library (and so torch) when it runs, which keeps `autocustom --help` fast.
"""

from __future__ import annotations

import typer

from autocustom.cli import (
    compare_cmd,
    generate_cmd,
    pairs_cmd,
    run_cmd,
    score_cmd,
    ship_cmd,
    steer_cmd,
    train_cmd,
)

app = typer.Typer(
    name="autocustom",
    help="Customize a language model along one axis (two opposite poles) with LLM-written data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# in the order `autocustom --help` lists the commands: the pipeline's stages, then the whole run
for module in (generate_cmd, pairs_cmd, train_cmd, score_cmd, run_cmd, compare_cmd, ship_cmd, steer_cmd):
    module.register(app)

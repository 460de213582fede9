"""Write docs/cli.md from the typer app itself, so the CLI reference cannot drift from the code.

python scripts/cli_docs.py            # rewrite docs/cli.md (`make docs`)
python scripts/cli_docs.py --check    # exit 1 when docs/cli.md is out of date (a test runs this)
"""

from __future__ import annotations

import argparse
import html
import sys
from pathlib import Path

import click
import typer
from typer.cli import get_docs_for_click

from autocustom.cli import app

TARGET = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
PREFACE = "<!-- Generated from the code by `make docs` (scripts/cli_docs.py); a test fails when it is stale. -->\n\n"


def render() -> str:
    command = typer.main.get_command(app)
    with click.Context(command, info_name="autocustom") as ctx:
        text = get_docs_for_click(
            obj=command, ctx=ctx, name="autocustom", title="autocustom command reference"
        )
    return PREFACE + html.unescape(text).strip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not TARGET.is_file() or TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run `make docs`", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

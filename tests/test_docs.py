"""The documentation a user reads first stays true to the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_generated_from_the_current_code():
    done = subprocess.run(
        [sys.executable, "scripts/cli_docs.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def test_readme_shows_the_two_commands_and_every_linked_doc_exists():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    for line in readme.splitlines():
        if "](docs/" in line:
            target = line.split("](", 1)[1].split(")", 1)[0]
            assert (ROOT / target).is_file(), f"README links to missing {target}"


def test_the_memory_table_of_the_training_docs_is_the_plans_output():
    done = subprocess.run(
        [sys.executable, "scripts/memory_table.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr

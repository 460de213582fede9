"""The package stays readable: short functions (ruff's C901 bounds their branching), modules of one job,
and a small foundation beside the stage packages (docs/architecture.md; tests/test_layers.py checks the
imports)."""

from __future__ import annotations

import ast
from pathlib import Path

import autocustom

MAX_LINES = 60
MAX_MODULE_LINES = 550  # a module past this has usually taken a second job (trainer.py had six at 1,084)
MAX_TOP_LEVEL = 14  # foundation modules, `run`, `report` and the entry point beside the stage packages
PACKAGE = Path(autocustom.__file__).parent


def test_no_library_function_is_longer_than_60_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these functions: " + "; ".join(long)


def test_no_module_is_longer_than_550_lines():
    long = [
        f"{path.relative_to(PACKAGE)} ({lines} lines)"
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, "split these modules by job: " + "; ".join(long)


def test_the_top_level_holds_the_foundation_and_the_stage_packages():
    modules = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(modules) <= MAX_TOP_LEVEL, (
        f"{len(modules)} top-level modules: move some into a stage: {modules}"
    )

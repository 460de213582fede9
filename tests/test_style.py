"""Library functions stay short enough to read top to bottom (ruff's C901 bounds their branching)."""

from __future__ import annotations

import ast
from pathlib import Path

import autocustom

MAX_LINES = 60
PACKAGE = Path(autocustom.__file__).parent


def test_no_library_function_is_longer_than_60_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "cli":  # typer commands list their options; the library is what is bounded
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these functions: " + "; ".join(long)

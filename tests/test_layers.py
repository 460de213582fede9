"""The layers of docs/architecture.md hold on the import graph, and the check would see a break.

The contracts live in pyproject.toml ([tool.importlinter]); `make lint` runs them too. Here they run on
the package as it is, then on a copy with one deliberately added upward import and one added circle:
a check that cannot fail would be no check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(package_parent: Path) -> subprocess.CompletedProcess:
    """lint-imports with the project's contracts on the `autocustom` package found in `package_parent`."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=package_parent,
        env=env,
        capture_output=True,
        text=True,
    )


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(
        ROOT / "autocustom", tmp_path / "autocustom", ignore=shutil.ignore_patterns("__pycache__")
    )
    return tmp_path / "autocustom"


def test_the_package_keeps_its_layers_and_has_no_circle():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    package = _copy(tmp_path)
    scoring = package / "scoring" / "stats.py"  # a scorer reaching up into the training stage
    scoring.write_text(
        scoring.read_text() + "\n\ndef _upward():\n    from autocustom.training import trainer\n"
    )
    result = _lint(tmp_path)
    assert result.returncode == 1
    assert "commands over stages over parts over the foundation BROKEN" in result.stdout
    assert "autocustom.scoring.stats -> autocustom.training.trainer" in result.stdout


def test_an_import_circle_inside_a_package_breaks_the_acyclic_contract(tmp_path):
    package = _copy(tmp_path)
    memory = package / "training" / "memory.py"  # the circle this check was written after
    memory.write_text(
        memory.read_text() + "\n\ndef _circle():\n    from autocustom.training.trainer import train\n"
    )
    result = _lint(tmp_path)
    assert result.returncode == 1
    assert "no import circle between the modules of a package BROKEN" in result.stdout


def test_no_public_name_is_shadowed_by_a_package_of_its_name():
    """`from autocustom import TrainConfig, train` once gave the `autocustom.train` package: importing a
    submodule sets the parent's attribute of its name, over the lazily exported function."""
    code = (
        "import autocustom, importlib, inspect, pkgutil\n"
        "for m in pkgutil.walk_packages(autocustom.__path__, 'autocustom.'):\n"
        "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
        "shadowed = [n for n in autocustom.__all__[1:] if inspect.ismodule(getattr(autocustom, n))]\n"
        "assert not shadowed, shadowed\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]

"""The package as users get it: a wheel that carries its prompts, and a CLI that starts fast."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_and_help_do_not_import_torch():
    """`autocustom --help` must answer at once: neither the package nor the CLI imports torch.

    Building the click command too: typer builds every command's options (from the config
    dataclasses) for the top-level --help, so those modules must not import torch either.
    """
    probe = (
        "import sys, typer.main, autocustom, autocustom.cli; typer.main.get_command(autocustom.cli.app); "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
    help_text = subprocess.run(
        [sys.executable, "-m", "autocustom", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("generate", "train", "shift-score", "run", "compare", "report"):
        assert command in help_text


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("autocustom-*.whl"))


def test_wheel_carries_every_prompt(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {Path(n).name for n in names if n.startswith("autocustom/_prompts/")}
    assert shipped == {p.name for p in (ROOT / "prompts").iterdir()}


def test_prompts_load_from_an_installed_wheel(wheel, tmp_path):
    """Installed without the source tree, the package finds its prompts inside itself."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    probe = (
        "import autocustom.prompts as p; from pathlib import Path; "
        "print(p.prompts_dir()); p.load_prompt('answers'); p.load_prompt('subareas')"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == target / "autocustom" / "_prompts"

"""`python -m autocustom ...`, which is what `accelerate launch -m autocustom train ...` runs."""

from autocustom.cli import app

app()

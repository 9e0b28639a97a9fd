"""`python -m ml` is the `tandem` command (for environments without the console script)."""

from ml.cli import app

app(prog_name="tandem")

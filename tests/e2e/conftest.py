"""The `tandem` CLI driven as a user (or a CI stage) runs it, on a private TANDEM_HOME."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from ml.cli import app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE_SOURCE = "synthetic://credit?rows=4000&seed=7&shift=0.0"


def small_spec(
    tmp_path: Path, source: str, name: str = "credit.toml", example: str = "credit.toml",
    **replace: str,
) -> Path:  # fmt: skip
    """An example spec on a small dataset, with optional text replacements."""
    text = (EXAMPLES / example).read_text().replace(EXAMPLE_SOURCE, source)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke

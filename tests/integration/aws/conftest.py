"""Fixtures for the AWS adapter's tests: a moto backend, a stack created in it as the Pulumi
program creates it, and the adapter's Stack connected from that stack's outputs alone."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ml.clouds import connect
from ml.clouds.base import ModelVersion, Stack
from tests.integration.aws_fixtures import (
    create_stack,
    fake_credentials,
    moto_backend,
    sealed_artifact,
)


@pytest.fixture(params=["in-process"])
def endpoint_url(request, monkeypatch, tmp_path) -> Iterator[str | None]:
    """The moto backend; tests that must also run over real HTTP parametrize this."""
    fake_credentials(monkeypatch, tmp_path)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with moto_backend(request.param) as url:
        yield url


@pytest.fixture
def outputs(endpoint_url: str | None) -> dict[str, Any]:
    return create_stack("dev", endpoint_url=endpoint_url)


@pytest.fixture
def stack(outputs: dict[str, Any]) -> Stack:
    return connect("aws", outputs)


@pytest.fixture
def artifact_copy(tmp_path: Path) -> Path:
    return sealed_artifact(tmp_path / "artifact")


@pytest.fixture
def stored_uri(stack: Stack, artifact_copy: Path) -> str:
    return stack.store.put_artifact(artifact_copy, "artifacts/credit/run-1")


@pytest.fixture
def approved(stack: Stack, tmp_path: Path) -> Callable[[], ModelVersion]:
    """`approved()` registers and approves one more version, each with its own artifact."""

    def make() -> ModelVersion:
        n = len(stack.registry.list_versions("credit")) + 1
        local = sealed_artifact(tmp_path / f"artifact-{n}")
        uri = stack.store.put_artifact(local, f"artifacts/credit/run-{n}")
        version = stack.registry.create_version("credit", uri, {}, {"run_id": f"run-{n}"})
        return stack.registry.set_status("credit", version.version, "approved")

    return make

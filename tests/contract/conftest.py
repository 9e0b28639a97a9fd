"""The stacks every conformance test runs against: one entry per cloud in STACKS.

A test asks for `stack` (a fresh, empty stack named "dev") or `cloud` (to make another stack,
to race parallel callers, to see everything a call left behind) and addresses the Protocols
of `ml/clouds/base.py` only; what a cloud needs to run here (an emulator, fake credentials,
the stand-ins for what the emulator does not do) lives in its entry below.

Adding a cloud is one entry in STACKS: a context manager that yields its `Cloud`.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import botocore.handlers
import pytest

from ml.clouds import connect
from ml.clouds.base import APPROVED, ModelVersion, Stack
from ml.clouds.local import stack_outputs
from tests.conftest import BASE_SPEC, CREDIT_SOURCE
from tests.contract.lambda_boundary import INVOKE_EVENT, LambdaInvoke
from tests.integration.aws_fixtures import (
    FakeTrainingContainer,
    create_stack,
    fake_credentials,
    moto_backend,
)

MODEL = "credit"  # the model every AWS test stack is provisioned for
SECOND_MODEL = "churn"  # a second model with an endpoint of its own


@dataclass
class Cloud:
    """One kind of stack under test."""

    name: str  # as `ml.clouds.connect` knows it
    new_stack: Callable[[str], Stack]  # a fresh, empty stack of this cloud with that name
    parallel: str  # how races run here: "processes" or "threads"
    base: Path  # every local file a test of this cloud may touch is under it
    second_model: str = SECOND_MODEL
    stacks: list[Stack] = field(default_factory=list)

    def stack(self, name: str) -> Stack:
        made = self.new_stack(name)
        self.stacks.append(made)
        return made

    def footprint(self) -> frozenset[str]:
        """Everything tests can see: local files and directories, store keys, models."""
        seen = {f"file:{p.relative_to(self.base)}" for p in self.base.rglob("*")}
        for stack in self.stacks:
            seen |= {f"{stack.name}:key:{k}" for k in stack.store.list_keys("")}
            seen |= {f"{stack.name}:model:{m}" for m in stack.registry.list_models()}
        return frozenset(seen)


@contextmanager
def local_cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _: object) -> Iterator[Cloud]:
    home = tmp_path / "tandem-home"
    monkeypatch.setenv("TANDEM_HOME", str(home))
    monkeypatch.setenv("TANDEM_CODE_VERSION", "test-code-1")
    yield Cloud(
        "local", lambda name: connect("local", stack_outputs(name, home)), "processes", tmp_path
    )


@contextmanager
def aws_cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _: object) -> Iterator[Cloud]:
    """moto in-process. Training runs the training image's real entry point inside
    FakeTrainingContainer; Lambda `Invoke` is answered by the stack's real handler."""
    fake_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("TANDEM_CODE_VERSION", "test-code-1")

    def new_stack(name: str) -> Stack:
        stack = connect("aws", create_stack(name))
        stack.jobs.after_submit = FakeTrainingContainer()  # moto runs no training job
        return stack

    # botocore builds every new session's handlers from this list (moto hooks in the same
    # way); edited in place, so whoever imported the list sees the same one
    handlers = botocore.handlers.BUILTIN_HANDLERS
    invoke = (INVOKE_EVENT, LambdaInvoke())
    handlers.insert(0, invoke)
    try:
        with moto_backend("in-process"):
            yield Cloud("aws", new_stack, "threads", tmp_path)
    finally:
        handlers.remove(invoke)


@contextmanager
def azure_cloud(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[Cloud]:
    """Blob storage on Azurite (one per test session); Azure ML, ARM, Azure Monitor and Key
    Vault are the HTTPS fake of tests/azure_fakes.py, one per stack, which plays training
    jobs locally and runs each model's function app (the real deploy/azure_functions/) behind
    the Functions host stand-in (tests/azure_stack.emulated)."""
    from tests.azure_stack import emulated

    azurite = request.getfixturevalue("azurite")
    monkeypatch.setenv("TANDEM_CODE_VERSION", "test-code-1")
    run = uuid.uuid4().hex[:8]
    with ExitStack() as running:

        def new_stack(name: str) -> Stack:
            made = emulated(azurite, name, tmp_path / f"fake-{name}", run=run)
            outputs, fake = running.enter_context(made)
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.ca_bundle))
            stack = connect("azure", outputs)
            stack.jobs.poll_seconds = 0.1  # the fake plays a job at once
            return stack

        yield Cloud("azure", new_stack, "threads", tmp_path)


# Each entry: (base directory, monkeypatch, the test's request, for session services).
STACKS: dict[
    str,
    Callable[[Path, pytest.MonkeyPatch, pytest.FixtureRequest], AbstractContextManager[Cloud]],
] = {
    "local": local_cloud,
    "aws": aws_cloud,
    "azure": azure_cloud,
}


@pytest.fixture(params=sorted(STACKS))
def cloud(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cloud]:
    base = tmp_path / "cloud"
    base.mkdir()
    with STACKS[request.param](base, monkeypatch, request) as made:
        yield made


@pytest.fixture
def stack(cloud: Cloud) -> Stack:
    return cloud.stack("dev")


@pytest.fixture
def artifact_dir(trained_artifact: Path, tmp_path: Path) -> Path:
    """A private copy of the session's trained artifact (a real model, servable)."""
    target = tmp_path / "artifact"
    shutil.copytree(trained_artifact, target)
    return target


def store_artifact(stack: Stack, local: Path, run: str) -> str:
    return stack.store.put_artifact(local, f"artifacts/{MODEL}/{run}")


@pytest.fixture
def approved(stack: Stack, artifact_dir: Path) -> Callable[[], ModelVersion]:
    """`approved()` stores the artifact under a run of its own, registers and approves it."""

    def make() -> ModelVersion:
        n = len(stack.registry.list_versions(MODEL)) + 1
        uri = store_artifact(stack, artifact_dir, f"run-{n}")
        tags = {"run_id": f"run-{n}"}
        version = stack.registry.create_version(MODEL, uri, {"roc_auc": 0.8}, tags)
        return stack.registry.set_status(MODEL, version.version, APPROVED, "gates passed")

    return make


def feature_rows(count: int) -> list[dict]:
    """`count` rows of the credit features, as a client would send them (plain JSON)."""
    from ml import data

    names = [f["name"] for f in BASE_SPEC["features"]]
    frame = data.load_frame(CREDIT_SOURCE).head(count)
    return json.loads(frame[names].to_json(orient="records"))

"""Fixtures for the Blob store and locks against Azurite (the session's `azurite` fixture):
each test gets a stack of its own, named uniquely, whose containers exist in that Azurite."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from azure.storage.blob import BlobServiceClient

from ml import artifact
from ml.clouds.azure.common import AzureOutputs
from ml.clouds.azure.store import BlobArtifactStore
from tests.azure_stack import create_containers, outputs, service


@pytest.fixture
def azure_outputs(azurite: str) -> dict[str, Any]:
    """A stack of this test's own in the session's Azurite, its containers created."""
    made = outputs(azurite, stack=f"t{uuid.uuid4().hex[:10]}")
    create_containers(made)
    return made


@pytest.fixture
def blobs(azure_outputs: dict[str, Any]) -> BlobServiceClient:
    """A plain SDK client for the same account: what a test uses to look behind the store."""
    return service(azure_outputs)


@pytest.fixture
def make_store(azure_outputs: dict[str, Any]) -> Callable[..., BlobArtifactStore]:
    """`make_store(**options)`: a store with its own Blob client for the test's stack;
    `hook=` is given to that client as its raw_request_hook (sees every request sent)."""

    def make(hook: Callable[[Any], None] | None = None, **options: Any) -> BlobArtifactStore:
        client = service(azure_outputs, **({"raw_request_hook": hook} if hook else {}))
        return BlobArtifactStore(client, AzureOutputs.parse(azure_outputs).containers, **options)

    return make


@pytest.fixture
def store(make_store: Callable[..., BlobArtifactStore]) -> BlobArtifactStore:
    return make_store()


@pytest.fixture
def sealed(tmp_path: Path) -> Callable[..., Path]:
    """`sealed(name, size=2048)`: a sealed artifact under tmp_path whose model.onnx is `size`
    random bytes. The store moves and verifies files: no model needs training here."""

    def make(name: str = "artifact", size: int = 2048) -> Path:
        directory = tmp_path / name
        directory.mkdir()
        (directory / artifact.ONNX).write_bytes(os.urandom(size))
        (directory / artifact.CARD).write_text(json.dumps({"run_id": name}) + "\n")
        (directory / artifact.BASELINE).write_text('{"features": {}}\n')
        artifact.seal(directory)
        return directory

    return make


@dataclass(frozen=True)
class Sent:
    """One request a Blob client sent: its method, blob name, `comp` and headers."""

    method: str
    blob: str
    comp: str | None
    headers: dict[str, str]


class Recorder:
    """A raw_request_hook (make_store(hook=...)) that keeps every request the client sends."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self._lock = threading.Lock()

    def __call__(self, request: Any) -> None:
        http = request.http_request
        parts = urlsplit(http.url)
        # Azurite's path: /<account>/<container>/<blob>
        segments = parts.path.split("/", 3)
        blob = unquote(segments[3]) if len(segments) > 3 else ""
        comp = parse_qs(parts.query).get("comp", [None])[0]
        with self._lock:
            self.sent.append(Sent(http.method, blob, comp, dict(http.headers)))

    def writes(self, under: str) -> list[Sent]:
        """The PUTs that stored a blob under `under` (a whole blob or a block list)."""
        return [
            s
            for s in self.sent
            if s.method == "PUT" and s.blob.startswith(under) and s.comp in (None, "blocklist")
        ]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()

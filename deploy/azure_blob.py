"""Azure Blob Storage as an endpoint sees it: which URLs name a blob, and one signed-in container.

A blob URL (a blob, a prefix of blobs, or a container) is one of:
- Azure: `https://<account>.blob.core.windows.net/<container>/<name>` (or the sovereign clouds'
  `blob.core` suffixes);
- Azurite: `http(s)://<loopback host>:<port>/devstoreaccount1/<container>/<name>`, the
  emulator's path-style URL (`contract.emulators`).

In Azure the endpoint signs in as its managed identity: `ManagedIdentityCredential` for the
user-assigned identity whose client id is the AZURE_CLIENT_ID app setting, else
`DefaultAzureCredential` (a developer's own sign-in). Tandem's storage accounts refuse shared
keys, so no account key, connection string or SAS is read from anywhere; a URL carrying a query
(a SAS token) is refused rather than used. Azurite is reached with its published development key.

Standard library until a blob is read or written: azure-storage-blob and azure-identity are
imported then, so an endpoint that neither loads nor captures through Blob never pays for them.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from contract.emulators import AZURITE_ACCOUNT, AZURITE_KEY, LOOPBACK_HOSTS

ENV_CLIENT_ID = "AZURE_CLIENT_ID"  # the user-assigned identity's client id (an app setting)
_AZURE_HOST = re.compile(
    r"[a-z0-9]{3,24}\.blob\.core\.(?:windows\.net|usgovcloudapi\.net|chinacloudapi\.cn)"
)
_ERROR_CHARS = 200  # an SDK error is cut to this length in the message it becomes


@dataclass(frozen=True)
class BlobUrl:
    """Where a blob URL points: the account's endpoint, the container, and a blob name or a
    prefix in it ('' for the container itself)."""

    account_url: str
    container: str
    name: str
    emulated: bool  # Azurite, not Azure

    @property
    def container_url(self) -> str:
        return f"{self.account_url}/{self.container}"

    @property
    def url(self) -> str:
        return f"{self.container_url}/{self.name}" if self.name else self.container_url

    def child(self, name: str) -> str:
        """The blob name of `name` under this URL's prefix."""
        base = self.name.strip("/")
        return f"{base}/{name}" if base else name


def parse(url: str) -> BlobUrl | None:
    """The blob location `url` names, or None when it is no blob URL (see the module doc).
    ValueError for a blob URL with a query: the endpoint signs in, it takes no SAS."""
    parts = urlsplit(str(url))
    host = (parts.hostname or "").lower()
    if parts.scheme == "https" and _AZURE_HOST.fullmatch(host):
        account_url, path = f"https://{parts.netloc}", parts.path
        emulated = False
    elif parts.scheme in ("http", "https") and host in LOOPBACK_HOSTS:
        account, _, path = parts.path.lstrip("/").partition("/")
        if account != AZURITE_ACCOUNT:
            return None  # a plain server on loopback, not Azurite
        account_url, emulated = f"{parts.scheme}://{parts.netloc}/{account}", True
    else:
        return None
    if parts.query or parts.fragment:
        raise ValueError(
            f"{parts.scheme}://{parts.netloc}{parts.path[:60]}: a blob URL without a query "
            "(the endpoint signs in as its identity; a SAS token is never used)"
        )
    container, _, name = path.lstrip("/").partition("/")
    return BlobUrl(account_url, unquote(container), unquote(name), emulated)


def credential(location: BlobUrl, environ: Mapping[str, str] = os.environ) -> Any:
    """What the container client signs in with (see the module doc)."""
    if location.emulated:
        from azure.core.credentials import AzureNamedKeyCredential

        return AzureNamedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY)
    client_id = environ.get(ENV_CLIENT_ID, "").strip()
    if client_id:
        from azure.identity import ManagedIdentityCredential

        return ManagedIdentityCredential(client_id=client_id)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


class Container:
    """One blob container, signed in once (on first use) and reused: the credential caches its
    token across calls. Errors name the blob: FileNotFoundError for a missing blob,
    FileExistsError for one `put_new` finds there, OSError for anything else the service
    answers."""

    def __init__(self, location: BlobUrl, environ: Mapping[str, str] = os.environ) -> None:
        if not location.container:
            raise ValueError(f"{location.account_url}: the URL names no container")
        self.location = location
        self._environ = dict(environ)
        self._client: Any = None

    def _container(self) -> Any:
        if self._client is None:
            from azure.storage.blob import ContainerClient

            self._client = ContainerClient.from_container_url(
                self.location.container_url, credential=credential(self.location, self._environ)
            )
        return self._client

    def download(self, name: str, dest: Path) -> None:
        """Write the blob `name` to `dest`."""
        with _errors(self.location, name):
            stream = self._container().download_blob(name)
            with Path(dest).open("wb") as out:
                stream.readinto(out)

    def put_new(self, name: str, data: bytes, content_type: str) -> None:
        """Store `data` as the blob `name` in one upload, only if no blob has that name."""
        with _errors(self.location, name):
            from azure.storage.blob import ContentSettings

            self._container().upload_blob(
                name,
                data,
                overwrite=False,
                content_settings=ContentSettings(content_type=content_type),
            )

    def __repr__(self) -> str:
        return f"Container({self.location.container_url!r})"


@contextlib.contextmanager
def _errors(location: BlobUrl, name: str) -> Iterator[None]:
    """Turns what azure-core raises into the OS errors the callers already handle."""
    from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

    where = f"{location.container_url}/{name}"
    try:
        yield
    except ResourceNotFoundError:
        raise FileNotFoundError(f"{where}: no such blob") from None
    except ResourceExistsError:
        raise FileExistsError(f"{where}: a blob has that name already") from None
    except AzureError as exc:
        lines = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {lines[0] if lines else ''}"[:_ERROR_CHARS]
        raise OSError(f"{where}: {reason}") from None

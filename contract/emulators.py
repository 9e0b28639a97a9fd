"""The emulators Tandem can be pointed at instead of a cloud, and how a client recognises one.

Azurite (the Azure Storage emulator) serves one well-known development account. Its name and
key are published in Azurite's README and are the same on every machine: they are not secrets,
and a client uses them only for an Azurite URL, never for a storage account in Azure.
"""

from __future__ import annotations

# Plain http:// is only ever used with these hosts (an emulator or a test server on loopback).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")

AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

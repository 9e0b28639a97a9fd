"""The Azure program under Pulumi's mocks (tests/infra/azure_program.py), each stack built once
for the whole run.

Building a whole platform takes a second or two, so the stacks the tests read (`prod`,
`staging`, `dev`, `dev_waived`, or any other through `build_stack`) are built once, in one
event loop all Azure tests share (this file's `pulumi_mocks` replaces the per-test loop of
`tests/infra/conftest.py`, and puts the session's loop and mocks back in place if a test of
another directory installed its own). A `Built` stack gives the tests two views:

- the components and their Pulumi resources (``built.program.azure.storage.account``), for
  checks that return an Output from a ``@pulumi.runtime.test`` function;
- every resource's inputs exactly as the mocks received them (``built.inputs(token)``),
  with options Pulumi sent the engine (``built.ignored(name)``): plain data the tests
  assert on directly, after the build has finished.
"""

from __future__ import annotations

import pytest

from tests.infra.azure_program import (  # ROOT and stack_file: the tests here import them
    ROOT,  # noqa: F401
    AzureSession,
    azure_only,
    build_stack,
    mocked_session,
    stack_file,  # noqa: F401
)

SUBNET = (
    "/subscriptions/00000000-0000-0000-0000-000000000009/resourceGroups/net/providers/"
    "Microsoft.Network/virtualNetworks/tandem-vnet/subnets/functions"
)


@pytest.fixture(scope="session")
def azure_session(tmp_path_factory) -> AzureSession:
    with mocked_session(tmp_path_factory.mktemp("build")) as session:
        yield session


@pytest.fixture(autouse=True)
def pulumi_mocks(azure_session):
    """Replaces the per-test loop of tests/infra/conftest.py with the session's."""
    azure_session.restore()
    yield


@pytest.fixture(scope="session")
def prod(azure_session):
    """prod's stack file, Azure only: CMK, default-deny networks, a functions subnet, CI
    through the production environment, MLflow on."""
    return build_stack(azure_session, "prod", azure_only("prod"))


@pytest.fixture(scope="session")
def staging(azure_session):
    """staging's stack file, Azure only, with sizes of its own: CI from the main branch."""
    raw = azure_only(
        "staging",
        azure={
            "functions": {"instance_memory_mb": 4096, "max_instances": 250},
            "compute": {"vm_size": "Standard_E4ds_v5", "max_nodes": 7},
            "training_image_tag": "2026.12.01-abc123",
        },
    )
    return build_stack(azure_session, "staging", raw)


@pytest.fixture(scope="session")
def dev(azure_session):
    """A dev stack on Azure with defaults: no CI identity."""
    return build_stack(azure_session, "dev", azure_only("dev"))


WAIVER = "dev vaults are torn down and rebuilt every day"


@pytest.fixture(scope="session")
def dev_waived(azure_session):
    """A dev stack that waived purge protection (so storage has no customer-managed key)."""
    raw = azure_only("dev", azure={"key_vault": {"purge_protection_waiver": WAIVER}})
    return build_stack(azure_session, "dev", raw)

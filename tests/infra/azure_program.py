"""The Azure program under Pulumi's mocks, for any test that needs what it would deploy.

`mocked_session(build_dir)` installs one event loop and one set of recording mocks;
`build_stack(session, stack, raw)` builds a stack from a stack file's ``config:`` (e.g.
`azure_only("prod")`) once per session and returns a `Built`: its config, the program, its
resolved outputs, and every resource's inputs exactly as the mocks received them.
`assignments(built)` lists every role assignment it asked for as (identity, role, scope).

The infra tests share one session (tests/infra/azure/conftest.py); the least-privilege test
(tests/integration/test_azure_least_privilege.py) opens its own to read the grants.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime import mocks as pulumi_mocks_module
from pulumi.runtime import settings as pulumi_settings

from infra import config, program
from infra.azure import roles
from tests.infra.azure_mocks import SUBSCRIPTION
from tests.infra.conftest import TandemMocks

ROOT = Path(__file__).resolve().parents[2]


def stack_file(stack: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]


def azure_only(stack: str, **overrides: Any) -> dict[str, Any]:
    """A stack file's config with only the Azure cloud (and ``tandem:<key>`` overrides)."""
    raw = {k: v for k, v in stack_file(stack).items() if k not in ("tandem:aws", "aws:region")}
    raw["tandem:clouds"] = ["azure"]
    if "azure-native:location" not in raw:
        raw["azure-native:location"] = "westeurope"
    for key, value in overrides.items():
        raw[f"tandem:{key}"] = value
    return raw


@dataclass
class Record:
    typ: str
    name: str
    inputs: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)
    ignore_changes: list[str] = field(default_factory=list)


class RecordingMonitor(pulumi_mocks_module.MockMonitor):
    """Keeps each registration's options the resource args do not carry (ignoreChanges)."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.recorder = mocks

    def RegisterResource(self, request):  # the gRPC method's name
        self.recorder.options[(request.type, request.name)] = list(request.ignoreChanges)
        return super().RegisterResource(request)


class RecordingMocks(TandemMocks):
    """The suite's mocks, keeping every resource it was asked for (secrets still wrapped)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[Record] = []
        self.options: dict[tuple[str, str], list[str]] = {}

    def new_resource(self, args):
        rid, outputs = super().new_resource(args)
        self.records.append(Record(args.typ, args.name, dict(args.inputs), dict(outputs)))
        return [rid, outputs]


@dataclass
class Built:
    """One stack built under the mocks: its config, the program, its resolved outputs, and
    the resources it asked for."""

    cfg: config.StackConfig
    program: program.Program
    outputs: dict[str, Any]
    records: list[Record]
    options: dict[tuple[str, str], list[str]]

    @property
    def azure(self):
        return self.program.azure

    def all(self, token: str) -> list[Record]:
        """Every resource of type ``azure-native:<token>`` (or a full type token)."""
        typ = token if ":" in token and token.count(":") == 2 else f"azure-native:{token}"
        return [r for r in self.records if r.typ == typ]

    def one(self, token: str, name: str | None = None) -> Record:
        found = [r for r in self.all(token) if name is None or r.name == name]
        assert len(found) == 1, f"{token} {name or ''}: {len(found)} resources " + str(
            [r.name for r in self.all(token)]
        )
        return found[0]

    def ignored(self, record: Record) -> list[str]:
        return self.options.get((record.typ, record.name), [])


@dataclass
class AzureSession:
    """One event loop, one set of recording mocks and one cache of built stacks (a stack is
    built once, whichever tests read it)."""

    loop: asyncio.AbstractEventLoop
    mocks: RecordingMocks
    build_dir: Path
    settings: dict[str, Any] = field(default_factory=dict)
    root: Any = None
    built: dict[str, Built] = field(default_factory=dict)

    def restore(self) -> None:
        """Make this session's loop, mocks and root stack current again (a test of another
        directory may have installed its own since)."""
        asyncio.set_event_loop(self.loop)
        for key, value in self.settings.items():
            setattr(pulumi_settings.SETTINGS, key, value)
        pulumi_settings.ROOT.set(self.root)


@contextlib.contextmanager
def mocked_session(build_dir: Path) -> Iterator[AzureSession]:
    """A session of its own: its loop and mocks installed until the block ends."""
    patch = pytest.MonkeyPatch()
    patch.setenv("TANDEM_LAMBDA_CODE_ONLY", "1")  # the dual-cloud build packs the Lambda code
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    mocks = RecordingMocks()
    pulumi.runtime.reset_options(project="tandem", stack="dev", preview=False)
    pulumi.runtime.set_mocks(
        mocks, project="tandem", stack="dev", preview=False, monitor=RecordingMonitor(mocks)
    )
    session = AzureSession(loop, mocks, build_dir)
    session.settings = dict(pulumi_settings.SETTINGS.__dict__)
    session.root = pulumi_settings.get_root_resource()
    try:
        yield session
    finally:
        session.restore()
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=5))
        loop.close()
        asyncio.set_event_loop(None)
        patch.undo()


def build_stack(session: AzureSession, stack: str, raw: dict[str, Any]) -> Built:
    """``stack`` built from ``raw`` (a stack file's ``config:``), its outputs resolved; built
    once per session for the same config."""
    key = json.dumps([stack, raw], sort_keys=True)
    if key not in session.built:
        session.built[key] = _build(session, stack, raw)
    return session.built[key]


def _build(session: AzureSession, stack: str, raw: dict[str, Any]) -> Built:
    cfg = config.load(stack, raw)
    start = len(session.mocks.records)
    holder: dict[str, Any] = {}

    @pulumi.runtime.test
    def run():
        built = program.build(cfg, stack, build_dir=str(session.build_dir))
        holder["program"] = built
        return pulumi.Output.from_input(built.outputs).apply(
            lambda values: holder.__setitem__("outputs", values)
        )

    run()
    outputs = holder["outputs"]
    json.dumps(outputs)  # as `pulumi stack output --json` hands it over
    return Built(
        cfg, holder["program"], outputs, session.mocks.records[start:], session.mocks.options
    )


def assignments(built: Built) -> list[tuple[str, str, str]]:
    """(identity name, role name, scope) of every role assignment the stack asked for."""
    principals = {
        r.outputs["principalId"]: r.inputs["resourceName"]
        for r in built.all("managedidentity:UserAssignedIdentity")
    }
    rows = []
    for record in built.all("authorization:RoleAssignment"):
        inputs = record.inputs
        assert inputs["principalType"] == "ServicePrincipal", record.name
        assert inputs["roleDefinitionId"].startswith(
            f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/"
        ), inputs["roleDefinitionId"]
        who = principals.get(inputs["principalId"], f"unknown principal {inputs['principalId']}")
        rows.append((who, roles.role_of(inputs["roleDefinitionId"]), inputs["scope"]))
    return rows

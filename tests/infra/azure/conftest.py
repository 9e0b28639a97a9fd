"""The Azure program under Pulumi's mocks, built once per test module.

Building a whole platform takes about a second, so each module builds the stacks it needs
once (`build_stack`, from a module-scoped fixture) in one event loop that all of the
module's tests share (this file's `pulumi_mocks` replaces the per-test loop of
`tests/infra/conftest.py`). A `Built` stack gives the tests two views:

- the components and their Pulumi resources (``built.program.azure.storage.account``), for
  checks that return an Output from a ``@pulumi.runtime.test`` function;
- every resource's inputs exactly as the mocks received them (``built.inputs(token)``),
  with options Pulumi sent the engine (``built.ignored(name)``): plain data the tests
  assert on directly, after the build has finished.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pytest
import yaml
from pulumi.runtime import mocks as pulumi_mocks_module

from infra import config, program
from tests.infra.conftest import TandemMocks

ROOT = Path(__file__).resolve().parents[3]
SUBNET = (
    "/subscriptions/00000000-0000-0000-0000-000000000009/resourceGroups/net/providers/"
    "Microsoft.Network/virtualNetworks/tandem-vnet/subnets/functions"
)


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
class ModulePulumi:
    loop: asyncio.AbstractEventLoop
    mocks: RecordingMocks
    build_dir: Path


@pytest.fixture(scope="module")
def module_pulumi(tmp_path_factory):
    """One event loop and one set of recording mocks for the whole test module."""
    patch = pytest.MonkeyPatch()
    patch.setenv("TANDEM_LAMBDA_CODE_ONLY", "1")  # the dual-cloud build packs the Lambda code
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    mocks = RecordingMocks()
    pulumi.runtime.reset_options(project="tandem", stack="dev", preview=False)
    pulumi.runtime.set_mocks(
        mocks, project="tandem", stack="dev", preview=False, monitor=RecordingMonitor(mocks)
    )
    state = ModulePulumi(loop, mocks, tmp_path_factory.mktemp("build"))
    yield state
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    if pending:
        loop.run_until_complete(asyncio.wait(pending, timeout=5))
    loop.close()
    asyncio.set_event_loop(None)
    patch.undo()


@pytest.fixture(autouse=True)
def pulumi_mocks(module_pulumi):
    """Replaces the per-test loop of tests/infra/conftest.py: this module's loop, current."""
    asyncio.set_event_loop(module_pulumi.loop)
    yield


def build_stack(state: ModulePulumi, stack: str, raw: dict[str, Any]) -> Built:
    """Build ``stack`` from ``raw`` (a stack file's ``config:``) and resolve its outputs."""
    cfg = config.load(stack, raw)
    start = len(state.mocks.records)
    holder: dict[str, Any] = {}

    @pulumi.runtime.test
    def run():
        built = program.build(cfg, stack, build_dir=str(state.build_dir))
        holder["program"] = built
        return pulumi.Output.from_input(built.outputs).apply(
            lambda values: holder.__setitem__("outputs", values)
        )

    run()
    outputs = holder["outputs"]
    json.dumps(outputs)  # as `pulumi stack output --json` hands it over
    return Built(cfg, holder["program"], outputs, state.mocks.records[start:], state.mocks.options)

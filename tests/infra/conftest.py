"""Pulumi mocks for the infra tests: no CLI, no provider plugins, no cloud.

AWS resources are answered here; azure-native ones by `tests/infra/azure_mocks.py`.

Each test gets a fresh event loop and fresh mocks; a test must return an Output from a
`@pulumi.runtime.test` function (or await one), otherwise it checks nothing.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pulumi
import pytest

from tests.infra import azure_mocks

ACCOUNT = "123456789012"
REGION = "us-east-1"


def _uuid(name: str) -> str:
    """A stable, realistic-looking id (KMS key ids are UUIDs)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def _realistic(typ: str, name: str, inputs: dict) -> tuple[str | None, dict]:
    """The id and computed outputs the AWS provider returns for the types whose ARNs
    policies are built from, so that policy documents in tests hold real ARN shapes."""
    extra: dict = {}
    rid: str | None = None
    if typ == "aws:s3/bucket:Bucket":
        bucket = inputs.get("bucket") or f"{name}-bucket"
        rid = bucket  # the provider's id of a bucket is its name
        extra = {"bucket": bucket, "arn": f"arn:aws:s3:::{bucket}"}
    elif typ == "aws:iam/role:Role":
        role = inputs.get("name") or name
        rid = role
        extra = {"name": role, "arn": f"arn:aws:iam::{ACCOUNT}:role/{role}"}
    elif typ == "aws:kms/key:Key":
        key_id = _uuid(name)
        rid = key_id
        extra = {"keyId": key_id, "arn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}"}
    elif typ == "aws:kms/alias:Alias":
        extra = {"arn": f"arn:aws:kms:{REGION}:{ACCOUNT}:{inputs.get('name', name)}"}
    elif typ == "aws:cloudwatch/logGroup:LogGroup":
        group = inputs.get("name") or name
        extra = {"name": group, "arn": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}"}
    elif typ == "aws:ecr/repository:Repository":
        repo = inputs.get("name") or name
        rid = repo
        extra = {
            "name": repo,
            "arn": f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{repo}",
            "registryId": ACCOUNT,
            "repositoryUrl": f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{repo}",
        }
    elif typ == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
        host = str(inputs.get("url", "")).removeprefix("https://")
        extra = {"arn": f"arn:aws:iam::{ACCOUNT}:oidc-provider/{host}"}
    return rid, extra


class TandemMocks(pulumi.runtime.Mocks):
    """Echo inputs back and add the computed outputs a real provider would (ids, ARNs)."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        if args.typ.startswith("azure-native:"):
            return list(azure_mocks.new_resource(args.typ, args.name, dict(args.inputs)))
        outputs = dict(args.inputs)
        rid, extra = _realistic(args.typ, args.name, outputs)
        for key, value in extra.items():
            outputs.setdefault(key, value)
        if args.typ.startswith("aws:"):
            service = args.typ.split(":")[1].split("/")[0]
            outputs.setdefault("arn", f"arn:aws:{service}:{REGION}:{ACCOUNT}:{args.name}")
        if args.typ == "aws:lambda/function:Function":
            # Lambda assigns the version number when `publish` is true; the first is "1".
            outputs.setdefault("version", "1" if args.inputs.get("publish") else "$LATEST")
        if args.typ == "aws:lambda/functionUrl:FunctionUrl":
            outputs.setdefault(
                "functionUrl", f"https://{_uuid(args.name)[:8]}.lambda-url.{REGION}.on.aws/"
            )
        return [rid or f"{args.name}-id", outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT,
                "arn": f"arn:aws:iam::{ACCOUNT}:user/ci",
                "userId": "AIDA",
            }
        if args.token in ("aws:index/getRegion:getRegion", "aws:index/region:getRegion"):
            return {"name": REGION, "region": REGION, "id": REGION}
        if args.token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com"}
        if args.token == "aws:iam/getPolicyDocument:getPolicyDocument":
            return {"json": json.dumps({"Version": "2012-10-17", "Statement": []})}
        if args.token.startswith("azure-native:"):
            answer = azure_mocks.call(args.token, dict(args.args))
            if answer is not None:
                return answer
        return {}


def pytest_configure(config):
    # pulumi_aws warns at import time about its deprecated *V2 classes; we use none of them.
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:pulumi_aws.*")


@pytest.fixture(autouse=True)
def pulumi_mocks(monkeypatch):
    """A fresh event loop, mocks and root stack per test, so nothing leaks between tests.

    The Pulumi SDK keeps the root Stack resource in a process-wide variable and creates it
    only once. Created in a test that never runs the loop (a plain test), its pending
    registration would be awaited by the next test, from another loop ("attached to a
    different loop"), so the outcome would depend on test order (e.g. under xdist).
    `reset_options` forgets it; `set_mocks` then registers a new one in this test's loop.
    """
    # Nothing is uploaded under mocks: the Lambda archive without its dependencies will do.
    monkeypatch.setenv("TANDEM_LAMBDA_CODE_ONLY", "1")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pulumi.runtime.reset_options(project="tandem", stack="dev", preview=False)
    pulumi.runtime.set_mocks(TandemMocks(), project="tandem", stack="dev", preview=False)
    yield
    # Let registrations a plain test started finish, instead of destroying them pending.
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    if pending:
        loop.run_until_complete(asyncio.wait(pending, timeout=5))
    loop.close()
    asyncio.set_event_loop(None)

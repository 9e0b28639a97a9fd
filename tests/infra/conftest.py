"""Pulumi mocks for the infra tests: no CLI, no provider plugins, no cloud.

Each test gets a fresh event loop and fresh mocks; a test must return an Output from a
`@pulumi.runtime.test` function (or await one), otherwise it checks nothing.
"""

from __future__ import annotations

import asyncio
import json

import pulumi
import pytest

ACCOUNT = "123456789012"
REGION = "us-east-1"


class TandemMocks(pulumi.runtime.Mocks):
    """Echo inputs back and add the computed outputs a real provider would (ids, ARNs)."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        outputs = dict(args.inputs)
        if args.typ.startswith("aws:"):
            service = args.typ.split(":")[1].split("/")[0]
            outputs.setdefault("arn", f"arn:aws:{service}:{REGION}:{ACCOUNT}:{args.name}")
        return [f"{args.name}-id", outputs]

    def call(self, args: pulumi.runtime.MockCallArgs):
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:user/ci", "userId": "AIDA"}
        if args.token in ("aws:index/getRegion:getRegion", "aws:index/region:getRegion"):
            return {"name": REGION, "region": REGION, "id": REGION}
        if args.token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com"}
        if args.token == "aws:iam/getPolicyDocument:getPolicyDocument":
            return {"json": json.dumps({"Version": "2012-10-17", "Statement": []})}
        if args.token == "azure-native:authorization:getClientConfig":
            return {
                "clientId": "00000000-0000-0000-0000-000000000001",
                "objectId": "00000000-0000-0000-0000-000000000002",
                "subscriptionId": "00000000-0000-0000-0000-000000000003",
                "tenantId": "00000000-0000-0000-0000-000000000004",
            }
        return {}


@pytest.fixture(autouse=True)
def pulumi_mocks():
    """A fresh event loop and mocks per test, so components never leak between tests."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pulumi.runtime.set_mocks(TandemMocks(), project="tandem", stack="dev", preview=False)
    yield
    loop.close()
    asyncio.set_event_loop(None)

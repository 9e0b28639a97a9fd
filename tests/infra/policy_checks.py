"""Assertions on policy documents that say which statement broke which rule."""

from __future__ import annotations

import json
from typing import Any

import pulumi

# Actions that support no resource-level permissions, so "Resource": "*" is their only form
# (IAM service authorization reference, "Resource types" column empty).
UNSCOPABLE_ACTIONS = frozenset(
    {
        "cloudwatch:PutMetricData",
        "cloudwatch:GetMetricData",
        "cloudwatch:GetMetricStatistics",
        "ecr:GetAuthorizationToken",
        "sagemaker:ListModelPackages",
        "xray:PutTelemetryRecords",
        "xray:PutTraceSegments",
    }
)


def plain(output: pulumi.Output) -> pulumi.Output:
    """Output types -> plain dicts/lists (snake_case keys), for comparisons."""
    return output.apply(lambda v: json.loads(json.dumps(v)) if v is not None else None)


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def statements(doc: dict | str) -> list[dict]:
    if isinstance(doc, str):
        doc = json.loads(doc)
    assert doc.get("Version") == "2012-10-17", f"policy version {doc.get('Version')!r}"
    return as_list(doc["Statement"])


def by_sid(doc: dict | str, sid: str) -> dict:
    found = [s for s in statements(doc) if s.get("Sid") == sid]
    assert len(found) == 1, f"expected one statement {sid!r}, found {len(found)}"
    return found[0]


def assert_least_privilege(doc: dict | str, where: str) -> None:
    """IAM rows of the baseline: no "*" or "<svc>:*" action, no NotAction/NotResource,
    "Resource": "*" only for actions without resource-level permissions."""
    for st in statements(doc):
        sid = st.get("Sid", "<no Sid>")
        assert "NotAction" not in st and "NotResource" not in st, f"{where}/{sid}: Not* element"
        actions = as_list(st["Action"])
        for action in actions:
            assert action != "*", f"{where}/{sid}: Action '*' (CKV_AWS_63)"
            assert not action.endswith(":*"), f"{where}/{sid}: service-wide action {action!r}"
            assert "FullAccess" not in action, f"{where}/{sid}: {action!r}"
        if "*" in as_list(st.get("Resource", [])) and st["Effect"] == "Allow":
            wide = sorted(set(actions) - UNSCOPABLE_ACTIONS)
            assert not wide, (
                f"{where}/{sid}: Resource '*' for actions that support scoping: {wide} "
                "(CKV_AWS_355)"
            )


def assert_no_public_allow(doc: dict | str, where: str) -> None:
    """No Allow to a '*' principal (CKV_AWS_70), and no unconditioned '*' principal at all
    except in Deny statements."""
    for st in statements(doc):
        principal = st.get("Principal")
        wildcard = principal == "*" or (
            isinstance(principal, dict) and "*" in as_list(principal.get("AWS", []))
        )
        if wildcard:
            assert st["Effect"] == "Deny", f"{where}/{st.get('Sid')}: Allow to principal '*'"
            assert st.get("Condition"), f"{where}/{st.get('Sid')}: unconditioned '*' principal"


def assert_single_service_trust(doc: dict | str, service: str, where: str) -> None:
    (st,) = statements(doc)
    assert st["Effect"] == "Allow", f"{where}: trust statement effect {st['Effect']!r}"
    assert st["Principal"] == {"Service": service}, (
        f"{where}: trust principal {st['Principal']!r}, expected exactly {service!r} "
        "(CKV_AWS_60/61)"
    )
    assert st["Action"] == "sts:AssumeRole", f"{where}: trust action {st['Action']!r}"

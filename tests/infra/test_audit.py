"""Audit: the CloudTrail trail meets CIS 3.1/3.2/3.5/3.8/3.9 and CloudTrail.5, and the
policy statements other resources must carry for it are right."""

from __future__ import annotations

import json

import pulumi
import pytest

from infra.aws.audit import (
    Audit,
    AuditArgs,
    cloudtrail_bucket_policy_statements,
    cloudtrail_logs_role_policy,
    trail_arn,
)
from tests.infra.conftest import ACCOUNT, REGION

KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
DATA = "arn:aws:s3:::tandem-dev-data"
MODELS = "arn:aws:s3:::tandem-dev-models"
TAGS = {"project": "tandem"}
TRAIL_ARN = f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/tandem-dev-trail"


def _args(**overrides) -> AuditArgs:
    values = {
        "name_prefix": "tandem-dev",
        "kms_key_arn": KEY,
        "logs_bucket_name": "tandem-dev-logs",
        "data_bucket_arn": DATA,
        "models_bucket_arn": MODELS,
        "log_retention_days": 400,
        "tags": TAGS,
    }
    values.update(overrides)
    return AuditArgs(**values)


def _plain(output: pulumi.Output) -> pulumi.Output:
    """Nested output types to plain dicts/lists, applied on the Output alone: `Output.all`
    over a value holding an output type with a `values` field (TrailEventSelectorDataResource)
    fails inside the SDK with "'list' object is not callable"."""
    return output.apply(lambda v: json.loads(json.dumps(v)))


@pulumi.runtime.test
def test_trail_is_multi_region_validated_encrypted_and_global():
    audit = Audit("audit", _args())
    t = audit.trail

    def check(values):
        urn, name, multi, validation, key, global_events, logging, bucket, prefix, tags = values
        assert name == "tandem-dev-trail", f"{urn}: name {name!r}"
        assert multi is True, f"{urn}: is_multi_region_trail {multi!r} (CIS 3.1)"
        assert validation is True, f"{urn}: enable_log_file_validation {validation!r} (CIS 3.2)"
        assert key == KEY, f"{urn}: kms_key_id {key!r}, expected the stack key (CIS 3.5)"
        assert global_events is True, f"{urn}: include_global_service_events {global_events!r}"
        assert logging is True, f"{urn}: enable_logging {logging!r}"
        assert bucket == "tandem-dev-logs", f"{urn}: s3_bucket_name {bucket!r}"
        assert prefix == "cloudtrail", f"{urn}: s3_key_prefix {prefix!r}"
        assert tags == TAGS, f"{urn}: tags {tags!r}"

    return pulumi.Output.all(
        t.urn,
        t.name,
        t.is_multi_region_trail,
        t.enable_log_file_validation,
        t.kms_key_id,
        t.include_global_service_events,
        t.enable_logging,
        t.s3_bucket_name,
        t.s3_key_prefix,
        t.tags,
    ).apply(check)


@pulumi.runtime.test
def test_trail_records_s3_reads_and_writes_on_data_and_models_buckets():
    audit = Audit("audit", _args())

    def check(values):
        urn, selectors, advanced = values
        assert not advanced, f"{urn}: unexpected advanced_event_selectors {advanced!r}"
        assert len(selectors) == 1, f"{urn}: event_selectors {selectors!r}"
        selector = selectors[0]
        assert selector["read_write_type"] == "All", (
            f"{urn}: read_write_type {selector['read_write_type']!r}, need reads and writes "
            "(CIS 3.8 and 3.9)"
        )
        assert selector["include_management_events"] is True, f"{urn}: {selector!r}"
        objects = [r for r in selector["data_resources"] if r["type"] == "AWS::S3::Object"]
        logged = sorted(v for r in objects for v in r["values"])
        assert logged == [f"{DATA}/", f"{MODELS}/"], f"{urn}: S3 data events cover {logged!r}"

    return pulumi.Output.all(
        audit.trail.urn,
        _plain(audit.trail.event_selectors),
        _plain(audit.trail.advanced_event_selectors),
    ).apply(check)


@pulumi.runtime.test
def test_trail_delivers_to_an_encrypted_log_group_through_a_scoped_role():
    audit = Audit("audit", _args())
    t, group, role, policy = audit.trail, audit.log_group, audit.logs_role, audit.logs_role_policy

    def check(values):
        (urn, cw_arn, cw_role, group_urn, group_arn, group_name, retention, group_key,
         role_arn, trust, policy_urn, policy_doc) = values  # fmt: skip
        assert cw_arn == f"{group_arn}:*", (
            f"{urn}: cloud_watch_logs_group_arn {cw_arn!r}, expected {group_arn}:* (CloudTrail.5)"
        )
        assert cw_role == role_arn, f"{urn}: cloud_watch_logs_role_arn {cw_role!r}"
        assert group_name == "/tandem/tandem-dev/cloudtrail", f"{group_urn}: name {group_name!r}"
        assert retention == 400, f"{group_urn}: retention_in_days {retention!r}"
        assert group_key == KEY, f"{group_urn}: kms_key_id {group_key!r}"

        statements = json.loads(trust)["Statement"]
        assert [s["Principal"] for s in statements] == [{"Service": "cloudtrail.amazonaws.com"}], (
            f"role trust policy principals: {statements!r}"
        )

        (allow,) = json.loads(policy_doc)["Statement"]
        assert allow["Effect"] == "Allow", f"{policy_urn}: {allow!r}"
        assert sorted(allow["Action"]) == ["logs:CreateLogStream", "logs:PutLogEvents"], (
            f"{policy_urn}: actions {allow['Action']!r}"
        )
        assert allow["Resource"] == f"{group_arn}:log-stream:{ACCOUNT}_CloudTrail_*", (
            f"{policy_urn}: resource {allow['Resource']!r} is not the audit log group's streams"
        )

    return pulumi.Output.all(
        t.urn,
        t.cloud_watch_logs_group_arn,
        t.cloud_watch_logs_role_arn,
        group.urn,
        group.arn,
        group.name,
        group.retention_in_days,
        group.kms_key_id,
        role.arn,
        role.assume_role_policy,
        policy.urn,
        policy.policy,
    ).apply(check)


def test_bucket_policy_statements_let_only_this_trail_write_under_the_prefix():
    bucket = "arn:aws:s3:::tandem-dev-logs"
    statements = cloudtrail_bucket_policy_statements(bucket, "cloudtrail", ACCOUNT, TRAIL_ARN)
    by_action = {s["Action"]: s for s in statements}
    assert set(by_action) == {"s3:GetBucketAcl", "s3:PutObject"}, statements
    for s in statements:
        assert s["Effect"] == "Allow", s
        assert s["Principal"] == {"Service": "cloudtrail.amazonaws.com"}, s
        assert s["Condition"]["StringEquals"]["aws:SourceArn"] == TRAIL_ARN, s
    assert by_action["s3:GetBucketAcl"]["Resource"] == bucket
    put = by_action["s3:PutObject"]
    assert put["Resource"] == f"{bucket}/cloudtrail/AWSLogs/{ACCOUNT}/*", put
    assert put["Condition"]["StringEquals"]["s3:x-amz-acl"] == "bucket-owner-full-control", put
    # The statements must merge into a bucket policy without clashing Sids.
    assert len({s["Sid"] for s in statements}) == len(statements)


def test_trail_arn_matches_what_the_policies_name():
    assert trail_arn("tandem-dev", ACCOUNT, REGION) == TRAIL_ARN


def test_role_policy_is_limited_to_one_log_group():
    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/tandem/tandem-dev/cloudtrail"
    doc = cloudtrail_logs_role_policy(group, ACCOUNT)
    resources = [s["Resource"] for s in doc["Statement"]]
    assert resources == [f"{group}:log-stream:{ACCOUNT}_CloudTrail_*"], resources
    assert "*" not in {a for s in doc["Statement"] for a in s["Action"]}, doc


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"log_retention_days": 100}, "not a CloudWatch Logs retention period"),
        ({"logs_prefix": "/cloudtrail/"}, "leading or trailing"),
        ({"logs_prefix": ""}, "non-empty"),
        ({"logs_prefix": "trail/AWSLogs"}, "AWSLogs"),
        ({"data_bucket_arn": "tandem-dev-data"}, "data_bucket_arn must be an ARN"),
        ({"kms_key_arn": "alias/tandem"}, "kms_key_arn must be an ARN"),
        ({"name_prefix": "-bad"}, "name_prefix"),
    ],
)
def test_bad_args_raise_a_clear_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        Audit("audit", _args(**overrides))

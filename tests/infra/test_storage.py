"""Storage: the KMS key and the data/models/logs buckets meet the security baseline."""

from __future__ import annotations

import json

import pulumi
import pytest

from infra.aws import policies
from infra.aws.storage import BUCKET_KINDS, CMK_BUCKETS, LOGS_BUCKET_WAIVERS, Storage, StorageArgs
from tests.infra.conftest import ACCOUNT, REGION
from tests.infra.policy_checks import assert_no_public_allow, by_sid, plain, statements

ROLES = [
    f"arn:aws:iam::{ACCOUNT}:role/tandem-dev-sagemaker-execution",
    f"arn:aws:iam::{ACCOUNT}:role/tandem-dev-lambda-serve",
]
DEPLOYER = [f"arn:aws:iam::{ACCOUNT}:role/deployer"]
NAMES = {kind: f"tandem-dev-{kind}-{ACCOUNT}" for kind in BUCKET_KINDS}
TAGS = {"tandem:stack": "dev"}


def extra_logs_statements(bucket_arn: str, account_id: str) -> list[dict]:
    return [
        {
            "Sid": "ExtraForTest",
            "Effect": "Allow",
            "Principal": {"Service": "cloudtrail.amazonaws.com"},
            "Action": "s3:GetBucketAcl",
            "Resource": bucket_arn,
            "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
        }
    ]


def make(**overrides) -> Storage:
    args = {
        "name_prefix": "tandem-dev",
        "account_id": ACCOUNT,
        "region": REGION,
        "bucket_names": NAMES,
        "key_user_role_arns": ROLES,
        "deployer_principal_arns": DEPLOYER,
        "key_log_group_patterns": ("/aws/lambda/tandem-dev-*",),
        "logs_bucket_statements": extra_logs_statements,
        "noncurrent_version_expiration_days": 45,
        "abort_incomplete_multipart_days": 3,
        "log_expiration_days": 400,
        "tags": TAGS,
    }
    args.update(overrides)
    return Storage("storage", StorageArgs(**args))


@pulumi.runtime.test
def test_key_rotates_and_has_an_explicit_least_privilege_policy():
    storage = make()
    key = storage.key

    def check(values):
        urn, rotation, period, window, policy, tags = values
        assert rotation is True, f"{urn}: enable_key_rotation {rotation!r} (CKV_AWS_7)"
        assert period == 365, f"{urn}: rotation_period_in_days {period!r}"
        assert window == 30, f"{urn}: deletion_window_in_days {window!r}"
        assert policy, f"{urn}: no explicit key policy (CKV2_AWS_64)"
        assert tags == TAGS, f"{urn}: tags {tags!r}"
        doc = json.loads(policy)
        assert_no_public_allow(doc, urn)
        for st in statements(doc):
            principal = st["Principal"]
            assert principal not in ("*", {"AWS": "*"}), f"{urn}/{st['Sid']}: '*' principal"
            assert "kms:*" not in st["Action"], f"{urn}/{st['Sid']}: kms:* granted"
        admin = by_sid(doc, "KeyAdministration")
        assert not {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*"} & set(admin["Action"]), (
            f"{urn}: key administrators may also use the key: {admin['Action']}"
        )
        use = by_sid(doc, "KeyUseByStackRoles")
        assert use["Condition"] == {"ArnEquals": {"aws:PrincipalArn": ROLES}}, (
            f"{urn}: key use not limited to the stack roles: {use.get('Condition')!r}"
        )
        deployer = by_sid(doc, "DeployerCreatesEncryptedResources")
        assert deployer["Condition"]["ArnLike"]["aws:PrincipalArn"] == DEPLOYER, urn
        assert "kms:ViaService" in deployer["Condition"]["StringEquals"], (
            f"{urn}: deployer may call KMS directly"
        )
        logs = by_sid(doc, "CloudWatchLogsForThisAccount")
        assert logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"] == [
            f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/tandem-dev-*"
        ], f"{urn}: CloudWatch Logs not limited to the stack's log groups"
        for st in statements(doc):
            if "Service" in st["Principal"] and st["Principal"]["Service"] not in (
                "cloudwatch.amazonaws.com",  # documented without a condition key
            ):
                assert st.get("Condition"), f"{urn}/{st['Sid']}: service use unconditioned"

    return pulumi.Output.all(
        key.urn,
        key.enable_key_rotation,
        key.rotation_period_in_days,
        key.deletion_window_in_days,
        key.policy,
        key.tags,
    ).apply(check)


@pulumi.runtime.test
def test_key_alias_points_at_the_key():
    storage = make()

    def check(values):
        urn, name, target, key_id = values
        assert name == "alias/tandem-dev", f"{urn}: alias name {name!r}"
        assert target == key_id, f"{urn}: alias targets {target!r}, key is {key_id!r}"

    return pulumi.Output.all(
        storage.key_alias.urn,
        storage.key_alias.name,
        storage.key_alias.target_key_id,
        storage.key.key_id,
    ).apply(check)


@pulumi.runtime.test
@pytest.mark.parametrize("kind", CMK_BUCKETS)
def test_data_and_models_buckets_use_the_stack_key_with_bucket_keys(kind):
    storage = make()
    enc = storage.encryption[kind]

    def check(values):
        urn, bucket, bucket_id, rules, key_arn = values
        assert bucket == bucket_id == NAMES[kind], f"{urn}: encrypts {bucket!r}"
        (rule,) = rules
        default = rule["apply_server_side_encryption_by_default"]
        assert default == {"sse_algorithm": "aws:kms", "kms_master_key_id": key_arn}, (
            f"{urn}: default encryption {default!r}, expected SSE-KMS with {key_arn} (CKV_AWS_145)"
        )
        assert rule["bucket_key_enabled"] is True, f"{urn}: bucket key off"

    return pulumi.Output.all(
        enc.urn, enc.bucket, storage.buckets[kind].id, plain(enc.rules), storage.key.arn
    ).apply(check)


@pulumi.runtime.test
def test_logs_bucket_uses_sse_s3_as_access_log_targets_require():
    storage = make()
    enc = storage.encryption["logs"]

    def check(values):
        urn, rules = values
        (rule,) = rules
        assert rule["apply_server_side_encryption_by_default"] == {"sse_algorithm": "AES256"}, (
            f"{urn}: server access log target must use SSE-S3, got {rule!r}"
        )
        assert {"CKV_AWS_145", "CKV_AWS_18"} <= set(LOGS_BUCKET_WAIVERS), (
            "the logs bucket's exceptions must be recorded as waivers with a reason"
        )

    return pulumi.Output.all(enc.urn, plain(enc.rules)).apply(check)


@pulumi.runtime.test
@pytest.mark.parametrize("kind", BUCKET_KINDS)
def test_every_bucket_blocks_public_access_and_disables_acls(kind):
    storage = make()
    pab = storage.public_access_blocks[kind]
    own = storage.ownership[kind]

    def check(values):
        urn, bucket, flags, own_urn, own_bucket, rule, bucket_id = values
        assert bucket == bucket_id, f"{urn}: applies to {bucket!r}, not {bucket_id!r}"
        assert flags == [True, True, True, True], (
            f"{urn}: public access block flags {flags!r} (CKV2_AWS_6, CKV_AWS_53..56)"
        )
        assert own_bucket == bucket_id, f"{own_urn}: applies to {own_bucket!r}"
        assert rule == {"object_ownership": "BucketOwnerEnforced"}, (
            f"{own_urn}: ownership {rule!r} (CKV2_AWS_65)"
        )

    return pulumi.Output.all(
        pab.urn,
        pab.bucket,
        pulumi.Output.all(
            pab.block_public_acls,
            pab.block_public_policy,
            pab.ignore_public_acls,
            pab.restrict_public_buckets,
        ),
        own.urn,
        own.bucket,
        plain(own.rule),
        storage.buckets[kind].id,
    ).apply(check)


@pulumi.runtime.test
@pytest.mark.parametrize("kind", BUCKET_KINDS)
def test_every_bucket_is_versioned_and_tagged(kind):
    storage = make()
    ver = storage.versioning[kind]

    def check(values):
        urn, bucket, config, bucket_urn, tags, bucket_id = values
        assert bucket == bucket_id, f"{urn}: applies to {bucket!r}"
        assert config == {"status": "Enabled"}, f"{urn}: versioning {config!r} (CKV_AWS_21)"
        assert tags == {**TAGS, "tandem:bucket": kind}, f"{bucket_urn}: tags {tags!r}"

    return pulumi.Output.all(
        ver.urn,
        ver.bucket,
        plain(ver.versioning_configuration),
        storage.buckets[kind].urn,
        storage.buckets[kind].tags,
        storage.buckets[kind].id,
    ).apply(check)


@pulumi.runtime.test
@pytest.mark.parametrize("kind", BUCKET_KINDS)
def test_every_bucket_policy_denies_plain_http_and_allows_nobody_public(kind):
    storage = make()
    pol = storage.policies[kind]

    def check(values):
        urn, bucket, policy, bucket_id, arn = values
        assert bucket == bucket_id, f"{urn}: applies to {bucket!r}"
        doc = json.loads(policy)
        deny = by_sid(doc, "DenyInsecureTransport")
        assert deny["Effect"] == "Deny" and deny["Principal"] == "*", f"{urn}: {deny!r}"
        assert deny["Action"] == "s3:*", f"{urn}: TLS deny covers {deny['Action']!r} only"
        assert deny["Resource"] == [arn, f"{arn}/*"], f"{urn}: TLS deny on {deny['Resource']}"
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}, (
            f"{urn}: TLS deny condition {deny['Condition']!r} (FSBP S3.5)"
        )
        assert_no_public_allow(doc, urn)

    return pulumi.Output.all(
        pol.urn, pol.bucket, pol.policy, storage.buckets[kind].id, storage.buckets[kind].arn
    ).apply(check)


@pulumi.runtime.test
def test_logs_bucket_policy_admits_access_logs_only_from_our_buckets_plus_extras():
    storage = make()
    pol = storage.policies["logs"]

    def check(values):
        urn, policy, logs_arn, data_arn, models_arn = values
        doc = json.loads(policy)
        delivery = by_sid(doc, "S3ServerAccessLogDelivery")
        assert delivery["Principal"] == {"Service": "logging.s3.amazonaws.com"}, urn
        assert delivery["Action"] == "s3:PutObject", urn
        assert delivery["Resource"] == f"{logs_arn}/{policies.ACCESS_LOGS}*", (
            f"{urn}: log delivery may write {delivery['Resource']!r}"
        )
        assert delivery["Condition"] == {
            "ArnLike": {"aws:SourceArn": [data_arn, models_arn]},
            "StringEquals": {"aws:SourceAccount": ACCOUNT},
        }, f"{urn}: log delivery condition {delivery['Condition']!r}"
        extra = by_sid(doc, "ExtraForTest")
        assert extra["Resource"] == logs_arn, f"{urn}: extra statement not built for the bucket"

    return pulumi.Output.all(
        pol.urn,
        pol.policy,
        storage.logs_bucket.arn,
        storage.data_bucket.arn,
        storage.models_bucket.arn,
    ).apply(check)


@pulumi.runtime.test
@pytest.mark.parametrize("kind", CMK_BUCKETS)
def test_data_and_models_buckets_log_access_to_the_logs_bucket(kind):
    storage = make()
    log = storage.access_logging[kind]

    def check(values):
        urn, bucket, target, prefix, key_format, bucket_id, logs_id = values
        assert bucket == bucket_id, f"{urn}: logs {bucket!r}"
        assert target == logs_id, f"{urn}: target {target!r}, expected the logs bucket (S3.9)"
        assert prefix == f"s3-access/{kind}/", f"{urn}: target_prefix {prefix!r}"
        assert key_format == {"partitioned_prefix": {"partition_date_source": "EventTime"}}, (
            f"{urn}: key format {key_format!r}"
        )

    return pulumi.Output.all(
        log.urn,
        log.bucket,
        log.target_bucket,
        log.target_prefix,
        plain(log.target_object_key_format),
        storage.buckets[kind].id,
        storage.logs_bucket.id,
    ).apply(check)


@pulumi.runtime.test
def test_logs_bucket_does_not_log_to_itself():
    storage = make()

    def check(targets):
        logs_id, *sources = targets
        assert set(storage.access_logging) == set(CMK_BUCKETS), (
            f"access logging configured for {sorted(storage.access_logging)}"
        )
        assert all(target == logs_id for target in sources), f"targets {sources!r}"

    return pulumi.Output.all(
        storage.logs_bucket.id, *(log.target_bucket for log in storage.access_logging.values())
    ).apply(check)


@pulumi.runtime.test
@pytest.mark.parametrize("kind", BUCKET_KINDS)
def test_lifecycle_aborts_multipart_uploads_and_expires_noncurrent_versions(kind):
    storage = make()
    life = storage.lifecycles[kind]

    def check(values):
        urn, bucket, rules, bucket_id = values
        assert bucket == bucket_id, f"{urn}: applies to {bucket!r}"
        by_id = {r["id"]: r for r in rules}
        abort = by_id["abort-incomplete-multipart-uploads"]
        assert abort["status"] == "Enabled" and abort["filter"] == {}, f"{urn}: {abort!r}"
        assert abort["abort_incomplete_multipart_upload"] == {"days_after_initiation": 3}, (
            f"{urn}: abort rule {abort!r} (CKV_AWS_300)"
        )
        noncurrent = by_id["expire-noncurrent-versions"]
        assert noncurrent["noncurrent_version_expiration"] == {"noncurrent_days": 45}, (
            f"{urn}: noncurrent rule {noncurrent!r}"
        )
        if kind == "logs":
            assert by_id["expire-logs"]["expiration"] == {"days": 400}, f"{urn}: {rules!r}"
        else:
            assert "expire-logs" not in by_id, f"{urn}: current {kind} objects must not expire"

    return pulumi.Output.all(
        life.urn, life.bucket, plain(life.rules), storage.buckets[kind].id
    ).apply(check)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"bucket_names": {"data": "a", "models": "b"}}, "bucket_names is missing ['logs']"),
        ({"key_user_role_arns": []}, "key_user_role_arns must name at least one role"),
        ({"abort_incomplete_multipart_days": 0}, "abort_incomplete_multipart_days must be"),
        ({"noncurrent_version_expiration_days": "30"}, "noncurrent_version_expiration_days"),
    ],
)
def test_bad_arguments_fail_before_any_resource(overrides, message):
    with pytest.raises(ValueError, match=r"^Storage: ") as info:
        make(**overrides)
    assert message in str(info.value)

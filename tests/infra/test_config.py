"""Stack config: the real Pulumi.<stack>.yaml files load, and each bad key fails with an
error that names the stack, the full key and what was expected."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pulumi
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from contract import naming
from infra import config
from infra.aws import config as aws_config
from infra.aws.names import AwsNames, model_name_problems
from infra.common import checks
from infra.config import ConfigError, load

ROOT = Path(__file__).resolve().parents[2]
STACKS = ("dev", "staging", "prod")


def stack_file(stack: str) -> dict:
    return yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]


def base(aws: dict | None = None, **overrides) -> dict:
    raw = {"aws:region": "us-east-1", "tandem:models": ["churn"]}
    raw.update({f"tandem:{k}": v for k, v in overrides.items()})
    if aws is not None:
        raw["tandem:aws"] = aws
    return raw


def test_project_file_points_at_the_infra_program():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "tandem"
    assert project["runtime"] == {"name": "python", "options": {"virtualenv": ".venv"}}
    assert project["main"] == "infra/"
    assert (ROOT / "infra" / "__main__.py").is_file(), "main: infra/ needs infra/__main__.py"


@pytest.mark.parametrize("stack", STACKS)
def test_real_stack_files_load(stack):
    raw = stack_file(stack)
    cfg = load(stack, raw)
    assert cfg.stack == stack
    assert cfg.environment == stack
    assert cfg.name_prefix == f"tandem-{stack}"
    assert cfg.aws.region == raw["aws:region"]
    assert list(cfg.models) == raw["tandem:models"]
    assert cfg.log_retention_days == raw["tandem:log_retention_days"]
    assert list(cfg.alarm_emails) == raw["tandem:alarm_emails"]
    section = raw["tandem:aws"]
    assert cfg.aws.lambda_.memory_mb == section["lambda"]["memory_mb"]
    assert cfg.aws.lambda_.reserved_concurrency == section["lambda"]["reserved_concurrency"]
    assert (
        cfg.aws.s3.noncurrent_version_expiration_days
        == section["s3"]["noncurrent_version_expiration_days"]
    )
    assert cfg.aws.mlflow == section["mlflow"]
    assert "aws" in cfg.clouds
    # every default-derived name fits its service's limit
    names = AwsNames.of(cfg)
    assert len(names.bucket("models", "123456789012")) <= 63
    assert len(names.sagemaker_role) <= 64
    assert all(len(names.model_package_group(m)) <= 63 for m in cfg.models)


@pytest.mark.parametrize("stack", STACKS)
def test_real_stack_files_keep_cloud_settings_in_their_sections(stack):
    raw = stack_file(stack)
    top = {key.partition(":")[2] for key in raw if key.startswith("tandem:")}
    assert top <= {"clouds", "environment", "name_prefix", "models", "log_retention_days",
                   "alarm_emails", "github_oidc", "tags", "aws", "azure"}, sorted(top)  # fmt: skip
    assert "region" not in raw["tandem:aws"], "the region is aws:region, read by the provider"
    if "tandem:azure" in raw:
        assert "location" not in raw["tandem:azure"], "the location is azure-native:location"


def test_staging_and_prod_build_both_clouds_and_dev_aws_only():
    assert load("dev", stack_file("dev")).clouds == ("aws",)
    for stack in ("staging", "prod"):
        cfg = load(stack, stack_file(stack))
        assert cfg.clouds == ("aws", "azure"), (stack, cfg.clouds)
        assert cfg.azure.location == stack_file(stack)["azure-native:location"]


def test_prod_file_keeps_a_year_of_logs_and_gates_ci_on_an_environment():
    cfg = load("prod", stack_file("prod"))
    assert cfg.is_prod and cfg.log_retention_days >= 365
    assert cfg.github_oidc is not None
    assert cfg.github_oidc.subject == "repo:example-org/tandem:environment:production"


def test_staging_file_trusts_one_branch():
    cfg = load("staging", stack_file("staging"))
    assert cfg.github_oidc.subject == "repo:example-org/tandem:ref:refs/heads/main"


def test_defaults():
    cfg = load("dev", base())
    assert cfg.clouds == ("aws",)
    assert cfg.name_prefix == "tandem-dev"
    assert cfg.log_retention_days == 30
    assert cfg.aws.lambda_.reserved_concurrency >= 1
    assert cfg.github_oidc is None and cfg.aws.mlflow is False
    assert cfg.aws.serving_image_tag == aws_config.DEFAULT_SERVING_IMAGE_TAG
    assert cfg.aws.s3 == aws_config.S3Config()
    # Tandem's own training image, from the stack's repository, unless overridden
    assert cfg.aws.training_image_uri is None
    assert AwsNames.of(cfg).training_repository == "tandem-dev-training"
    assert cfg.aws.training_image_tag == aws_config.DEFAULT_TRAINING_IMAGE_TAG
    assert load("prod", base()).log_retention_days == 365


def test_default_training_image_tag_is_the_project_version():
    """The image CI builds from a release is tagged with its version; a stack that sets no
    tag runs the image of the code it was deployed with."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == aws_config.DEFAULT_TRAINING_IMAGE_TAG


def test_any_aws_region_gets_the_stacks_own_training_image():
    # No table of prebuilt images per region any more: every region builds its own.
    cfg = load("dev", {**base(), "aws:region": "eu-nowhere-9"})
    assert cfg.aws.training_image_uri is None
    assert AwsNames.of(cfg).training_repository == "tandem-dev-training"


def test_training_image_override_and_tag_load():
    uri = "210987654321.dkr.ecr.eu-west-1.amazonaws.com/shared/tandem-training:2.0.1"
    cfg = load(
        "dev", base(aws={"training_image_uri": uri, "training_image_tag": "2026.11.27-abc123"})
    )
    assert cfg.aws.training_image_uri == uri
    assert cfg.aws.training_image_tag == "2026.11.27-abc123"


def test_stack_name_is_made_dns_safe_for_the_default_prefix():
    assert load("Dev_Feature.X", base()).name_prefix == "tandem-dev-feature-x"


def test_explicit_environment_for_an_unrecognised_stack_name():
    assert load("sandbox", base(environment="staging")).environment == "staging"
    with pytest.raises(ConfigError, match=r"stack 'sandbox': tandem:environment: is required"):
        load("sandbox", base())


def test_other_namespaces_are_ignored():
    cfg = load("dev", {**base(), "aws:profile": "x", "azure-native:location": "westeurope"})
    assert cfg.aws.region == "us-east-1"


def test_an_aws_section_without_aws_among_the_clouds_is_refused():
    raw = {**base(aws={"mlflow": True}, clouds=["azure"]), "azure-native:location": "westeurope"}
    with pytest.raises(ConfigError, match=r"^stack 'dev': tandem:aws: is set only for a stack "):
        load("dev", raw)


@pytest.mark.parametrize(
    ("stack", "raw", "expected"),
    [
        (
            "prod",
            base(log_retention_days=30),
            "stack 'prod': tandem:log_retention_days: must be >= 365 in prod (got 30)",
        ),
        (
            "dev",
            base(log_retention_days=31),
            "stack 'dev': tandem:log_retention_days: must be a CloudWatch Logs retention period",
        ),
        ("dev", base(name_prefix="Tandem"), "stack 'dev': tandem:name_prefix: must be 2-24"),
        ("dev", base(name_prefix="a" * 25), "stack 'dev': tandem:name_prefix: must be 2-24"),
        ("dev", base(name_prefix="tandem--x"), "stack 'dev': tandem:name_prefix: must not"),
        ("dev", base(models=[]), "stack 'dev': tandem:models: must name at least one"),
        ("dev", base(models=["Churn"]), "stack 'dev': tandem:models: model name 'Churn'"),
        ("dev", base(models=["9lives"]), "stack 'dev': tandem:models: model name '9lives'"),
        ("dev", base(models=["m" * 33]), "stack 'dev': tandem:models: model name 'mmm"),
        ("dev", base(models=["a", "a"]), "stack 'dev': tandem:models: must not repeat"),
        ("dev", base(models="churn"), "stack 'dev': tandem:models: must be a list"),
        ("dev", base(clouds=["gcp"]), "stack 'dev': tandem:clouds[0]: must be one of"),
        ("dev", base(clouds=[]), "stack 'dev': tandem:clouds: must name at least one"),
        ("dev", base(alarm_emails=["oncall"]), "tandem:alarm_emails: 'oncall' is not an email"),
        (
            "dev",
            base(aws={"s3": {"noncurrent_version_expiration_days": 0}}),
            "stack 'dev': tandem:aws.s3.noncurrent_version_expiration_days: must be >= 1 (got 0)",
        ),
        (
            "dev",
            base(aws={"s3": {"noncurrent_version_expiration_days": "30"}}),
            "tandem:aws.s3.noncurrent_version_expiration_days: must be an integer (got '30')",
        ),
        (
            "dev",
            base(aws={"lambda": {"memory_mb": 64}}),
            "stack 'dev': tandem:aws.lambda.memory_mb: must be >= 128 (got 64)",
        ),
        (
            "dev",
            base(aws={"lambda": {"timeout_s": 901}}),
            "stack 'dev': tandem:aws.lambda.timeout_s: must be <= 900 (got 901)",
        ),
        (
            "dev",
            base(aws={"lambda": {"reserved_concurrency": 0}}),
            "stack 'dev': tandem:aws.lambda.reserved_concurrency: must be >= 1 (got 0)",
        ),
        (
            "dev",
            base(aws={"lambda": {"memory": 512}}),
            "stack 'dev': tandem:aws.lambda.memory: is not a known key",
        ),
        (
            "dev",
            # one URI cannot serve several functions: each model's deploy sets its own
            base(aws={"model_uri": "s3://b/artifacts/credit/run-1"}),
            "stack 'dev': tandem:aws.model_uri: is not a known key",
        ),
        ("dev", base(aws={"lambda": 1}), "stack 'dev': tandem:aws.lambda: must be a mapping"),
        ("dev", base(aws="on"), "stack 'dev': tandem:aws: must be a mapping"),
        (
            "dev",
            base(aws={"region": "eu-west-1"}),
            "stack 'dev': tandem:aws.region: is not a known key (the region is aws:region)",
        ),
        (
            "dev",
            base(lambda_={"memory_mb": 512}),
            "stack 'dev': tandem:lambda_: is not a known key",
        ),
        ("dev", base(mlflow=True), "stack 'dev': tandem:mlflow: is not a known key"),
        (
            "dev",
            base(aws={"github_oidc_provider_arn": "arn:aws:iam::123456789012:oidc-provider/x"}),
            "stack 'dev': tandem:aws.github_oidc_provider_arn: must be the ARN of the account's",
        ),
        (
            "dev",
            base(github_oidc={"repository": "just-a-name", "branch": "main"}),
            "stack 'dev': tandem:github_oidc.repository: must be 'owner/name'",
        ),
        (
            "dev",
            base(github_oidc={"repository": "o/r"}),
            "stack 'dev': tandem:github_oidc: must set exactly one of 'environment' or 'branch'",
        ),
        (
            "dev",
            base(github_oidc={"repository": "o/r", "branch": "main", "environment": "prod"}),
            "stack 'dev': tandem:github_oidc: must set exactly one",
        ),
        (
            "dev",
            base(github_oidc={"repository": "o/r", "branch": "*"}),
            "stack 'dev': tandem:github_oidc.branch: must be a literal name",
        ),
        (
            "dev",
            base(aws={"mlflow": "yes"}),
            "stack 'dev': tandem:aws.mlflow: must be true or false",
        ),
        (
            "dev",
            base(aws={"training_image_uri": "docker.io/me/img:1"}),
            "stack 'dev': tandem:aws.training_image_uri: must be an ECR image URI",
        ),
        (
            "dev",
            base(aws={"training_image_tag": "-rc1"}),
            "stack 'dev': tandem:aws.training_image_tag: must be an image tag",
        ),
        (
            "dev",
            base(aws={"training_image_tag": "v1 final"}),
            "stack 'dev': tandem:aws.training_image_tag: must be an image tag",
        ),
        (
            "dev",
            base(aws={"training_image_tag": "x" * 129}),
            "stack 'dev': tandem:aws.training_image_tag: must be an image tag",
        ),
        (
            "dev",
            base(aws={"training_image_tag": "latest"}),
            "stack 'dev': tandem:aws.training_image_tag: must name one build",
        ),
        (
            "dev",
            base(aws={"training_image_tag": 1}),
            "stack 'dev': tandem:aws.training_image_tag: must be a",
        ),
        ("dev", {**base(), "aws:region": "mars"}, "stack 'dev': aws:region: must be an AWS"),
        ("dev", {"tandem:models": ["a"]}, "stack 'dev': aws:region: is required"),
        ("dev", {"aws:region": "us-east-1"}, "stack 'dev': tandem:models: is required"),
        ("dev", base(log_retention=30), "stack 'dev': tandem:log_retention: is not a known key"),
        ("dev", base(tags={"aws:x": "y"}), "stack 'dev': tandem:tags: tag key 'aws:x'"),
    ],
)
def test_bad_key_names_stack_key_and_expectation(stack, raw, expected):
    with pytest.raises(ConfigError) as info:
        load(stack, raw)
    assert expected in str(info.value), f"expected {expected!r} in {str(info.value)!r}"


def test_every_error_is_reported_not_just_the_first():
    with pytest.raises(ConfigError) as info:
        load("dev", base(name_prefix="X", aws={"s3": {"noncurrent_version_expiration_days": 0}}))
    message = str(info.value)
    assert "tandem:name_prefix" in message
    assert "tandem:aws.s3.noncurrent_version_expiration_days" in message


def test_config_is_frozen():
    cfg = load("dev", base())
    with pytest.raises(Exception, match="frozen"):
        cfg.aws.region = "eu-west-1"
    with pytest.raises(Exception, match="frozen"):
        cfg.name_prefix = "other"


# -- name validation, property-based ---------------------------------------------------
valid_prefixes = st.from_regex(naming.NAME_PREFIX_RE, fullmatch=True).filter(
    lambda p: "--" not in p
)
valid_models = st.from_regex(naming.MODEL_NAME_RE, fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(prefix=valid_prefixes, model=valid_models)
def test_any_valid_prefix_and_model_give_names_aws_accepts(prefix, model):
    cfg = load("dev", base(name_prefix=prefix, models=[model]))
    names = AwsNames.of(cfg)
    group = names.model_package_group(model)
    # https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateModelPackageGroup.html
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", group), group
    for kind in ("data", "models", "logs"):
        bucket = names.bucket(kind, "123456789012")
        # S3 bucket naming rules (general purpose buckets)
        assert re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket), bucket
        assert ".." not in bucket and not bucket.startswith("xn--"), bucket
    for role in (names.sagemaker_role, names.lambda_role(model), names.ci_role):
        assert len(role) <= 64, role
    # https://docs.aws.amazon.com/lambda/latest/api/API_CreateFunction.html
    assert re.fullmatch(r"[a-zA-Z0-9-_]{1,64}", names.function(model)), names.function(model)
    assert not model_name_problems(prefix, model)
    # Secrets Manager names: 1-512 of letters, digits and /_+=.@-
    assert re.fullmatch(r"[A-Za-z0-9/_+=.@-]{1,512}", names.pseudonym_secret)
    # the components accept what the config accepts
    checks.check_name_prefix("Config", prefix)
    checks.check_models("Config", [model])


@settings(max_examples=200, deadline=None)
@given(prefix=st.text(min_size=0, max_size=40))
def test_any_prefix_outside_the_rule_is_rejected_with_its_key(prefix):
    if naming.NAME_PREFIX_RE.fullmatch(prefix) and "--" not in prefix:
        assert load("dev", base(name_prefix=prefix)).name_prefix == prefix
    else:
        with pytest.raises(ConfigError, match=r"^stack 'dev': tandem:name_prefix: "):
            load("dev", base(name_prefix=prefix))


@settings(max_examples=100, deadline=None)
@given(model=st.text(min_size=0, max_size=40))
def test_any_model_name_outside_the_rule_is_rejected(model):
    if naming.MODEL_NAME_RE.fullmatch(model):
        assert load("dev", base(models=[model])).models == (model,)
    else:
        with pytest.raises(ConfigError, match=r"^stack 'dev': tandem:models: "):
            load("dev", base(models=[model]))


# -- from_pulumi ------------------------------------------------------------------------
def _set_pulumi_config(values: dict[str, str]) -> None:
    pulumi.runtime.set_all_config(values)


def test_from_pulumi_reads_the_tandem_namespace():
    # Pulumi hands structured values to the program as JSON strings.
    _set_pulumi_config(
        {
            "aws:region": "eu-west-1",
            "tandem:models": '["churn","fraud"]',
            "tandem:log_retention_days": "400",
            "tandem:aws": '{"lambda": {"memory_mb": 512}, "mlflow": true}',
            "tandem:name_prefix": "tandem-dev",
        }
    )
    try:
        cfg = config.from_pulumi()
    finally:
        _set_pulumi_config({})
    assert cfg.stack == "dev"  # the mocks run as stack "dev"
    assert cfg.aws.region == "eu-west-1"
    assert cfg.models == ("churn", "fraud")
    assert cfg.log_retention_days == 400
    assert cfg.aws.lambda_.memory_mb == 512
    assert cfg.aws.mlflow is True


def test_from_pulumi_keeps_a_numeric_image_tag_a_string():
    # "7" is valid JSON (a number); the tag must stay the string Docker was given.
    _set_pulumi_config(
        {
            "aws:region": "us-east-1",
            "tandem:models": '["churn"]',
            "tandem:aws": '{"training_image_tag": "7"}',
        }
    )
    try:
        cfg = config.from_pulumi()
    finally:
        _set_pulumi_config({})
    assert cfg.aws.training_image_tag == "7"


def test_from_pulumi_rejects_a_misspelt_key():
    _set_pulumi_config(
        {"aws:region": "us-east-1", "tandem:models": '["churn"]', "tandem:modles": "[]"}
    )
    try:
        with pytest.raises(ConfigError, match=r"stack 'dev': tandem:modles: is not a known key"):
            config.from_pulumi()
    finally:
        _set_pulumi_config({})


def test_a_per_model_name_over_its_service_limit_is_named():
    """The naming rules keep `<prefix>-<model>-lambda` within IAM's 64; what the config
    check reports if a longer name ever got through."""
    prefix, model = "p" * naming.NAME_PREFIX_MAX, "m" * (naming.MODEL_NAME_MAX + 1)
    assert model_name_problems(prefix, model) == [
        f"IAM role name '{prefix}-{model}-lambda' is 65 characters (max 64)"
    ]
    longer = model + "mm"  # the function name passes its 64 too
    assert [p.split(" name ")[0] for p in model_name_problems(prefix, longer)] == [
        "Lambda function",
        "IAM role",
    ]
    assert not model_name_problems(prefix, "m" * naming.MODEL_NAME_MAX)

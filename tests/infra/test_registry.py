"""Registry: one SageMaker model package group per model, optional MLflow server."""

from __future__ import annotations

import pulumi
import pytest

from infra.aws.names import AwsNames
from infra.aws.registry import Registry, RegistryArgs

TAGS = {"project": "tandem", "stack": "dev"}
ROLE = "arn:aws:iam::123456789012:role/tandem-dev-sagemaker"


def _args(**overrides) -> RegistryArgs:
    values = {"name_prefix": "tandem-dev", "models": ["churn", "fraud-v2"], "tags": TAGS}
    values.update(overrides)
    return RegistryArgs(**values)


@pulumi.runtime.test
def test_one_group_per_model_named_prefix_model():
    registry = Registry("registry", _args())
    assert sorted(registry.groups) == ["churn", "fraud-v2"], registry.groups
    assert registry.mlflow_server is None, "mlflow is off by default, no tracking server"

    def check_group(model, group):
        def check(values):
            urn, name, tags = values
            assert name == f"tandem-dev-{model}", f"{urn}: group name {name!r}"
            assert tags == {**TAGS, "tandem:model": model}, f"{urn}: tags {tags!r}"

        return pulumi.Output.all(group.urn, group.model_package_group_name, group.tags).apply(check)

    return pulumi.Output.all(*[check_group(m, g) for m, g in registry.groups.items()])


@pulumi.runtime.test
def test_mlflow_tracking_server_uses_artifact_bucket_and_role():
    registry = Registry(
        "registry",
        _args(
            mlflow=True,
            sagemaker_role_arn=ROLE,
            artifact_bucket_name=pulumi.Output.from_input("tandem-dev-artifacts"),
        ),
    )
    server = registry.mlflow_server
    assert server is not None, "mlflow=True must create a tracking server"

    def check(values):
        urn, name, uri, role, auto, size, tags = values
        assert name == "tandem-dev-mlflow", f"{urn}: tracking_server_name {name!r}"
        assert uri == "s3://tandem-dev-artifacts/mlflow", f"{urn}: artifact_store_uri {uri!r}"
        assert role == ROLE, f"{urn}: role_arn {role!r}"
        assert auto is False, f"{urn}: automatic_model_registration must be off, got {auto!r}"
        assert size == "Small", f"{urn}: tracking_server_size {size!r}"
        assert tags == TAGS, f"{urn}: tags {tags!r}"

    return pulumi.Output.all(
        server.urn,
        server.tracking_server_name,
        server.artifact_store_uri,
        server.role_arn,
        server.automatic_model_registration,
        server.tracking_server_size,
        server.tags,
    ).apply(check)


def test_group_name_is_prefix_dash_model():
    assert AwsNames("tandem-prod").model_package_group("churn") == "tandem-prod-churn"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"models": []}, "at least one model"),
        ({"models": ["churn", "churn"]}, "duplicates"),
        ({"models": ["Churn_Model"]}, "lowercase"),
        ({"models": ["churn\n"]}, "lowercase"),
        ({"name_prefix": "tandem-dev\n"}, "name_prefix"),
        ({"models": ["m" * 60]}, "must be 1-32 lowercase"),
        ({"models": ["9lives"]}, "starting with a letter"),
        ({"name_prefix": "Tandem_Dev"}, "name_prefix"),
        ({"mlflow": True}, "sagemaker_role_arn and artifact_bucket_name"),
        (
            {"mlflow": True, "sagemaker_role_arn": "tandem-role", "artifact_bucket_name": "b"},
            "must be an ARN",
        ),
        (
            {
                "mlflow": True,
                "sagemaker_role_arn": ROLE,
                "artifact_bucket_name": "b",
                "mlflow_size": "Huge",
            },
            "mlflow_size",
        ),
    ],
)
def test_bad_args_raise_a_clear_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        Registry("registry", _args(**overrides))

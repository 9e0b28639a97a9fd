"""Serving: the inference Lambda, its log group, the `live` alias and its Function URL
meet the Lambda rows of the security baseline, and deploys own the alias."""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pytest

from deploy import bundle
from infra.aws.serving import Serving, ServingArgs
from tests.infra.conftest import ACCOUNT, REGION, TandemMocks

KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/tandem-dev-lambda-serve"
MODEL_URI = "s3://tandem-dev-models/artifacts/churn/3/model.tar.gz"
TAGS = {"project": "tandem"}


@pytest.fixture
def args(tmp_path):
    def make(**overrides) -> ServingArgs:
        values = {
            "name_prefix": "tandem-dev",
            "role_arn": ROLE,
            "kms_key_arn": KEY,
            "model_uri": MODEL_URI,
            "reserved_concurrency": 5,
            "log_retention_days": 400,
            "build_dir": str(tmp_path / "build"),
            "tags": TAGS,
        }
        values.update(overrides)
        return ServingArgs(**values)

    return make


def _plain(output: pulumi.Output) -> pulumi.Output:
    return output.apply(lambda v: json.loads(json.dumps(v)) if v is not None else None)


@pulumi.runtime.test
def test_function_meets_the_lambda_baseline(args):
    serving = Serving("serving", args())
    fn = serving.function

    def check(values):
        (urn, name, runtime, archs, tracing, reserved, key, env, publish, handler, role, tags,
         logging) = values  # fmt: skip
        assert name == "tandem-dev-serve", f"{urn}: name {name!r}"
        assert runtime == "python3.12", f"{urn}: runtime {runtime!r} (CKV_AWS_363)"
        assert archs == ["arm64"], f"{urn}: architectures {archs!r}"
        assert tracing == {"mode": "Active"}, f"{urn}: tracing_config {tracing!r} (CKV_AWS_50)"
        assert reserved == 5, f"{urn}: reserved_concurrent_executions {reserved!r} (CKV_AWS_115)"
        assert key == KEY, f"{urn}: kms_key_arn {key!r} (CKV_AWS_173)"
        assert env == {"variables": {"MODEL_URI": MODEL_URI}}, f"{urn}: environment {env!r}"
        assert publish is True, f"{urn}: publish {publish!r}"
        assert handler == bundle.LAMBDA_HANDLER, f"{urn}: handler {handler!r}"
        assert role == ROLE, f"{urn}: role {role!r}"
        assert tags == TAGS, f"{urn}: tags {tags!r}"
        assert logging["log_group"] == "/aws/lambda/tandem-dev-serve", f"{urn}: {logging!r}"

    return pulumi.Output.all(
        fn.urn,
        fn.name,
        fn.runtime,
        fn.architectures,
        _plain(fn.tracing_config),
        fn.reserved_concurrent_executions,
        fn.kms_key_arn,
        _plain(fn.environment),
        fn.publish,
        fn.handler,
        fn.role,
        fn.tags,
        _plain(fn.logging_config),
    ).apply(check)


@pulumi.runtime.test
def test_without_a_model_uri_the_variable_is_unset(args):
    serving = Serving("serving", args(model_uri=None))

    def check(values):
        urn, env = values
        assert "MODEL_URI" not in (env or {}).get("variables", {}), f"{urn}: environment {env!r}"

    return pulumi.Output.all(serving.function.urn, _plain(serving.function.environment)).apply(
        check
    )


@pulumi.runtime.test
def test_function_name_can_come_from_the_stack_config(args):
    serving = Serving("serving", args(function_name="tandem-dev-churn-serve"))

    def check(values):
        fn_urn, fn_name, group_urn, group_name, url_fn = values
        assert fn_name == "tandem-dev-churn-serve", f"{fn_urn}: name {fn_name!r}"
        assert group_name == "/aws/lambda/tandem-dev-churn-serve", f"{group_urn}: {group_name!r}"
        assert url_fn == fn_name, f"function URL names {url_fn!r}"

    return pulumi.Output.all(
        serving.function.urn,
        serving.function.name,
        serving.log_group.urn,
        serving.log_group.name,
        serving.function_url.function_name,
    ).apply(check)


@pulumi.runtime.test
def test_code_is_the_deterministic_bundle(args):
    serving = Serving("serving", args())
    archive = serving.archive_path
    assert archive.name == bundle.LAMBDA_ZIP_NAME and archive.is_file(), archive

    def check(values):
        urn, code, code_hash = values
        assert isinstance(code, pulumi.FileArchive), f"{urn}: code {code!r}"
        assert Path(code.path) == archive, f"{urn}: code path {code.path!r}"
        assert code_hash == bundle.sha256_base64(archive), f"{urn}: source_code_hash {code_hash!r}"

    return pulumi.Output.all(
        serving.function.urn, serving.function.code, serving.function.source_code_hash
    ).apply(check)


@pulumi.runtime.test
def test_log_group_has_retention_and_the_key(args):
    serving = Serving("serving", args())
    group = serving.log_group

    def check(values):
        urn, name, retention, key, tags = values
        assert name == "/aws/lambda/tandem-dev-serve", f"{urn}: name {name!r}"
        assert retention == 400, f"{urn}: retention_in_days {retention!r} (CKV_AWS_338)"
        assert key == KEY, f"{urn}: kms_key_id {key!r} (CKV_AWS_158)"
        assert tags == TAGS, f"{urn}: tags {tags!r}"

    return pulumi.Output.all(
        group.urn, group.name, group.retention_in_days, group.kms_key_id, group.tags
    ).apply(check)


@pulumi.runtime.test
def test_live_alias_points_at_the_published_version(args):
    serving = Serving("serving", args())
    alias, fn = serving.alias, serving.function

    def check(values):
        urn, name, fn_name, version, published = values
        assert name == "live", f"{urn}: name {name!r}"
        assert fn_name == "tandem-dev-serve", f"{urn}: function_name {fn_name!r}"
        assert version == published == "1", (
            f"{urn}: function_version {version!r}, published version {published!r}"
        )

    return pulumi.Output.all(
        alias.urn, alias.name, alias.function_name, alias.function_version, fn.version
    ).apply(check)


@pulumi.runtime.test
def test_deploys_own_the_environment_and_the_alias_version(args, monkeypatch):
    """`pulumi up` must not undo a deploy: MODEL_URI and the alias target are ignored."""
    seen: dict[str, pulumi.ResourceOptions] = {}

    def recording(cls, key):
        class Recording(cls):
            def __init__(self, resource_name, *a, opts=None, **kw):
                seen[key] = opts
                super().__init__(resource_name, *a, opts=opts, **kw)

        return Recording

    monkeypatch.setattr(aws.lambda_, "Function", recording(aws.lambda_.Function, "function"))
    monkeypatch.setattr(aws.lambda_, "Alias", recording(aws.lambda_.Alias, "alias"))
    serving = Serving("serving", args())

    def check(urns):
        fn_urn, alias_urn = urns
        assert seen["function"].ignore_changes == ["environment"], (
            f"{fn_urn}: ignore_changes {seen['function'].ignore_changes!r}"
        )
        assert seen["alias"].ignore_changes == ["function_version"], (
            f"{alias_urn}: ignore_changes {seen['alias'].ignore_changes!r}"
        )
        assert serving.log_group in seen["function"].depends_on, (
            f"{fn_urn}: must depend on its log group, or Lambda creates one unencrypted"
        )

    return pulumi.Output.all(serving.function.urn, serving.alias.urn).apply(check)


@pulumi.runtime.test
def test_function_url_is_iam_authenticated_on_the_alias_without_cors_by_default(args):
    serving = Serving("serving", args())
    url = serving.function_url

    def check(values):
        urn, auth, qualifier, fn_name, cors = values
        assert auth == "AWS_IAM", f"{urn}: authorization_type {auth!r} (CKV_AWS_258)"
        assert qualifier == "live", f"{urn}: qualifier {qualifier!r}"
        assert fn_name == "tandem-dev-serve", f"{urn}: function_name {fn_name!r}"
        assert cors is None, f"{urn}: cors {cors!r}, expected none without allowed_origins"

    return pulumi.Output.all(
        url.urn, url.authorization_type, url.qualifier, url.function_name, _plain(url.cors)
    ).apply(check)


@pulumi.runtime.test
def test_cors_allows_exactly_the_given_origins(args):
    origins = ["https://app.example.com", "http://localhost:5173"]
    serving = Serving("serving", args(allowed_origins=origins))
    url = serving.function_url

    def check(values):
        urn, auth, cors = values
        assert auth == "AWS_IAM", f"{urn}: authorization_type {auth!r}"
        allowed = cors["allow_origins"]
        assert "*" not in "".join(allowed), f"{urn}: wildcard CORS origin in {allowed!r}"
        assert sorted(allowed) == sorted(origins), f"{urn}: allow_origins {allowed!r}"
        assert cors["allow_methods"] == ["POST"], f"{urn}: allow_methods {cors['allow_methods']!r}"

    return pulumi.Output.all(url.urn, url.authorization_type, _plain(url.cors)).apply(check)


@pulumi.runtime.test
def test_no_resource_policy_is_created(args):
    """No lambda Permission at all: nothing can make the function public (CKV_AWS_301)."""
    created: list[str] = []

    class Recording(TandemMocks):
        def new_resource(self, a):
            created.append(a.typ)
            return super().new_resource(a)

    pulumi.runtime.set_mocks(Recording(), project="tandem", stack="dev", preview=False)
    serving = Serving("serving", args())

    def check(urns):
        assert "aws:lambda/functionUrl:FunctionUrl" in created, created
        assert "aws:lambda/permission:Permission" not in created, (
            f"{urns[0]}: a lambda Permission was created: {created!r}"
        )

    return pulumi.Output.all(serving.urn, serving.function_url.urn).apply(check)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"runtime": "python3.9"}, "runtime 'python3.9' is not supported"),
        ({"runtime": "python3.14"}, "is not supported"),
        ({"runtime": "nodejs22.x"}, "is not supported"),
        ({"allowed_origins": ["*"]}, "wildcards are refused"),
        ({"allowed_origins": ["https://*.example.com"]}, "wildcards are refused"),
        ({"allowed_origins": ["http://app.example.com"]}, "exact origin"),
        ({"allowed_origins": ["https://app.example.com\n"]}, "exact origin"),
        ({"reserved_concurrency": 0}, "reserved_concurrency=0 must be >= 1"),
        ({"log_retention_days": 0}, "not a CloudWatch Logs retention period"),
        ({"memory_mb": 64}, "memory_mb"),
        ({"timeout_s": 901}, "timeout_s"),
        ({"function_name": "tandem dev"}, "must be 1-64"),
        ({"role_arn": "tandem-dev-lambda-serve"}, "role_arn must be an ARN"),
    ],
)
def test_bad_args_raise_a_clear_value_error(args, overrides, message):
    with pytest.raises(ValueError, match=message):
        Serving("serving", args(**overrides))

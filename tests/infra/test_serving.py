"""Serving: one Lambda per model (its log group, `live` alias and Function URL) meets the
Lambda rows of the security baseline, runs the code archive uploaded once to S3, and leaves
the alias to deploys."""

from __future__ import annotations

import json
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pytest

from deploy import bundle
from infra.aws import serving as serving_module
from infra.aws.serving import Serving, ServingArgs
from tests.infra.conftest import ACCOUNT, REGION, TandemMocks

KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
MODELS = ["credit", "churn"]
ROLES = {m: f"arn:aws:iam::{ACCOUNT}:role/tandem-dev-{m}-lambda" for m in MODELS}
BUCKET = f"tandem-dev-models-{ACCOUNT}"
TAGS = {"project": "tandem"}


@pytest.fixture
def args(tmp_path):
    def make(**overrides) -> ServingArgs:
        values = {
            "name_prefix": "tandem-dev",
            "models": MODELS,
            "role_arns": ROLES,
            "kms_key_arn": KEY,
            "models_bucket": BUCKET,
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
def test_each_model_has_a_function_that_meets_the_lambda_baseline(args):
    serving = Serving("serving", args())
    assert sorted(serving.endpoints) == sorted(MODELS)

    def check_one(model):
        fn = serving.endpoints[model].function

        def check(values):
            (urn, name, runtime, archs, tracing, reserved, key, env, publish, handler, role,
             tags, logging) = values  # fmt: skip
            assert name == f"tandem-dev-{model}-serve", f"{urn}: name {name!r}"
            assert runtime == "python3.12", f"{urn}: runtime {runtime!r} (CKV_AWS_363)"
            assert archs == ["arm64"], f"{urn}: architectures {archs!r}"
            assert tracing == {"mode": "Active"}, f"{urn}: tracing {tracing!r} (CKV_AWS_50)"
            assert reserved == 5, f"{urn}: reserved concurrency {reserved!r} (CKV_AWS_115)"
            assert key == KEY, f"{urn}: kms_key_arn {key!r} (CKV_AWS_173)"
            # MODEL_NAME from Pulumi; MODEL_URI/MODEL_VERSION come with the first deploy
            assert env == {"variables": {"MODEL_NAME": model}}, f"{urn}: environment {env!r}"
            assert publish is True, f"{urn}: publish {publish!r}"
            assert handler == bundle.LAMBDA_HANDLER, f"{urn}: handler {handler!r}"
            assert role == ROLES[model], f"{urn}: role {role!r}: not the model's own"
            assert tags == {**TAGS, "tandem:model": model}, f"{urn}: tags {tags!r}"
            assert logging["log_group"] == f"/aws/lambda/tandem-dev-{model}-serve", (
                f"{urn}: {logging!r}"
            )

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

    return pulumi.Output.all(*(check_one(m) for m in MODELS))


@pulumi.runtime.test
def test_the_archive_is_uploaded_once_kms_encrypted_and_every_function_runs_it(args):
    serving = Serving("serving", args())
    archive = serving.archive_path
    assert archive.name == bundle.LAMBDA_ZIP_NAME and archive.is_file(), archive
    code = serving.code

    def check(values):
        urn, bucket, key, source, sse, kms, *functions = values
        assert bucket == BUCKET, f"{urn}: bucket {bucket!r}"
        assert key == f"lambda/{bundle.LAMBDA_ZIP_NAME}", f"{urn}: key {key!r}"
        assert isinstance(source, pulumi.FileAsset), f"{urn}: source {source!r}"
        assert Path(source.path) == archive, f"{urn}: source path {source.path!r}"
        assert (sse, kms) == ("aws:kms", KEY), f"{urn}: encryption {sse!r} with {kms!r}"
        per_function = zip(*[iter(functions)] * 5, strict=True)
        for fn_urn, s3_bucket, s3_key, code_hash, zip_code in per_function:
            assert (s3_bucket, s3_key) == (BUCKET, key), f"{fn_urn}: code {s3_bucket}/{s3_key}"
            assert zip_code is None, f"{fn_urn}: a direct upload ({zip_code!r}), not S3"
            assert code_hash == bundle.sha256_base64(archive), f"{fn_urn}: hash {code_hash!r}"

    per_function = [
        value
        for e in serving.endpoints.values()
        for value in (
            e.function.urn,
            e.function.s3_bucket,
            e.function.s3_key,
            e.function.source_code_hash,
            e.function.code,
        )
    ]
    return pulumi.Output.all(
        code.urn, code.bucket, code.key, code.source, code.server_side_encryption,
        code.kms_key_id, *per_function,
    ).apply(check)  # fmt: skip


@pulumi.runtime.test
def test_a_prebuilt_archive_is_used_as_given(args, tmp_path):
    prebuilt = bundle.build_lambda_zip(tmp_path / "prebuilt")
    serving = Serving("serving", args(archive_path=str(prebuilt), build_dir=None))
    assert serving.archive_path == prebuilt

    def check(values):
        urn, source = values
        assert Path(source.path) == prebuilt, f"{urn}: source {source.path!r}"

    return pulumi.Output.all(serving.code.urn, serving.code.source).apply(check)


def test_the_archive_builder_ships_sources_only_under_the_code_only_switch(tmp_path, monkeypatch):
    """The infra tests' conftest sets TANDEM_LAMBDA_CODE_ONLY=1: no dependency download."""
    monkeypatch.setenv(serving_module.CODE_ONLY_ENV, "1")
    archive = serving_module.lambda_archive(tmp_path)
    import zipfile

    names = zipfile.ZipFile(archive).namelist()
    assert bundle.LAMBDA_HANDLER.rsplit(".", 1)[0].replace(".", "/") + ".py" in names, names
    assert not any(n.startswith(("numpy/", "onnxruntime/")) for n in names), names


@pulumi.runtime.test
def test_each_log_group_has_retention_and_the_key(args):
    serving = Serving("serving", args())

    def check(values):
        for urn, name, retention, key, model in zip(*[iter(values)] * 5, strict=True):
            assert name == f"/aws/lambda/tandem-dev-{model}-serve", f"{urn}: name {name!r}"
            assert retention == 400, f"{urn}: retention_in_days {retention!r} (CKV_AWS_338)"
            assert key == KEY, f"{urn}: kms_key_id {key!r} (CKV_AWS_158)"

    return pulumi.Output.all(
        *(
            v
            for m, e in serving.endpoints.items()
            for v in (
                e.log_group.urn,
                e.log_group.name,
                e.log_group.retention_in_days,
                e.log_group.kms_key_id,
                m,
            )
        )
    ).apply(check)


@pulumi.runtime.test
def test_each_live_alias_points_at_its_functions_published_version(args):
    serving = Serving("serving", args())

    def check(values):
        for urn, name, fn_name, version, published, model in zip(*[iter(values)] * 6, strict=True):
            assert name == "live", f"{urn}: name {name!r}"
            assert fn_name == f"tandem-dev-{model}-serve", f"{urn}: function_name {fn_name!r}"
            assert version == published == "1", f"{urn}: {version!r} / {published!r}"

    return pulumi.Output.all(
        *(
            v
            for m, e in serving.endpoints.items()
            for v in (
                e.alias.urn,
                e.alias.name,
                e.alias.function_name,
                e.alias.function_version,
                e.function.version,
                m,
            )
        )
    ).apply(check)


@pulumi.runtime.test
def test_deploys_own_the_environment_and_the_alias_version(args, monkeypatch):
    """`pulumi up` must not undo a deploy: MODEL_URI, the alias target and its canary
    weights are ignored."""
    seen: dict[str, list[pulumi.ResourceOptions]] = {"function": [], "alias": []}

    def recording(cls, key):
        class Recording(cls):
            def __init__(self, resource_name, *a, opts=None, **kw):
                seen[key].append(opts)
                super().__init__(resource_name, *a, opts=opts, **kw)

        return Recording

    monkeypatch.setattr(aws.lambda_, "Function", recording(aws.lambda_.Function, "function"))
    monkeypatch.setattr(aws.lambda_, "Alias", recording(aws.lambda_.Alias, "alias"))
    serving = Serving("serving", args())

    def check(urns):
        assert len(seen["function"]) == len(seen["alias"]) == len(MODELS), seen
        for opts, e in zip(seen["function"], serving.endpoints.values(), strict=True):
            assert opts.ignore_changes == ["environment"], f"{urns}: {opts.ignore_changes!r}"
            assert e.log_group in opts.depends_on, "a function must depend on its log group"
            assert serving.code in opts.depends_on, "a function must depend on its code"
        for opts in seen["alias"]:
            assert opts.ignore_changes == ["function_version", "routing_config"], (
                f"{urns}: alias ignore_changes {opts.ignore_changes!r}"
            )

    return pulumi.Output.all(*(e.function.urn for e in serving.endpoints.values())).apply(check)


@pulumi.runtime.test
def test_each_function_url_is_iam_authenticated_on_its_alias_without_cors_by_default(args):
    serving = Serving("serving", args())

    def check(values):
        for urn, auth, qualifier, fn_name, cors, model in zip(*[iter(values)] * 6, strict=True):
            assert auth == "AWS_IAM", f"{urn}: authorization_type {auth!r} (CKV_AWS_258)"
            assert qualifier == "live", f"{urn}: qualifier {qualifier!r}"
            assert fn_name == f"tandem-dev-{model}-serve", f"{urn}: function_name {fn_name!r}"
            assert cors is None, f"{urn}: cors {cors!r}, expected none without allowed_origins"

    return pulumi.Output.all(
        *(
            v
            for m, e in serving.endpoints.items()
            for v in (
                e.function_url.urn,
                e.function_url.authorization_type,
                e.function_url.qualifier,
                e.function_url.function_name,
                _plain(e.function_url.cors),
                m,
            )
        )
    ).apply(check)


@pulumi.runtime.test
def test_cors_allows_exactly_the_given_origins(args):
    origins = ["https://app.example.com", "http://localhost:5173"]
    serving = Serving("serving", args(allowed_origins=origins))
    url = serving.endpoints["credit"].function_url

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
    """No lambda Permission at all: nothing can make a function public (CKV_AWS_301)."""
    created: list[str] = []

    class Recording(TandemMocks):
        def new_resource(self, a):
            created.append(a.typ)
            return super().new_resource(a)

    pulumi.runtime.set_mocks(Recording(), project="tandem", stack="dev", preview=False)
    serving = Serving("serving", args())

    def check(urns):
        assert created.count("aws:lambda/functionUrl:FunctionUrl") == len(MODELS), created
        assert "aws:lambda/permission:Permission" not in created, (
            f"{urns[0]}: a lambda Permission was created: {created!r}"
        )

    return pulumi.Output.all(
        serving.urn, *(e.function_url.urn for e in serving.endpoints.values())
    ).apply(check)


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
        ({"models": []}, "at least one model"),
        ({"models": ["Credit"]}, "model name 'Credit'"),
        ({"role_arns": {"credit": ROLES["credit"]}}, "one role per model"),
        ({"role_arns": {**ROLES, "credit": "tandem-dev-credit-lambda"}}, "must be an ARN"),
        ({"archive_path": "/nonexistent/tandem-lambda.zip"}, "is not a file"),
    ],
)
def test_bad_args_raise_a_clear_value_error(args, overrides, message):
    with pytest.raises(ValueError, match=message):
        Serving("serving", args(**overrides))

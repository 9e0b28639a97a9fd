"""Identity: roles trust one principal, carry one least-privilege inline policy each, and
the CI role is limited to one repository and one environment or branch."""

from __future__ import annotations

import json

import pulumi
import pytest

from infra.aws import policies
from infra.aws.identity import GithubOidcArgs, Identity, IdentityArgs
from tests.infra.conftest import ACCOUNT, REGION
from tests.infra.policy_checks import (
    as_list,
    assert_least_privilege,
    assert_single_service_trust,
    by_sid,
    statements,
)

DATA = "arn:aws:s3:::tandem-dev-data-123456789012"
MODELS = "arn:aws:s3:::tandem-dev-models-123456789012"
KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:tandem-dev/pseudonym-key-AbCdEf"
GROUPS = ["tandem-dev-churn", "tandem-dev-fraud"]
GROUP_ARNS = [f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package-group/{g}" for g in GROUPS]
SUBJECT = "repo:example-org/tandem:environment:production"
SERVED = ["churn", "fraud"]  # one serving function (and role) each


def make(**overrides) -> Identity:
    args = {
        "name_prefix": "tandem-dev",
        "account_id": ACCOUNT,
        "region": REGION,
        "data_bucket_arn": DATA,
        "models_bucket_arn": MODELS,
        "kms_key_arn": KEY,
        "model_package_group_names": GROUPS,
        "models": SERVED,
        "sagemaker_role_name": "tandem-dev-sagemaker-execution",
        "pseudonym_secret_arn": SECRET,
        "ci_role_name": "tandem-dev-ci-deploy",
        "tags": {"tandem:stack": "dev"},
    }
    args.update(overrides)
    return Identity("identity", IdentityArgs(**args))


def with_ci(**overrides) -> Identity:
    return make(
        github_oidc=GithubOidcArgs(repository="example-org/tandem", subject=SUBJECT), **overrides
    )


def actions_on(doc: dict, resource: str) -> set[str]:
    """Every action some Allow statement grants on exactly ``resource``."""
    found: set[str] = set()
    for st in statements(doc):
        if st["Effect"] == "Allow" and resource in as_list(st["Resource"]):
            found.update(as_list(st["Action"]))
    return found


@pulumi.runtime.test
def test_sagemaker_role_trusts_sagemaker_only_and_has_no_managed_policies():
    identity = make()
    role = identity.sagemaker_role

    def check(values):
        urn, name, trust, managed, tags = values
        assert name == "tandem-dev-sagemaker-execution", f"{urn}: name {name!r}"
        assert_single_service_trust(trust, "sagemaker.amazonaws.com", urn)
        assert not managed, f"{urn}: managed policies attached: {managed!r} (CKV_AWS_274)"
        assert tags == {"tandem:stack": "dev"}, f"{urn}: tags {tags!r}"

    return pulumi.Output.all(
        role.urn, role.name, role.assume_role_policy, role.managed_policy_arns, role.tags
    ).apply(check)


@pulumi.runtime.test
def test_sagemaker_policy_is_scoped_to_its_prefixes_key_and_groups():
    identity = make()
    pol = identity.sagemaker_policy

    def check(values):
        urn, role, role_id, policy = values
        assert role == role_id, f"{urn}: attached to {role!r}, not the SageMaker role"
        doc = json.loads(policy)
        assert_least_privilege(doc, urn)
        assert actions_on(doc, f"{DATA}/datasets/*") == {"s3:GetObject", "s3:GetObjectVersion"}, (
            f"{urn}: datasets/ access {actions_on(doc, f'{DATA}/datasets/*')}"
        )
        for prefix in ("artifacts/", "runs/"):
            got = actions_on(doc, f"{MODELS}/{prefix}*")
            assert {"s3:GetObject", "s3:PutObject"} <= got, f"{urn}: {prefix} access {got}"
            assert "s3:DeleteObject" not in got, f"{urn}: may delete under {prefix}"
        for prefix in ("captures/", "reports/", "mlflow/"):
            assert not actions_on(doc, f"{MODELS}/{prefix}*"), f"{urn}: reaches {prefix}"
        every_resource = {r for st in statements(doc) for r in as_list(st["Resource"])}
        assert not {r for r in every_resource if r.startswith("arn:aws:s3")} - {
            DATA,
            MODELS,
            f"{DATA}/datasets/*",
            f"{MODELS}/artifacts/*",
            f"{MODELS}/runs/*",
        }, f"{urn}: S3 resources beyond the stack prefixes: {sorted(every_resource)}"
        kms = by_sid(doc, "UseStackKeyThroughS3")
        assert kms["Resource"] == KEY, f"{urn}: KMS resource {kms['Resource']!r}"
        assert kms["Condition"] == {
            "StringEquals": {"kms:ViaService": [f"s3.{REGION}.amazonaws.com"]}
        }, f"{urn}: KMS condition {kms['Condition']!r}"
        grant = by_sid(doc, "GrantTrainingVolumeEncryption")
        assert (grant["Action"], grant["Resource"]) == ("kms:CreateGrant", KEY), (
            f"{urn}: volume-encryption grant {grant!r}"
        )
        assert grant["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}, (
            f"{urn}: the role may create grants that are not for AWS resources"
        )
        registry = by_sid(doc, "RegisterModelVersions")
        assert set(registry["Resource"]) == {
            *GROUP_ARNS,
            *(a.replace("model-package-group/", "model-package/") + "/*" for a in GROUP_ARNS),
        }, f"{urn}: registry resources {registry['Resource']!r}"
        metrics = by_sid(doc, "PublishMetrics")
        assert metrics["Condition"] == {
            "StringEquals": {"cloudwatch:namespace": ["Tandem", "/aws/sagemaker/TrainingJobs"]}
        }, f"{urn}: metric namespaces {metrics['Condition']!r}"
        assert not any("iam:" in a for st in statements(doc) for a in as_list(st["Action"])), (
            f"{urn}: the SageMaker role must not hold IAM actions"
        )

    return pulumi.Output.all(pol.urn, pol.role, identity.sagemaker_role.id, pol.policy).apply(check)


@pulumi.runtime.test
def test_sagemaker_policy_reaches_mlflow_prefix_only_with_mlflow_and_ecr_only_when_custom():
    repo = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/tandem-train"
    identity = make(mlflow=True, ecr_repository_arns=[repo])

    def check(values):
        urn, policy = values
        doc = json.loads(policy)
        assert_least_privilege(doc, urn)
        assert {"s3:GetObject", "s3:PutObject"} <= actions_on(doc, f"{MODELS}/mlflow/*"), urn
        assert by_sid(doc, "PullImages")["Resource"] == [repo], urn

    return pulumi.Output.all(identity.sagemaker_policy.urn, identity.sagemaker_policy.policy).apply(
        check
    )


@pulumi.runtime.test
def test_each_models_lambda_role_reaches_only_its_own_artifacts_captures_and_logs():
    identity = make()
    assert sorted(identity.lambda_roles) == sorted(identity.lambda_policies) == SERVED

    def check_one(model):
        role, pol = identity.lambda_roles[model], identity.lambda_policies[model]

        def check(values):
            role_urn, name, trust, managed, urn, attached, role_id, policy = values
            assert name == f"tandem-dev-{model}-lambda", f"{role_urn}: name {name!r}"
            assert_single_service_trust(trust, "lambda.amazonaws.com", role_urn)
            assert not managed, f"{role_urn}: managed policies {managed!r}"
            assert attached == role_id, f"{urn}: attached to {attached!r}"
            doc = json.loads(policy)
            assert_least_privilege(doc, urn)
            s3 = {
                (a, r)
                for st in statements(doc)
                for a in as_list(st["Action"])
                if a.startswith("s3:")
                for r in as_list(st["Resource"])
            }
            assert s3 == {
                ("s3:GetObject", f"{MODELS}/artifacts/{model}/*"),
                ("s3:PutObject", f"{MODELS}/captures/{model}/*"),
            }, f"{urn}: S3 grants {sorted(s3)}: not only model {model}'s prefixes"
            logs = by_sid(doc, "WriteOwnLogs")
            assert logs["Resource"] == (
                f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/tandem-dev-{model}-serve:*"
            ), f"{urn}: log resource {logs['Resource']!r}"
            assert "logs:CreateLogGroup" not in logs["Action"], f"{urn}: may create log groups"
            kms = by_sid(doc, "UseStackKeyThroughS3AndLambda")
            assert (
                kms["Resource"] == KEY and "kms:ViaService" in kms["Condition"]["StringEquals"]
            ), f"{urn}: KMS statement {kms!r}"
            xray = by_sid(doc, "XRayActiveTracing")
            assert set(xray["Action"]) == {"xray:PutTelemetryRecords", "xray:PutTraceSegments"}, urn
            # metrics are EMF log lines, captures drop personal columns: neither API is needed
            actions = {a for st in statements(doc) for a in as_list(st["Action"])}
            assert not {a for a in actions if a.startswith(("cloudwatch:", "secretsmanager:"))}, (
                f"{urn}: {sorted(actions)}"
            )

        return pulumi.Output.all(
            role.urn,
            role.name,
            role.assume_role_policy,
            role.managed_policy_arns,
            pol.urn,
            pol.role,
            role.id,
            pol.policy,
        ).apply(check)

    return pulumi.Output.all(*(check_one(m) for m in SERVED))


def secret_grants(doc: dict) -> dict[str, set[str]]:
    """Every Secrets Manager action the document grants, by resource."""
    grants: dict[str, set[str]] = {}
    for st in statements(doc):
        for action in as_list(st["Action"]):
            if action.startswith("secretsmanager:"):
                for resource in as_list(st["Resource"]):
                    grants.setdefault(resource, set()).add(action)
    return grants


def secret_key_use(doc: dict) -> list[dict]:
    """The statements that use the stack key through Secrets Manager."""
    return [
        st for st in statements(doc) if "secretsmanager." in json.dumps(st.get("Condition", {}))
    ]


@pulumi.runtime.test
def test_ci_role_describes_initialises_and_reads_the_pseudonym_key_only():
    identity = with_ci()

    def check(values):
        urn, policy = values
        doc = json.loads(policy)
        assert secret_grants(doc) == {
            SECRET: {
                "secretsmanager:DescribeSecret",
                "secretsmanager:GetSecretValue",
                "secretsmanager:PutSecretValue",
            }
        }, f"{urn}: Secrets Manager grants {secret_grants(doc)!r}"
        (kms,) = secret_key_use(doc)
        assert set(kms["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey"}, f"{urn}: {kms!r}"
        assert kms["Resource"] == KEY, urn

    return pulumi.Output.all(identity.ci_policy.urn, identity.ci_policy.policy).apply(check)


@pulumi.runtime.test
def test_no_ci_role_without_github_oidc():
    identity = make()

    def check(urns):
        assert identity.ci_role is None and identity.ci_policy is None, urns
        assert identity.oidc_provider is None, urns

    return pulumi.Output.all(identity.urn, identity.lambda_roles["churn"].urn).apply(check)


@pulumi.runtime.test
def test_ci_role_is_assumable_by_one_repository_and_environment_only():
    identity = with_ci()
    role, provider = identity.ci_role, identity.oidc_provider

    def check(values):
        urn, name, trust, managed, provider_urn, url, clients, provider_arn = values
        assert name == "tandem-dev-ci-deploy", f"{urn}: name {name!r}"
        assert url == "https://token.actions.githubusercontent.com", f"{provider_urn}: {url!r}"
        assert clients == ["sts.amazonaws.com"], f"{provider_urn}: audiences {clients!r}"
        assert not managed, f"{urn}: managed policies {managed!r}"
        (st,) = statements(trust)
        assert st["Principal"] == {"Federated": provider_arn}, f"{urn}: {st['Principal']!r}"
        assert st["Action"] == "sts:AssumeRoleWithWebIdentity", urn
        assert st["Condition"] == {
            "StringEquals": {
                "token.actions.githubusercontent.com:aud": "sts.amazonaws.com",
                "token.actions.githubusercontent.com:sub": SUBJECT,
            }
        }, f"{urn}: trust condition {st['Condition']!r}"

    return pulumi.Output.all(
        role.urn,
        role.name,
        role.assume_role_policy,
        role.managed_policy_arns,
        provider.urn,
        provider.url,
        provider.client_id_lists,
        provider.arn,
    ).apply(check)


@pulumi.runtime.test
def test_ci_role_reuses_an_existing_provider():
    existing = f"arn:aws:iam::{ACCOUNT}:oidc-provider/token.actions.githubusercontent.com"
    identity = make(
        github_oidc=GithubOidcArgs(
            repository="example-org/tandem", subject=SUBJECT, provider_arn=existing
        )
    )
    assert identity.oidc_provider is None

    def check(values):
        urn, trust = values
        (st,) = statements(trust)
        assert st["Principal"] == {"Federated": existing}, f"{urn}: {st['Principal']!r}"

    return pulumi.Output.all(identity.ci_role.urn, identity.ci_role.assume_role_policy).apply(check)


@pulumi.runtime.test
def test_ci_policy_passes_only_the_sagemaker_role_only_to_sagemaker():
    identity = with_ci()
    pol = identity.ci_policy

    def check(values):
        urn, attached, ci_id, policy, sagemaker_arn = values
        assert attached == ci_id, f"{urn}: attached to {attached!r}"
        doc = json.loads(policy)
        assert_least_privilege(doc, urn)
        passes = [st for st in statements(doc) if "iam:PassRole" in as_list(st["Action"])]
        assert len(passes) == 1, f"{urn}: {len(passes)} PassRole statements"
        (passrole,) = passes
        assert passrole["Resource"] == sagemaker_arn, (
            f"{urn}: PassRole on {passrole['Resource']!r} (CKV_AWS_286)"
        )
        assert passrole["Condition"] == {
            "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
        }, f"{urn}: PassRole condition {passrole.get('Condition')!r}"
        iam_actions = {a for st in statements(doc) for a in as_list(st["Action"]) if "iam:" in a}
        assert iam_actions == {"iam:PassRole"}, f"{urn}: IAM actions {iam_actions}"
        jobs = by_sid(doc, "RunTrainingJobs")
        assert jobs["Resource"] == (
            f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/tandem-dev-*"
        ), f"{urn}: training jobs {jobs['Resource']!r}"
        deploy = by_sid(doc, "DeployToTheFunctionAlias")
        fns = [f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:tandem-dev-{m}-serve" for m in SERVED]
        assert deploy["Resource"] == [a for fn in fns for a in (fn, f"{fn}:*")], (
            f"{urn}: {deploy['Resource']!r}"
        )
        assert "lambda:UpdateFunctionCode" not in deploy["Action"], f"{urn}: may replace code"
        invoke = by_sid(doc, "InvokeTheFunctions")
        assert invoke["Resource"] == [f"{fn}:*" for fn in fns], f"{urn}: {invoke['Resource']!r}"

    return pulumi.Output.all(
        pol.urn, pol.role, identity.ci_role.id, pol.policy, identity.sagemaker_role.arn
    ).apply(check)


REPO = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/tandem-dev-training"
SERVING_REPO = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/tandem-dev-serving"


@pulumi.runtime.test
def test_ci_policy_pushes_the_images_to_the_stack_repositories_only():
    identity = with_ci(
        training_repository_arn=REPO,
        serving_repository_arn=SERVING_REPO,
        ecr_repository_arns=[REPO, SERVING_REPO],
    )

    def check(values):
        urn, ci_policy, sagemaker_policy = values
        doc = json.loads(ci_policy)
        assert_least_privilege(doc, urn)
        push = by_sid(doc, "PushImages")
        assert push["Resource"] == [REPO, SERVING_REPO], f"{urn}: pushes to {push['Resource']!r}"
        assert set(push["Action"]) == {
            "ecr:BatchCheckLayerAvailability",
            "ecr:BatchGetImage",
            "ecr:CompleteLayerUpload",
            "ecr:InitiateLayerUpload",
            "ecr:PutImage",
            "ecr:UploadLayerPart",
        }, f"{urn}: push actions {push['Action']}"
        login = by_sid(doc, "EcrLogin")
        assert (login["Action"], login["Resource"]) == ("ecr:GetAuthorizationToken", "*"), urn
        # and the SageMaker role pulls from the same repositories, nothing more
        pull = by_sid(json.loads(sagemaker_policy), "PullImages")
        assert pull["Resource"] == [REPO, SERVING_REPO], f"pulls from {pull['Resource']!r}"

    return pulumi.Output.all(
        identity.ci_policy.urn, identity.ci_policy.policy, identity.sagemaker_policy.policy
    ).apply(check)


@pulumi.runtime.test
def test_ci_policy_has_no_ecr_access_without_a_repository():
    identity = with_ci()

    def check(values):
        urn, policy = values
        actions = {a for st in statements(policy) for a in as_list(st["Action"])}
        assert not {a for a in actions if a.startswith("ecr:")}, f"{urn}: {sorted(actions)}"

    return pulumi.Output.all(identity.ci_policy.urn, identity.ci_policy.policy).apply(check)


@pulumi.runtime.test
def test_ci_policy_reaches_the_function_environment_key_only_through_lambda():
    identity = with_ci()

    def check(values):
        urn, policy = values
        doc = json.loads(policy)
        via_lambda = by_sid(doc, "UseStackKeyThroughLambda")
        assert set(via_lambda["Action"]) == {"kms:Decrypt", "kms:Encrypt"}, urn
        assert via_lambda["Resource"] == KEY, urn
        assert via_lambda["Condition"] == {
            "StringEquals": {"kms:ViaService": [f"lambda.{REGION}.amazonaws.com"]}
        }, f"{urn}: {via_lambda['Condition']!r}"
        grants = by_sid(doc, "LambdaGrantsOnStackKey")
        assert (grants["Action"], grants["Resource"]) == ("kms:CreateGrant", KEY), urn
        assert grants["Condition"] == {
            "StringEquals": {"kms:ViaService": [f"lambda.{REGION}.amazonaws.com"]},
            "Bool": {"kms:GrantIsForAWSResource": "true"},
        }, f"{urn}: {grants['Condition']!r}"
        for st in statements(doc):
            if any(a.startswith("kms:") for a in as_list(st["Action"])):
                assert st["Resource"] == KEY and "kms:ViaService" in str(st["Condition"]), (
                    f"{urn}/{st['Sid']}: KMS use outside the stack key or not through a service"
                )

    return pulumi.Output.all(identity.ci_policy.urn, identity.ci_policy.policy).apply(check)


@pulumi.runtime.test
def test_ci_policy_reads_and_writes_the_adapters_record_prefixes():
    """`registry/` (version records) and `deployments/` (deployment records) are written by
    the adapter on every register, approve and deploy."""
    identity = with_ci()

    def check(values):
        urn, policy = values
        doc = json.loads(policy)
        for prefix in ("artifacts/", "runs/", "reports/", "registry/", "deployments/"):
            got = actions_on(doc, f"{MODELS}/{prefix}*")
            assert {"s3:GetObject", "s3:PutObject"} <= got, f"{urn}: {prefix} access {got}"
            assert "s3:DeleteObject" not in got, f"{urn}: may delete under {prefix}"
        assert actions_on(doc, f"{MODELS}/captures/*") == {"s3:GetObject"}, urn
        listed = by_sid(doc, "ListModelOutputs")["Condition"]["StringLike"]["s3:prefix"]
        assert {"registry/*", "deployments/*"} <= set(listed), f"{urn}: lists {listed}"

    return pulumi.Output.all(identity.ci_policy.urn, identity.ci_policy.policy).apply(check)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model_package_group_names": []}, "model_package_group_names must name at least one"),
        ({"ci_role_name": "x" * 65}, "longer than 64 characters"),
        ({"models": []}, "models must name at least one model"),
        (
            {
                "github_oidc": GithubOidcArgs(
                    repository="example-org/tandem", subject="repo:other/repo:ref:refs/heads/main"
                )
            },
            "is not a subject of repository",
        ),
        (
            {
                "ci_role_name": "",
                "github_oidc": GithubOidcArgs(
                    repository="o/r", subject="repo:o/r:ref:refs/heads/x"
                ),
            },
            "github_oidc needs ci_role_name",
        ),
    ],
)
def test_bad_arguments_fail_before_any_resource(overrides, message):
    with pytest.raises(ValueError, match=r"^Identity: ") as info:
        make(**overrides)
    assert message in str(info.value)


def test_trust_policy_refuses_a_wildcard_subject():
    with pytest.raises(ValueError, match="must not be a pattern"):
        policies.github_oidc_trust_policy("arn:aws:iam::1:oidc-provider/x", "repo:o/r:*")


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        (
            "arn:aws:sts::123456789012:assumed-role/deployer/session-1",
            [
                "arn:aws:iam::123456789012:role/deployer",
                "arn:aws:iam::123456789012:role/*/deployer",
            ],
        ),
        ("arn:aws:iam::123456789012:user/ci", ["arn:aws:iam::123456789012:user/ci"]),
    ],
)
def test_deployer_is_matched_by_its_role_not_its_session(caller, expected):
    assert policies.principal_arn_of_caller(caller) == expected


@pytest.mark.parametrize(
    ("region", "partition"),
    [("eu-west-1", "aws"), ("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")],
)
def test_partition_follows_the_region(region, partition):
    assert policies.partition_for(region) == partition

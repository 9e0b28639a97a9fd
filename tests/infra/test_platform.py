"""The whole AWS platform under mocks: the stack outputs contract (the ML adapter is
built from these keys alone), and a scan of every IAM policy the platform creates."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import pulumi
import pytest
import yaml

from contract.outputs import AWS
from infra import config
from infra.aws import audit, build_aws_platform, policies
from infra.aws.config import ECR_IMAGE_RE
from infra.aws.names import AwsNames
from tests.infra.conftest import ACCOUNT, REGION, TandemMocks
from tests.infra.policy_checks import (
    as_list,
    assert_least_privilege,
    assert_no_public_allow,
    by_sid,
    statements,
)

ROOT = Path(__file__).resolve().parents[2]


def stack_config(stack: str) -> config.StackConfig:
    raw = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    return config.load(stack, raw)


class Recording(TandemMocks):
    """Keeps the inputs of every resource, to scan what the whole platform creates."""

    def __init__(self) -> None:
        super().__init__()
        self.resources: list[tuple[str, str, dict]] = []

    def new_resource(self, args):
        self.resources.append((args.typ, args.name, dict(args.inputs)))
        return super().new_resource(args)


@pytest.fixture
def recording():
    mocks = Recording()
    pulumi.runtime.set_mocks(mocks, project="tandem", stack="dev", preview=False)
    return mocks


@pulumi.runtime.test
@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_outputs_have_exactly_the_contract_keys(stack, tmp_path):
    cfg = stack_config(stack)
    platform = build_aws_platform(cfg, stack, build_dir=str(tmp_path))
    outputs = platform.outputs()
    names = AwsNames.of(cfg)
    expected = {*AWS.required, *AWS.informational}
    if cfg.aws.mlflow:
        expected.add("mlflow_tracking_server_arn")
    assert set(outputs) == expected, (
        f"{stack}: output keys differ: missing {sorted(expected - set(outputs))}, "
        f"extra {sorted(set(outputs) - expected)}"
    )

    def check(values):
        urn, out = values
        where = f"{urn} ({stack})"
        assert out["cloud"] == "aws", f"{where}: cloud {out['cloud']!r}"
        assert out["stack"] == stack, f"{where}: stack {out['stack']!r}"
        assert out["region"] == cfg.aws.region, f"{where}: region {out['region']!r}"
        assert out["name_prefix"] == cfg.name_prefix, where
        assert out["metric_namespace"] == "Tandem", where
        assert set(out["endpoints"]) == set(cfg.models), f"{where}: {out['endpoints']!r}"
        for model, endpoint in out["endpoints"].items():
            assert endpoint["function_name"] == names.function(model), f"{where}: {endpoint!r}"
            assert endpoint["alias"] == "live", f"{where}: {endpoint!r}"
            assert endpoint["url"].startswith("https://"), f"{where}: {endpoint!r}"
        for kind in ("data", "models", "logs"):
            assert out[f"{kind}_bucket"] == names.bucket(kind, ACCOUNT), (
                f"{where}: {kind}_bucket {out[f'{kind}_bucket']!r}"
            )
        assert out["model_package_groups"] == {
            m: names.model_package_group(m) for m in cfg.models
        }, f"{where}: model_package_groups {out['model_package_groups']!r}"
        assert out["kms_key_arn"].startswith("arn:aws:kms:"), where
        assert out["sagemaker_role_arn"] == (
            f"arn:aws:iam::{ACCOUNT}:role/{names.sagemaker_role}"
        ), f"{where}: sagemaker_role_arn {out['sagemaker_role_arn']!r}"
        assert out["lambda_role_arns"] == {
            m: f"arn:aws:iam::{ACCOUNT}:role/{names.lambda_role(m)}" for m in cfg.models
        }, f"{where}: {out['lambda_role_arns']!r}"
        assert out["lambda_code_key"] == "lambda/tandem-lambda.zip", where
        assert out["alarm_topic_arn"].startswith("arn:aws:sns:"), where
        assert out["alarm_names"] and all(
            isinstance(n, str) and n.startswith(f"{cfg.name_prefix}-") for n in out["alarm_names"]
        ), f"{where}: alarm_names {out['alarm_names']!r}"
        # Tandem's own image, from the stack's repository: an ECR URI the adapter runs with
        # network isolation on (it turns isolation off only for SageMaker's sklearn image).
        repo_url = out["training_image_repository_url"]
        assert repo_url == (
            f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{names.training_repository}"
        ), f"{where}: training_image_repository_url {repo_url!r}"
        assert out["training_image_uri"] == f"{repo_url}:{cfg.aws.training_image_tag}", (
            f"{where}: training_image_uri {out['training_image_uri']!r}"
        )
        assert ECR_IMAGE_RE.fullmatch(out["training_image_uri"]), where
        assert "/sagemaker-scikit-learn:" not in out["training_image_uri"], where
        serving_url = out["serving_image_repository_url"]
        assert serving_url == (
            f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{names.serving_repository}"
        ), f"{where}: serving_image_repository_url {serving_url!r}"
        assert out["serving_image_uri"] == f"{serving_url}:{cfg.aws.serving_image_tag}", where
        if cfg.github_oidc is not None:
            assert out["ci_role_arn"] == f"arn:aws:iam::{ACCOUNT}:role/{names.ci_role}", where
        else:
            assert out["ci_role_arn"] == "", f"{where}: no CI role, yet {out['ci_role_arn']!r}"
        assert out["pseudonym_secret_arn"].startswith(
            f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:"
        ), f"{where}: pseudonym_secret_arn {out['pseudonym_secret_arn']!r}"
        # JSON-serialisable, as `pulumi stack output --json` hands it to the adapter.
        json.dumps(out)

    return pulumi.Output.all(platform.urn, pulumi.Output.all(**outputs)).apply(check)


@pulumi.runtime.test
def test_outputs_are_the_components_own_values(tmp_path):
    cfg = stack_config("prod")
    p = build_aws_platform(cfg, "prod", build_dir=str(tmp_path))
    out = p.outputs()

    def check(values):
        urn, got, expected = values
        for key, value in expected.items():
            assert got[key] == value, (
                f"{urn}: output {key} is {got[key]!r}, component has {value!r}"
            )

    return pulumi.Output.all(
        p.urn,
        pulumi.Output.all(**out),
        pulumi.Output.all(
            kms_key_arn=p.storage.key.arn,
            models_bucket=p.storage.models_bucket.bucket,
            sagemaker_role_arn=p.identity.sagemaker_role.arn,
            ci_role_arn=p.identity.ci_role.arn,
            alarm_topic_arn=p.monitoring.topic.arn,
            endpoints=pulumi.Output.all(
                **{
                    m: pulumi.Output.all(
                        function_name=e.function.name,
                        alias=e.alias.name,
                        url=e.function_url.function_url,
                    )
                    for m, e in p.serving.endpoints.items()
                }
            ),
            mlflow_tracking_server_arn=p.registry.mlflow_server.arn,
            training_image_uri=p.training.image_uri,
            serving_image_uri=p.serving_image.image_uri,
            lambda_code_key=p.serving.code.key,
            training_image_repository_url=p.training.repository.repository_url,
            pseudonym_secret_arn=p.secrets.secret.arn,
        ),
    ).apply(check)


@pulumi.runtime.test
def test_pseudonym_key_is_encrypted_with_the_stack_key_and_usable_by_its_readers(tmp_path):
    """CKV_AWS_149, and the key policy lets the CI role use the key through Secrets Manager
    (its own policy allows only that secret); the deployer, who initialises it on a stack
    without CI, too, through Secrets Manager only."""
    cfg = stack_config("prod")
    p = build_aws_platform(cfg, "prod", build_dir=str(tmp_path))

    def check(values):
        urn, secret_key, key_arn, policy, ci_role = values
        assert secret_key == key_arn, f"{urn}: secret encrypted with {secret_key!r}"
        use = by_sid(policy, "KeyUseByStackRoles")
        users = use["Condition"]["ArnEquals"]["aws:PrincipalArn"]
        assert ci_role in users, f"{urn}: key users {users!r}"
        assert {"kms:Decrypt", "kms:GenerateDataKey*"} <= set(use["Action"]), urn
        assert "kms:ViaService" not in json.dumps(use.get("Condition", {})), (
            f"{urn}: the stack roles' use of the key is limited by their own policies"
        )
        deployer = by_sid(policy, "DeployerCreatesEncryptedResources")
        services = deployer["Condition"]["StringEquals"]["kms:ViaService"]
        assert f"secretsmanager.{cfg.aws.region}.amazonaws.com" in services, (
            f"{urn}: deployer services {services!r}"
        )

    return pulumi.Output.all(
        p.secrets.secret.urn,
        p.secrets.secret.kms_key_id,
        p.storage.key.arn,
        p.storage.key.policy,
        p.identity.ci_role.arn,
    ).apply(check)


@pulumi.runtime.test
def test_sagemaker_pulls_from_and_ci_pushes_to_the_stack_repositories_only(tmp_path):
    cfg = stack_config("prod")
    p = build_aws_platform(cfg, "prod", build_dir=str(tmp_path))

    def check(values):
        urn, repo_arn, serving_arn, sagemaker_policy, ci_policy = values
        names = AwsNames.of(cfg)
        assert repo_arn == (
            f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{names.training_repository}"
        ), f"{urn}: repository {repo_arn!r}"
        assert serving_arn == (
            f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{names.serving_repository}"
        ), f"{urn}: repository {serving_arn!r}"
        pull = by_sid(sagemaker_policy, "PullImages")
        assert pull["Resource"] == [repo_arn, serving_arn], f"{urn}: pulls {pull['Resource']}"
        assert set(pull["Action"]) == {
            "ecr:BatchCheckLayerAvailability",
            "ecr:BatchGetImage",
            "ecr:GetDownloadUrlForLayer",
        }, f"{urn}: pull actions {pull['Action']}"
        push = by_sid(ci_policy, "PushImages")
        assert push["Resource"] == [repo_arn, serving_arn], f"{urn}: pushes {push['Resource']!r}"
        assert "ecr:PutImage" in push["Action"], urn
        for doc in (sagemaker_policy, ci_policy):
            ecr = [
                (a, r)
                for st in statements(doc)
                for a in as_list(st["Action"])
                if a.startswith("ecr:")
                for r in as_list(st["Resource"])
            ]
            # the login is the only ECR action on "*" (it supports no resource scoping)
            assert {a for a, r in ecr if r == "*"} == {"ecr:GetAuthorizationToken"}, (urn, ecr)
            assert {r for a, r in ecr} == {repo_arn, serving_arn, "*"}, (urn, ecr)
        sagemaker_actions = {
            a for st in statements(sagemaker_policy) for a in as_list(st["Action"])
        }
        assert not sagemaker_actions & {"ecr:PutImage", "ecr:InitiateLayerUpload"}, (
            f"{urn}: the SageMaker role may push images"
        )

    return pulumi.Output.all(
        p.urn,
        p.training.repository.arn,
        p.serving_image.repository.arn,
        p.identity.sagemaker_policy.policy,
        p.identity.ci_policy.policy,
    ).apply(check)


@pulumi.runtime.test
def test_training_image_override_is_exported_and_pulled_but_the_repository_stays(tmp_path):
    raw = yaml.safe_load((ROOT / "Pulumi.staging.yaml").read_text())["config"]
    shared = "210987654321.dkr.ecr.us-east-1.amazonaws.com/shared/tandem-training:2.0.1"
    cfg = config.load(
        "staging", {**raw, "tandem:aws": {**raw["tandem:aws"], "training_image_uri": shared}}
    )
    p = build_aws_platform(cfg, "staging", build_dir=str(tmp_path))
    outputs = p.outputs()

    def check(values):
        urn, out, repo_arn, serving_arn, sagemaker_policy, ci_policy = values
        assert out["training_image_uri"] == shared, f"{urn}: {out['training_image_uri']!r}"
        assert out["training_image_repository_url"].endswith("/tandem-staging-training"), urn
        pull = by_sid(sagemaker_policy, "PullImages")
        assert pull["Resource"] == [
            "arn:aws:ecr:us-east-1:210987654321:repository/shared/tandem-training",
            serving_arn,
        ], f"{urn}: SageMaker pulls from {pull['Resource']}"
        assert by_sid(ci_policy, "PushImages")["Resource"] == [repo_arn, serving_arn], urn

    return pulumi.Output.all(
        p.urn,
        pulumi.Output.all(**outputs),
        p.training.repository.arn,
        p.serving_image.repository.arn,
        p.identity.sagemaker_policy.policy,
        p.identity.ci_policy.policy,
    ).apply(check)


@pulumi.runtime.test
def test_key_policy_lets_the_deployer_encrypt_the_repository_through_ecr_only(tmp_path):
    cfg = stack_config("dev")
    p = build_aws_platform(cfg, "dev", build_dir=str(tmp_path))

    def check(values):
        urn, policy, kms_key, repo_key = values
        deployer = by_sid(policy, "DeployerCreatesEncryptedResources")
        services = deployer["Condition"]["StringEquals"]["kms:ViaService"]
        assert f"ecr.{cfg.aws.region}.amazonaws.com" in services, (
            f"{urn}: ECR cannot create its grants for the deployer: {services}"
        )
        assert {"kms:CreateGrant", "kms:RetireGrant"} <= set(deployer["Action"]), urn
        assert repo_key == kms_key, f"{urn}: repository encrypted with {repo_key!r}"

    return pulumi.Output.all(
        p.storage.key.urn,
        p.storage.key.policy,
        p.storage.key.arn,
        p.training.repository.encryption_configurations[0].kms_key,
    ).apply(check)


@pulumi.runtime.test
def test_key_policy_admits_exactly_the_stack_roles(tmp_path):
    cfg = stack_config("prod")
    p = build_aws_platform(cfg, "prod", build_dir=str(tmp_path))

    def check(values):
        urn, policy, *roles = values
        use = by_sid(policy, "KeyUseByStackRoles")
        assert sorted(use["Condition"]["ArnEquals"]["aws:PrincipalArn"]) == sorted(roles), (
            f"{urn}: key users {use['Condition']!r}, stack roles {roles!r}"
        )
        assert_no_public_allow(policy, urn)

    return pulumi.Output.all(
        p.storage.key.urn,
        p.storage.key.policy,
        p.identity.sagemaker_role.arn,
        *(role.arn for role in p.identity.lambda_roles.values()),
        p.identity.ci_role.arn,
    ).apply(check)


@pulumi.runtime.test
def test_logs_bucket_policy_lets_the_trail_deliver(tmp_path):
    cfg = stack_config("dev")
    p = build_aws_platform(cfg, "dev", build_dir=str(tmp_path))

    def check(values):
        urn, policy, trail_arn, prefix = values
        write = by_sid(policy, "CloudTrailWrite")
        assert write["Condition"]["StringEquals"]["aws:SourceArn"] == trail_arn, (
            f"{urn}: CloudTrail write statement names {write['Condition']!r}, trail {trail_arn}"
        )
        assert f"/{prefix}/AWSLogs/{ACCOUNT}/" in write["Resource"], f"{urn}: {write!r}"

    return pulumi.Output.all(
        p.storage.policies["logs"].urn,
        p.storage.policies["logs"].policy,
        audit.trail_arn(cfg.name_prefix, ACCOUNT, cfg.aws.region),
        p.audit.trail.s3_key_prefix,
    ).apply(check)


@pulumi.runtime.test
def test_roles_and_key_name_the_log_groups_the_components_create(tmp_path):
    """Identity and the key policy name log groups before they exist; the names must be
    the ones Serving and Audit then create."""
    cfg = stack_config("dev")
    p = build_aws_platform(cfg, "dev", build_dir=str(tmp_path))

    models = list(cfg.models)

    def check(values):
        urn, key_policy, audit_group, *pairs = values
        patterns = by_sid(key_policy, "CloudWatchLogsForThisAccount")["Condition"]["ArnLike"][
            "kms:EncryptionContext:aws:logs:arn"
        ]
        groups = [audit_group]
        for model, (lambda_policy, serving_group) in zip(
            models, zip(*[iter(pairs)] * 2, strict=True), strict=True
        ):
            logs = by_sid(lambda_policy, "WriteOwnLogs")
            assert logs["Resource"] == f"{serving_group}:*", (
                f"{urn}: {model}'s role writes {logs['Resource']!r}, its function logs to "
                f"{serving_group}"
            )
            groups.append(serving_group)
        for group in groups:
            assert any(fnmatch.fnmatchcase(group, pat) for pat in patterns), (
                f"{urn}: key policy lets CloudWatch Logs encrypt {patterns}, not {group}"
            )

    return pulumi.Output.all(
        p.urn,
        p.storage.key.policy,
        p.audit.log_group.arn,
        *(
            v
            for m in models
            for v in (p.identity.lambda_policies[m].policy, p.serving.endpoints[m].log_group.arn)
        ),
    ).apply(check)


@pulumi.runtime.test
def test_every_iam_policy_in_the_platform_is_least_privilege(recording, tmp_path):
    cfg = stack_config("prod")
    p = build_aws_platform(cfg, "prod", build_dir=str(tmp_path))

    def check(_):
        role_policies = [r for r in recording.resources if r[0] == "aws:iam/rolePolicy:RolePolicy"]
        roles = [r for r in recording.resources if r[0] == "aws:iam/role:Role"]
        assert len(role_policies) >= 3 and len(roles) >= 3, (
            f"expected the platform's roles and policies, saw {len(roles)} and {len(role_policies)}"
        )
        for _typ, name, inputs in role_policies:
            assert_least_privilege(inputs["policy"], f"RolePolicy {name}")
        for _typ, name, inputs in roles:
            assert not inputs.get("managedPolicyArns"), f"Role {name}: managed policies"
            (st,) = statements(inputs["assumeRolePolicy"])
            principal = st["Principal"]
            assert len(principal) == 1 and len(as_list(next(iter(principal.values())))) == 1, (
                f"Role {name}: trust names {principal!r}, not exactly one principal"
            )
            assert "*" not in json.dumps(principal), f"Role {name}: wildcard principal"
        for typ, name, inputs in recording.resources:
            assert "policyArn" not in inputs or "FullAccess" not in inputs["policyArn"], (
                f"{typ} {name}: {inputs['policyArn']}"
            )
        # The image repositories have no resource policy at all (CKV_AWS_32).
        ecr = [r for r in recording.resources if r[0].startswith("aws:ecr/")]
        assert sorted(r[0] for r in ecr) == [
            "aws:ecr/lifecyclePolicy:LifecyclePolicy",
            "aws:ecr/lifecyclePolicy:LifecyclePolicy",
            "aws:ecr/repository:Repository",
            "aws:ecr/repository:Repository",
        ], f"ECR resources: {sorted(r[0] for r in ecr)}"
        bucket_policies = [
            r for r in recording.resources if r[0] == "aws:s3/bucketPolicy:BucketPolicy"
        ]
        assert len(bucket_policies) == 3, f"{len(bucket_policies)} bucket policies"
        for _typ, name, inputs in bucket_policies:
            assert_no_public_allow(inputs["policy"], f"BucketPolicy {name}")

    # Wait for every policy of the platform to be resolved before scanning.
    return pulumi.Output.all(
        p.urn,
        p.identity.ci_policy.policy,
        p.identity.sagemaker_policy.policy,
        *(pol.policy for pol in p.identity.lambda_policies.values()),
        p.audit.logs_role_policy.policy,
        *(pol.policy for pol in p.storage.policies.values()),
    ).apply(check)


def _mlflow_grants(policy: str) -> dict[str, set[str]]:
    """{resource: sagemaker-mlflow actions granted on it} of one policy document."""
    found: dict[str, set[str]] = {}
    for st in statements(policy):
        actions = {a for a in as_list(st["Action"]) if a.startswith("sagemaker-mlflow:")}
        for resource in as_list(st["Resource"]) if actions else ():
            found.setdefault(resource, set()).update(actions)
    return found


@pulumi.runtime.test
def test_the_job_and_ci_roles_use_exactly_the_stacks_tracking_server(tmp_path):
    """prod has `tandem:aws.mlflow: true`: both roles get the mirror's actions, on the one
    tracking server the stack creates (its name, the stack's region and account)."""
    cfg = stack_config("prod")
    p = build_aws_platform(cfg, "prod", build_dir=str(tmp_path))

    def check(values):
        urn, server_name, job_policy, ci_policy = values
        arn = f"arn:aws:sagemaker:{cfg.aws.region}:{ACCOUNT}:mlflow-tracking-server/{server_name}"
        for role, policy in (("job", job_policy), ("ci", ci_policy)):
            grants = _mlflow_grants(policy)
            assert grants == {arn: set(policies.MIRROR_ACTIONS)}, f"{urn}: {role} role {grants}"

    return pulumi.Output.all(
        p.registry.mlflow_server.urn,
        p.registry.mlflow_server.tracking_server_name,
        p.identity.sagemaker_policy.policy,
        p.identity.ci_policy.policy,
    ).apply(check)


@pulumi.runtime.test
def test_no_tracking_server_no_mlflow_actions(tmp_path):
    raw = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]
    raw["tandem:aws"] = {**raw["tandem:aws"], "mlflow": False}
    p = build_aws_platform(config.load("prod", raw), "prod", build_dir=str(tmp_path))
    assert p.registry.mlflow_server is None

    def check(values):
        urn, job_policy, ci_policy = values
        for role, policy in (("job", job_policy), ("ci", ci_policy)):
            assert _mlflow_grants(policy) == {}, f"{urn}: {role} role without a server"
            assert "mlflow" not in json.dumps(policy), f"{urn}: {role} role reaches mlflow/"

    return pulumi.Output.all(
        p.identity.urn, p.identity.sagemaker_policy.policy, p.identity.ci_policy.policy
    ).apply(check)

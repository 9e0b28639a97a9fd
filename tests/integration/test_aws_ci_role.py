"""The CI role may do everything a deploy does, on this stack only: proven from the calls
the adapter really makes.

A whole deploy runs through `ml.lifecycle` against a stack in moto (train with the
training image's entry point, evaluate, register, approve, deploy, a second version
against the champion, rollback; plus the report and the metrics CI writes). Every AWS
call the adapter's clients make is recorded, turned into the IAM requests AWS would
authorize for it (action, resource ARN, request context; KMS use through S3 and Lambda
included), and each request is decided against `policies.ci_deploy_policy` (the document
the Pulumi program attaches to the CI role) by the strict evaluator in
`tests/integration/iam_eval.py`. A call the table below cannot translate fails the test:
a new call in the adapter must be added here, and so checked against the policy.

moto enforces IAM for S3 only, and checks other services' actions against resource "*",
which ARN-scoped statements never match (see test_aws_least_privilege.py); the evaluator
decides those. The S3 writes themselves are also run as the CI role under moto's
enforcement in test_aws_least_privilege.py.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from infra.aws import policies
from ml import lifecycle
from ml.clouds import connect
from ml.clouds.base import MetricPoint, Stack
from ml.spec import load_spec
from tests.conftest import write_spec
from tests.integration.aws_fixtures import (
    ACCOUNT,
    REGION,
    FakeTrainingContainer,
    client,
    create_stack,
    fake_credentials,
    moto_backend,
)
from tests.integration.iam_eval import ALLOW, evaluate

SMALL_MODEL = {"kind": "gradient_boosting", "params": {"n_estimators": 20, "max_depth": 2}}
Request = tuple[str, str, dict[str, str]]  # (action, resource, request context)


def via(service: str) -> dict[str, str]:
    return {"kms:ViaService": f"{service}.{REGION}.amazonaws.com"}


class Recorder:
    """Every operation a boto3 client is asked to make, with its parameters."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def attach(self, aws_client: Any) -> None:
        service = aws_client.meta.service_model.service_name
        aws_client.meta.events.register(
            "before-parameter-build.*.*",
            lambda params, model, **_: self.calls.append(
                (
                    service,
                    model.name,
                    {k: copy.deepcopy(v) for k, v in params.items() if k != "Body"},
                )
            ),
        )


class Translator:
    """What IAM authorizes for one call of the adapter, on the stack described by `outputs`.

    Sources: the Service Authorization Reference (actions and resource types of S3,
    SageMaker, Lambda, CloudWatch), the S3 API reference (HeadObject is s3:GetObject; a
    missing key answers 404 only to a caller that may list it, otherwise 403, and the
    adapter relies on 404, so every read of a key also needs s3:ListBucket with that key
    as s3:prefix), S3's SSE-KMS (writes generate a data key, reads decrypt, through S3),
    and Lambda's environment encryption with a customer-managed key (the caller encrypts a
    new environment and creates Lambda's grant, and decrypts to read it, through Lambda:
    https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars-encryption.html).
    """

    def __init__(self, outputs: dict[str, Any], key_arn: str) -> None:
        self.outputs = outputs
        self.key = key_arn
        function = outputs["endpoints"]["credit"]["function_name"]  # the model a deploy moves
        self.function = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}"

    def __call__(self, service: str, operation: str, p: dict[str, Any]) -> list[Request]:
        method = getattr(self, f"_{service}_{operation}", None)
        if method is None:
            raise LookupError(
                f"{service}:{operation} is not translated to IAM requests: add it to "
                "Translator so the CI policy is checked for it"
            )
        return method(p)

    # s3
    def _object(self, p: dict[str, Any]) -> str:
        return f"arn:aws:s3:::{p['Bucket']}/{p['Key']}"

    def _read(self, p: dict[str, Any], decrypt: bool) -> list[Request]:
        found_or_404 = ("s3:ListBucket", f"arn:aws:s3:::{p['Bucket']}", {"s3:prefix": p["Key"]})
        requests = [("s3:GetObject", self._object(p), {}), found_or_404]
        if decrypt:
            requests.append(("kms:Decrypt", self.key, via("s3")))
        return requests

    def _write(self, p: dict[str, Any]) -> list[Request]:
        requests: list[Request] = [("s3:PutObject", self._object(p), {})]
        if p.get("ServerSideEncryption") == "aws:kms":
            requests.append(("kms:GenerateDataKey", p.get("SSEKMSKeyId", self.key), via("s3")))
        return requests

    def _s3_PutObject(self, p):
        return self._write(p)

    def _s3_CreateMultipartUpload(self, p):
        return self._write(p)

    def _s3_UploadPart(self, p):
        return [("s3:PutObject", self._object(p), {})]

    def _s3_CompleteMultipartUpload(self, p):
        # completing an SSE-KMS upload decrypts the upload's data key
        return [("s3:PutObject", self._object(p), {}), ("kms:Decrypt", self.key, via("s3"))]

    def _s3_AbortMultipartUpload(self, p):
        return [("s3:AbortMultipartUpload", self._object(p), {})]

    def _s3_DeleteObject(self, p):  # only a deploy's own lease (ml/clouds/aws/locks.py)
        return [("s3:DeleteObject", self._object(p), {})]

    def _s3_GetObject(self, p):
        return self._read(p, decrypt=True)

    def _s3_HeadObject(self, p):
        return self._read(p, decrypt=False)

    def _s3_ListObjectsV2(self, p):
        return [("s3:ListBucket", f"arn:aws:s3:::{p['Bucket']}", {"s3:prefix": p["Prefix"]})]

    # sagemaker
    def _arn(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{name}"

    def _sagemaker_CreateTrainingJob(self, p):
        job = self._arn("training-job", p["TrainingJobName"])
        requests: list[Request] = [
            ("sagemaker:CreateTrainingJob", job, {}),
            ("iam:PassRole", p["RoleArn"], {"iam:PassedToService": "sagemaker.amazonaws.com"}),
        ]
        if p.get("Tags"):
            requests.append(("sagemaker:AddTags", job, {}))
        return requests

    def _sagemaker_DescribeTrainingJob(self, p):
        return [
            ("sagemaker:DescribeTrainingJob", self._arn("training-job", p["TrainingJobName"]), {})
        ]

    def _sagemaker_CreateModelPackage(self, p):
        group = self._arn("model-package-group", p["ModelPackageGroupName"])
        return [("sagemaker:CreateModelPackage", group, {})]

    def _sagemaker_DescribeModelPackage(self, p):
        return [("sagemaker:DescribeModelPackage", p["ModelPackageName"], {})]

    def _sagemaker_DescribeModelPackageGroup(self, p):
        group = self._arn("model-package-group", p["ModelPackageGroupName"])
        return [("sagemaker:DescribeModelPackageGroup", group, {})]

    def _sagemaker_UpdateModelPackage(self, p):
        return [("sagemaker:UpdateModelPackage", p["ModelPackageArn"], {})]

    def _sagemaker_ListModelPackages(self, p):
        return [("sagemaker:ListModelPackages", "*", {})]  # no resource-level permissions

    # lambda (the function's environment is encrypted with the stack key)
    def _fn(self, p: dict[str, Any], qualifier: str | None = None) -> str:
        assert p["FunctionName"] == self.outputs["endpoints"]["credit"]["function_name"], p
        qualifier = qualifier or p.get("Qualifier")
        return f"{self.function}:{qualifier}" if qualifier else self.function

    def _lambda_Invoke(self, p):
        # the smoke request: the alias, or a published version pinned by number
        return [("lambda:InvokeFunction", self._fn(p), {})]

    def _lambda_GetAlias(self, p):
        return [("lambda:GetAlias", self._fn(p, p["Name"]), {})]

    def _lambda_UpdateAlias(self, p):
        return [("lambda:UpdateAlias", self._fn(p, p["Name"]), {})]

    def _lambda_GetFunctionConfiguration(self, p):
        return [
            ("lambda:GetFunctionConfiguration", self._fn(p), {}),
            ("kms:Decrypt", self.key, via("lambda")),
        ]

    def _lambda_ListVersionsByFunction(self, p):
        # the adapter reads each version's MODEL_URI from its (encrypted) environment
        return [
            ("lambda:ListVersionsByFunction", self._fn(p), {}),
            ("kms:Decrypt", self.key, via("lambda")),
        ]

    def _lambda_UpdateFunctionConfiguration(self, p):
        requests: list[Request] = [("lambda:UpdateFunctionConfiguration", self._fn(p), {})]
        if "Environment" in p:
            requests += [
                ("kms:Encrypt", self.key, via("lambda")),
                (
                    "kms:CreateGrant",
                    self.key,
                    {**via("lambda"), "kms:GrantIsForAWSResource": "true"},
                ),
            ]
        return requests

    def _lambda_PublishVersion(self, p):
        return [("lambda:PublishVersion", self._fn(p), {})]

    # cloudwatch
    def _cloudwatch_PutMetricData(self, p):
        return [("cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": p["Namespace"]})]

    # secretsmanager (the pseudonym key, encrypted with the stack key: reading a value
    # decrypts it, writing one generates a data key, both through Secrets Manager)
    # https://docs.aws.amazon.com/secretsmanager/latest/userguide/security-encryption.html
    def _secret(self, p: dict[str, Any]) -> str:
        secret = p["SecretId"]
        if not secret.startswith("arn:"):
            assert secret == f"{self.outputs['name_prefix']}/pseudonym-key", p
            secret = self.outputs["pseudonym_secret_arn"]
        return secret

    def _secretsmanager_DescribeSecret(self, p):
        return [("secretsmanager:DescribeSecret", self._secret(p), {})]

    def _secretsmanager_GetSecretValue(self, p):
        return [
            ("secretsmanager:GetSecretValue", self._secret(p), {}),
            ("kms:Decrypt", self.key, via("secretsmanager")),
        ]

    def _secretsmanager_PutSecretValue(self, p):
        return [
            ("secretsmanager:PutSecretValue", self._secret(p), {}),
            ("kms:GenerateDataKey", self.key, via("secretsmanager")),
        ]


def ci_steps_outside_the_adapter(outputs: dict[str, Any]) -> list[Request]:
    """What the pipeline does besides the lifecycle: push the training image it built, and
    smoke-test the deployed model through the IAM Function URL of the `live` alias
    (https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html)."""
    repository = policies.ecr_repository_arn(REGION, ACCOUNT, f"{outputs['name_prefix']}-training")
    function = outputs["endpoints"]["credit"]["function_name"]
    live = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function}:live"
    return [
        ("ecr:GetAuthorizationToken", "*", {}),
        *((action, repository, {}) for action in policies.ECR_PUSH_ACTIONS),
        ("lambda:InvokeFunctionUrl", live, {"lambda:FunctionUrlAuthType": "AWS_IAM"}),
        ("lambda:InvokeFunction", live, {}),
    ]


def pseudonym_key_initialisation(outputs: dict[str, Any]) -> list[tuple[str, str, dict]]:
    """The calls that set up the pseudonym key once (by secret ARN, as the outputs give
    it): look, write the value under a fixed ClientRequestToken, read it back."""
    secret = outputs["pseudonym_secret_arn"]
    return [
        ("secretsmanager", "DescribeSecret", {"SecretId": secret}),
        (
            "secretsmanager",
            "PutSecretValue",
            {"SecretId": secret, "ClientRequestToken": "0" * 32, "SecretBinary": "<32 bytes>"},
        ),
        ("secretsmanager", "GetSecretValue", {"SecretId": secret}),
    ]


def ci_policy(outputs: dict[str, Any], group_arns: list[str]) -> dict:
    """The CI role's document, as infra/aws/identity.py fills it for this stack."""
    return policies.ci_deploy_policy(
        region=REGION,
        account_id=ACCOUNT,
        data_bucket=policies.bucket_arn(outputs["data_bucket"]),
        models_bucket=policies.bucket_arn(outputs["models_bucket"]),
        kms_key_arn=outputs["kms_key_arn"],
        sagemaker_role_arn=outputs["sagemaker_role_arn"],
        model_package_group_arns=group_arns,
        function_names=[e["function_name"] for e in outputs["endpoints"].values()],
        name_prefix=outputs["name_prefix"],
        pseudonym_secret_arn=outputs["pseudonym_secret_arn"],
        training_repository_arn=policies.ecr_repository_arn(
            REGION, ACCOUNT, f"{outputs['name_prefix']}-training"
        ),
        serving_repository_arn=policies.ecr_repository_arn(
            REGION, ACCOUNT, f"{outputs['name_prefix']}-serving"
        ),
    )


@pytest.fixture(scope="module")
def deploy_trace(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """One deploy's worth of adapter calls on the `dev` stack (and a `staging` stack that
    stands for "another stack")."""
    tmp = tmp_path_factory.mktemp("ci-role")
    monkeypatch = pytest.MonkeyPatch()
    fake_credentials(monkeypatch, tmp)
    monkeypatch.setenv("TANDEM_CODE_VERSION", "test-code-1")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    try:
        with moto_backend("in-process"):
            outputs = create_stack("dev")
            other = create_stack("staging")
            stack: Stack = connect("aws", outputs)
            stack.jobs.after_submit = FakeTrainingContainer()
            recorder = Recorder()
            for aws_client in {
                id(c): c
                for c in (
                    stack.store.s3,
                    stack.registry.sagemaker,
                    stack.jobs.sagemaker,
                    stack.endpoint.client,
                    stack.metrics.cloudwatch,
                )
            }.values():
                recorder.attach(aws_client)

            spec = write_spec(tmp, estimator=SMALL_MODEL)
            first = lifecycle.pipeline(stack, load_spec(spec))
            second = lifecycle.pipeline(stack, load_spec(spec))  # scored against the champion
            lifecycle.rollback(stack, "credit", "smoke test failed")
            # what the CLI adds around the lifecycle: the report and the run's metrics
            stack.store.put_bytes(f"reports/credit/{second.outcome.run_id}.html", b"<html/>")
            stack.metrics.emit(
                [MetricPoint("model_quality", 0.9, dimensions={"Model": "credit", "Version": "2"})]
            )
            assert (first.version.version, second.version.version) == (1, 2)

            sagemaker = client("sagemaker")
            groups = {
                name: sagemaker.describe_model_package_group(
                    ModelPackageGroupName=out["model_package_groups"]["credit"]
                )["ModelPackageGroupArn"]
                for name, out in (("dev", outputs), ("other", other))
            }
            yield {
                "outputs": outputs,
                "other": other,
                "calls": recorder.calls,
                "group_arns": groups,
            }
    finally:
        monkeypatch.undo()


def requests_of(trace: dict[str, Any]) -> list[tuple[str, str, Request]]:
    """The trace's requests, and the pseudonym key's set-up (until the adapter's own calls
    for it are in the trace, its calls as the ML side makes them)."""
    translate = Translator(trace["outputs"], trace["outputs"]["kms_key_arn"])
    calls = list(trace["calls"])
    if not any(service == "secretsmanager" for service, _op, _p in calls):
        calls += pseudonym_key_initialisation(trace["outputs"])
    found = []
    for service, operation, params in calls:
        for request in translate(service, operation, params):
            found.append((f"{service}:{operation}", json.dumps(params, default=str)[:200], request))
    return found


def test_every_request_of_a_deploy_is_allowed_by_the_ci_policy(deploy_trace):
    doc = ci_policy(deploy_trace["outputs"], [deploy_trace["group_arns"]["dev"]])
    requests = requests_of(deploy_trace)
    requests += [("ci step", "", r) for r in ci_steps_outside_the_adapter(deploy_trace["outputs"])]
    denied = sorted(
        {
            f"{action} on {resource} {context or ''} (from {call})"
            for call, _params, (action, resource, context) in requests
            if evaluate([doc], action, resource, context) != ALLOW
        }
    )
    assert not denied, "the CI policy denies what a deploy does:\n" + "\n".join(denied)


def test_the_trace_covers_every_write_and_service_of_a_deploy(deploy_trace):
    """The trace is a deploy, not a fragment: if the adapter stopped making one of these
    calls, the check above would prove less than it claims."""
    requests = [r for _call, _params, r in requests_of(deploy_trace)]
    models = deploy_trace["outputs"]["models_bucket"]
    data = deploy_trace["outputs"]["data_bucket"]
    written = {r.split(":::", 1)[1] for a, r, _c in requests if a == "s3:PutObject"}
    for prefix in (
        f"{data}/datasets/credit/",
        f"{models}/artifacts/credit/",
        f"{models}/runs/credit/",
        f"{models}/reports/credit/",
        f"{models}/registry/credit/v",
        f"{models}/deployments/credit/",
    ):
        assert any(key.startswith(prefix) for key in written), f"nothing written to {prefix}"
    actions = {a for a, _r, _c in requests}
    assert {
        "sagemaker:CreateTrainingJob",
        "iam:PassRole",
        "sagemaker:CreateModelPackage",
        "sagemaker:UpdateModelPackage",
        "sagemaker:ListModelPackages",
        "lambda:UpdateFunctionConfiguration",
        "lambda:PublishVersion",
        "lambda:UpdateAlias",
        "kms:Encrypt",
        "kms:CreateGrant",
        "kms:GenerateDataKey",
        "cloudwatch:PutMetricData",
        "secretsmanager:PutSecretValue",
        "secretsmanager:GetSecretValue",
    } <= actions, f"missing from the trace: {sorted(actions)}"


def test_the_trace_would_have_caught_the_missing_record_prefixes(deploy_trace):
    """The policy as it was (models bucket: artifacts/, runs/, reports/ only) denies the
    version and deployment records the adapter writes."""
    doc = ci_policy(deploy_trace["outputs"], [deploy_trace["group_arns"]["dev"]])
    for statement in doc["Statement"]:
        if statement["Sid"] == "ReadWriteModelOutputs":
            statement["Resource"] = [
                r
                for r in statement["Resource"]
                if "/registry/" not in r and "/deployments/" not in r
            ]
    denied = [
        resource.split(":::", 1)[1]
        for _call, _params, (action, resource, context) in requests_of(deploy_trace)
        if action == "s3:PutObject" and evaluate([doc], action, resource, context) != ALLOW
    ]
    models = deploy_trace["outputs"]["models_bucket"]
    for prefix in (f"{models}/registry/credit/", f"{models}/deployments/credit/"):
        assert any(key.startswith(prefix) for key in denied), (prefix, denied)


def _retarget(request: Request, old: str, new: str) -> Request:
    action, resource, context = request
    return action, resource.replace(old, new), context


def test_the_same_requests_on_another_stack_are_denied(deploy_trace):
    """Every request of the deploy, pointed at another stack's bucket, group, function,
    repository and key: none is allowed (requests on '*' aside, which no stack owns)."""
    dev, other = deploy_trace["outputs"], deploy_trace["other"]
    doc = ci_policy(dev, [deploy_trace["group_arns"]["dev"]])
    swaps = [
        (dev["models_bucket"], other["models_bucket"]),
        (dev["data_bucket"], other["data_bucket"]),
        (dev["kms_key_arn"], other["kms_key_arn"]),
        (deploy_trace["group_arns"]["dev"], deploy_trace["group_arns"]["other"]),
        (
            dev["model_package_groups"]["credit"],
            other["model_package_groups"]["credit"],
        ),
        (
            f"function:{dev['endpoints']['credit']['function_name']}",
            f"function:{other['endpoints']['credit']['function_name']}",
        ),
        (f"training-job/{dev['name_prefix']}-", f"training-job/{other['name_prefix']}-"),
        (f"repository/{dev['name_prefix']}-", f"repository/{other['name_prefix']}-"),
        (dev["sagemaker_role_arn"], other["sagemaker_role_arn"]),
        (dev["pseudonym_secret_arn"], other["pseudonym_secret_arn"]),
    ]
    requests = [r for _c, _p, r in requests_of(deploy_trace)]
    requests += ci_steps_outside_the_adapter(dev)
    allowed = []
    for request in requests:
        if request[1] == "*":
            continue
        moved = request
        for old, new in swaps:
            moved = _retarget(moved, old, new)
        assert moved[1] != request[1], f"no other-stack version of {request}"
        if evaluate([doc], *moved) == ALLOW:
            allowed.append(moved)
    assert not allowed, "the CI policy reaches another stack:\n" + "\n".join(map(str, allowed))


@pytest.mark.parametrize(
    ("what", "action", "resource", "context"),
    [
        ("write outside the prefixes", "s3:PutObject", "models:elsewhere/credit/x.json", {}),
        ("overwrite a capture", "s3:PutObject", "models:captures/credit/x.json", {}),
        ("delete an artifact", "s3:DeleteObject", "models:artifacts/credit/r/model.onnx", {}),
        ("delete a version record", "s3:DeleteObject", "models:registry/credit/v1.json", {}),
        ("list the whole bucket", "s3:ListBucket", "models", {"s3:prefix": ""}),
        ("use the key directly", "kms:Decrypt", "key", {}),
        ("use the key via SNS", "kms:Decrypt", "key", via("sns")),
        ("replace the function's code", "lambda:UpdateFunctionCode", "function", {}),
        ("open the function to the public", "lambda:AddPermission", "function", {}),
        ("a public URL", "lambda:InvokeFunctionUrl", "function:live",
         {"lambda:FunctionUrlAuthType": "NONE"}),
        ("pass the role to Lambda", "iam:PassRole", "role",
         {"iam:PassedToService": "lambda.amazonaws.com"}),
        ("delete a model package group", "sagemaker:DeleteModelPackageGroup", "group", {}),
        ("delete an image", "ecr:BatchDeleteImage", "repository", {}),
        ("delete the pseudonym key", "secretsmanager:DeleteSecret", "secret", {}),
        ("rotate the pseudonym key", "secretsmanager:RotateSecret", "secret", {}),
        ("open the pseudonym key to others", "secretsmanager:PutResourcePolicy", "secret", {}),
        ("use the key via Secrets Manager directly", "kms:Encrypt", "key",
         via("secretsmanager")),
    ],
)  # fmt: skip
def test_what_a_deploy_never_needs_is_denied(deploy_trace, what, action, resource, context):
    dev = deploy_trace["outputs"]
    function = (
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{dev['endpoints']['credit']['function_name']}"
    )
    arns = {
        "models": f"arn:aws:s3:::{dev['models_bucket']}",
        "key": dev["kms_key_arn"],
        "function": function,
        "role": dev["sagemaker_role_arn"],
        "group": deploy_trace["group_arns"]["dev"],
        "repository": policies.ecr_repository_arn(
            REGION, ACCOUNT, f"{dev['name_prefix']}-training"
        ),
        "secret": dev["pseudonym_secret_arn"],
    }
    head, _, rest = resource.partition(":")
    arn = arns[head] + (f"/{rest}" if head == "models" and rest else f":{rest}" if rest else "")
    doc = ci_policy(dev, [deploy_trace["group_arns"]["dev"]])
    assert evaluate([doc], action, arn, context) != ALLOW, f"CI may {what}: {action} on {arn}"


def test_training_ran_the_stack_image_isolated(deploy_trace):
    jobs = [
        p for s, op, p in deploy_trace["calls"] if (s, op) == ("sagemaker", "CreateTrainingJob")
    ]
    assert len(jobs) == 2
    for job in jobs:
        image = job["AlgorithmSpecification"]["TrainingImage"]
        assert image.startswith(f"{deploy_trace['outputs']['training_image_repository_url']}:")
        assert job["EnableNetworkIsolation"] is True


def test_translator_refuses_a_call_it_does_not_know(deploy_trace):
    with pytest.raises(LookupError, match="s3:DeleteObjects is not translated"):
        Translator(deploy_trace["outputs"], "key")("s3", "DeleteObjects", {})

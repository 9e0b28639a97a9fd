"""LambdaEndpoint against moto: each model's own function, its environment, published
versions, the `live` alias, canaries, rollback by re-pointing, what the alias really serves,
refused and failed deploys. (Deploy, rollback, current and history on every stack are in
tests/contract/test_lifecycle.py and test_traffic.py.)
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.stub import Stubber

from ml.clouds.base import Stack
from ml.errors import ArtifactIntegrityError, ConfigError, TandemError
from tests.integration.aws_fixtures import FUNCTION_ENV, calls, client, s3_key


def lambda_state(
    outputs: dict[str, Any], model: str = "credit"
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    lam = client("lambda")
    function = outputs["endpoints"][model]["function_name"]
    alias = lam.get_alias(FunctionName=function, Name="live")
    versions = {
        v["Version"]: v for v in lam.list_versions_by_function(FunctionName=function)["Versions"]
    }
    return alias, versions


def test_deploy_sets_model_uri_publishes_and_moves_the_alias(
    stack: Stack, outputs: dict[str, Any], approved
) -> None:
    v1 = approved()
    deployment = stack.endpoint.deploy(v1)
    alias, versions = lambda_state(outputs)
    published = deployment.details["function_version"]
    assert alias["FunctionVersion"] == published != "1"
    assert not (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights")
    env = versions[published]["Environment"]["Variables"]
    assert env == {
        **FUNCTION_ENV,
        "MODEL_URI": v1.artifact_uri,
        "MODEL_NAME": "credit",
        "MODEL_VERSION": "1",
    }
    assert versions[published]["Description"].startswith("credit:v1 ")
    assert deployment.endpoint == outputs["endpoints"]["credit"]["url"]
    assert stack.endpoint.current("credit") == deployment
    assert stack.endpoint.history("credit") == [deployment]
    # idempotent: the live version again changes nothing
    publishes = calls(stack.endpoint.client, "PublishVersion")
    assert stack.endpoint.deploy(v1) == deployment
    assert publishes == [] and len(stack.endpoint.history("credit")) == 1
    # the other model's function is untouched
    churn_alias, churn_versions = lambda_state(outputs, "churn")
    assert churn_alias["FunctionVersion"] == "1" and set(churn_versions) == {"$LATEST", "1"}
    assert stack.endpoint.current("churn") is None and stack.endpoint.history("churn") == []


def test_a_model_without_an_endpoint_is_a_config_error_naming_the_key(
    stack: Stack, approved
) -> None:
    v1 = approved()
    fraud = type(v1)("fraud", 1, "approved", v1.artifact_uri, v1.created_at)
    for call in (
        lambda: stack.endpoint.deploy(fraud),
        lambda: stack.endpoint.current("fraud"),
        lambda: stack.endpoint.invoke("fraud", [{}]),
    ):
        with pytest.raises(
            ConfigError, match=r"'fraud' has no endpoint on stack 'dev'.*tandem:models"
        ):
            call()


def test_current_reads_the_alias_not_only_the_log(
    stack: Stack, outputs: dict[str, Any], approved
) -> None:
    """An alias moved outside Tandem (the console, a deploy stopped before its record) is
    what `current` and `history` report."""
    v1, v2 = approved(), approved()
    first = stack.endpoint.deploy(v1)
    second = stack.endpoint.deploy(v2)
    function = outputs["endpoints"]["credit"]["function_name"]
    client("lambda").update_alias(
        FunctionName=function, Name="live", FunctionVersion=first.details["function_version"]
    )
    current = stack.endpoint.current("credit")
    assert (current.version, current.artifact_uri, current.canary_weight) == (
        1,
        v1.artifact_uri,
        None,
    )
    assert current.details["function_version"] == first.details["function_version"]
    assert [d.version for d in stack.endpoint.history("credit")] == [1, 2, 1]
    # a canary set by hand reads as one, with its primary
    client("lambda").update_alias(
        FunctionName=function,
        Name="live",
        FunctionVersion=first.details["function_version"],
        RoutingConfig={"AdditionalVersionWeights": {second.details["function_version"]: 0.3}},
    )
    canary = stack.endpoint.current("credit")
    assert (canary.version, canary.canary_weight) == (2, 0.3)
    assert canary.details["primary_model_version"] == "1"


def test_canary_keeps_the_live_version_primary(
    stack: Stack, outputs: dict[str, Any], approved
) -> None:
    v1, v2 = approved(), approved()
    with pytest.raises(TandemError, match="canary needs another live version"):
        stack.endpoint.deploy(v1, canary_weight=0.1)
    first = stack.endpoint.deploy(v1)
    with pytest.raises(TandemError, match="between 0 and 1"):
        stack.endpoint.deploy(v2, canary_weight=1.0)
    canary = stack.endpoint.deploy(v2, canary_weight=0.2)
    alias, versions = lambda_state(outputs)
    new = canary.details["function_version"]
    # Lambda semantics: FunctionVersion takes the rest, AdditionalVersionWeights the canary
    assert alias["FunctionVersion"] == first.details["function_version"]
    assert alias["RoutingConfig"]["AdditionalVersionWeights"] == {new: 0.2}
    assert versions[new]["Environment"]["Variables"]["MODEL_URI"] == v2.artifact_uri
    assert (canary.version, canary.canary_weight) == (2, 0.2)
    assert canary.details["primary_model_version"] == "1"
    assert stack.endpoint.deploy(v2, canary_weight=0.2) == canary  # idempotent too
    # promote the canary to all traffic: same Lambda version, nothing published
    full = stack.endpoint.deploy(v2)
    alias, after = lambda_state(outputs)
    assert alias["FunctionVersion"] == new
    assert not alias["RoutingConfig"]["AdditionalVersionWeights"]
    assert full.details["published"] == "false" and set(after) == set(versions)
    assert [d.version for d in stack.endpoint.history("credit")] == [1, 2, 2]


def test_rollback_re_points_the_alias_without_publishing(
    stack: Stack, outputs: dict[str, Any], approved
) -> None:
    v1, v2 = approved(), approved()
    first = stack.endpoint.deploy(v1)
    stack.endpoint.deploy(v2)
    _, before = lambda_state(outputs)
    back = stack.endpoint.deploy(v1)  # what lifecycle.rollback asks of the endpoint
    alias, after = lambda_state(outputs)
    assert back.version == 1
    assert alias["FunctionVersion"] == first.details["function_version"]
    assert back.details["published"] == "false"
    assert set(after) == set(before)  # no new Lambda version
    assert stack.endpoint.current("credit").version == 1


def test_deploy_refuses_a_tampered_artifact(
    stack: Stack, outputs: dict[str, Any], approved
) -> None:
    v1 = approved()
    bucket, key = s3_key(v1.artifact_uri)
    client("s3").put_object(Bucket=bucket, Key=f"{key}/model.onnx", Body=b"not a model")
    with pytest.raises(ArtifactIntegrityError, match=r"model\.onnx"):
        stack.endpoint.deploy(v1)
    alias, _ = lambda_state(outputs)
    assert alias["FunctionVersion"] == "1"
    assert stack.endpoint.current("credit") is None


def test_deploy_waits_for_the_function_update_and_reports_its_failure(
    stack: Stack, approved
) -> None:
    # moto finishes every update at once; Lambda takes a while and can fail
    v1 = approved()
    ticks: list[float] = []
    stack.endpoint.sleep = ticks.append
    name = stack.endpoint.function("credit").function_name
    conf = {"FunctionName": name, "State": "Active", "RevisionId": "rev-1"}
    env = {"Environment": {"Variables": {"LOG_LEVEL": "INFO"}}}
    with Stubber(stack.endpoint.client) as stub:
        stub.add_response(
            "get_alias", {"Name": "live", "FunctionVersion": "1", "RevisionId": "alias-rev"}
        )
        # the alias's version serves no model version yet (the one Pulumi published)
        stub.add_response("get_function_configuration", {**conf, **env, "Version": "1"})
        stub.add_response("list_versions_by_function", {"Versions": []})
        stub.add_response("get_function_configuration", {**conf, "LastUpdateStatus": "InProgress"})
        stub.add_response(
            "get_function_configuration", {**conf, **env, "LastUpdateStatus": "Successful"}
        )
        stub.add_response(
            "update_function_configuration",
            {"FunctionName": name, "LastUpdateStatus": "InProgress"},
            {
                "FunctionName": name,
                "Environment": {
                    "Variables": {
                        "LOG_LEVEL": "INFO",
                        "MODEL_URI": v1.artifact_uri,
                        "MODEL_NAME": "credit",
                        "MODEL_VERSION": "1",
                    }
                },
                "RevisionId": "rev-1",  # a concurrent change makes Lambda refuse the update
            },
        )
        stub.add_response(
            "get_function_configuration",
            {**conf, "LastUpdateStatus": "Failed", "LastUpdateStatusReason": "KMS key is disabled"},
        )
        with pytest.raises(TandemError, match="failed: KMS key is disabled"):
            stack.endpoint.deploy(v1)
        stub.assert_no_pending_responses()
    assert ticks == [stack.endpoint.poll_seconds]
    assert stack.endpoint.current("credit") is None

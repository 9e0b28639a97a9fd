"""connect: an AWS Stack built from the stack outputs alone, and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from contract.outputs import AWS
from ml.clouds import connect
from ml.errors import ConfigError


def test_connect_builds_the_stack_from_outputs_alone(outputs: dict[str, Any]) -> None:
    stack = connect("aws", outputs)
    assert (stack.cloud, stack.name) == ("aws", "dev")
    assert stack.outputs == outputs
    assert stack.store.uri_for("runs/credit/r.json") == (
        f"s3://{outputs['models_bucket']}/runs/credit/r.json"
    )
    assert stack.store.uri_for("datasets/credit/d.parquet") == (
        f"s3://{outputs['data_bucket']}/datasets/credit/d.parquet"
    )


@pytest.mark.parametrize(
    "missing", ["kms_key_arn", "model_package_groups", "endpoints", "serving_image_uri"]
)
def test_missing_output_is_a_config_error_naming_it(missing: str) -> None:
    outputs = {key: f"value-of-{key}" for key in AWS.required}
    outputs |= {"cloud": "aws", "model_package_groups": {"credit": "g"}}
    outputs["endpoints"] = {"credit": {"function_name": "f", "alias": "live", "url": "https://u"}}
    del outputs[missing]
    with pytest.raises(ConfigError, match=repr(missing)):
        connect("aws", outputs)


def test_outputs_of_another_cloud_are_refused() -> None:
    outputs = {key: "x" for key in AWS.required} | {"cloud": "azure"}
    with pytest.raises(ConfigError, match="not 'aws'"):
        connect("aws", outputs)


@pytest.mark.parametrize(
    ("endpoints", "message"),
    [
        ({}, "'endpoints' must map model names"),
        ("not json", "'endpoints' must map model names"),
        ({"credit": {"function_name": "f", "alias": "live"}}, "entry 'credit' lacks url"),
        ({"credit": "f"}, "entry 'credit' lacks function_name, alias, url"),
    ],
)
def test_a_malformed_endpoints_output_is_a_config_error(endpoints, message) -> None:
    outputs = {key: f"value-of-{key}" for key in AWS.required}
    outputs |= {"cloud": "aws", "model_package_groups": {"credit": "g"}, "endpoints": endpoints}
    with pytest.raises(ConfigError, match=message):
        connect("aws", outputs)

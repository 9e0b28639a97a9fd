"""EndpointTarget.invoke: a stack scores rows with what is live, never in the caller's process."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from ml import lifecycle
from ml.clouds.base import ModelVersion, Stack
from ml.errors import NotFoundError
from tests.contract.conftest import MODEL, Cloud, feature_rows


def test_invoke_scores_rows_with_the_live_version(
    cloud: Cloud, stack: Stack, approved: Callable[[], ModelVersion]
) -> None:
    approved()
    v2 = approved()
    lifecycle.deploy(stack, MODEL)
    rows = feature_rows(3)
    answer = stack.endpoint.invoke(MODEL, rows)
    assert (answer["model"], answer["version"]) == (MODEL, v2.version)
    assert (answer["task"], answer["classes"]) == ("binary", [0, 1])
    predictions, probabilities = answer["predictions"], answer["probabilities"]
    assert len(predictions) == len(probabilities) == len(rows)
    for prediction, shares in zip(predictions, probabilities, strict=True):
        assert sum(shares) == pytest.approx(1.0, abs=1e-5)
        assert prediction == answer["classes"][shares.index(max(shares))]
    # the same rows again: the same answers (a deterministic model behind the endpoint)
    again = stack.endpoint.invoke(MODEL, rows)
    assert (again["predictions"], again["probabilities"]) == (predictions, probabilities)
    assert again["request_id"] != answer["request_id"]


def test_invoke_answers_from_the_version_a_rollback_left_live(
    cloud: Cloud, stack: Stack, approved: Callable[[], ModelVersion]
) -> None:
    v1, v2 = approved(), approved()
    lifecycle.deploy(stack, MODEL, v1.version)
    lifecycle.deploy(stack, MODEL, v2.version)
    assert stack.endpoint.invoke(MODEL, feature_rows(1))["version"] == v2.version
    lifecycle.rollback(stack, MODEL)
    assert stack.endpoint.invoke(MODEL, feature_rows(1))["version"] == v1.version


def test_invoke_with_nothing_deployed_is_refused(stack: Stack) -> None:
    with pytest.raises(NotFoundError):
        stack.endpoint.invoke(MODEL, feature_rows(1))

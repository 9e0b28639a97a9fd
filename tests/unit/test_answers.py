"""What every EndpointTarget makes of an endpoint's answer (ml/clouds/answers.py)."""

from __future__ import annotations

import pytest

from contract.serving import LOAD_FAILED
from ml.clouds.answers import answer_or_error
from ml.errors import NotFoundError, TandemError


def test_a_prediction_is_returned_as_it_came() -> None:
    answer = {"model": "credit", "version": 2, "predictions": [1]}
    assert answer_or_error("credit", 200, answer) is answer


@pytest.mark.parametrize(
    ("status", "error"),
    [(503, "no live model is loaded"), (404, "no such route")],
)
def test_nothing_loaded_yet_is_not_found_so_a_smoke_request_asks_again(status, error) -> None:
    with pytest.raises(NotFoundError, match=error):
        answer_or_error("credit", status, {"error": error})


def test_a_model_that_failed_to_load_is_final_so_a_smoke_request_gives_up_at_once() -> None:
    message = f"{LOAD_FAILED}: model.onnx: not an ONNX graph"
    with pytest.raises(TandemError, match="not an ONNX graph") as raised:
        answer_or_error("credit", 503, {"error": message})
    assert not isinstance(raised.value, NotFoundError)


def test_a_refusal_names_the_endpoints_own_message() -> None:
    with pytest.raises(TandemError, match=r"refused the request \(422\): income: not a number"):
        answer_or_error("credit", 422, {"error": "income: not a number"})

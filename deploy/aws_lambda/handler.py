"""Lambda entry point for the inference endpoint.

Placeholder until the serving work lands: it answers 503 while no model is deployed
(``MODEL_URI`` unset or empty) and a JSON placeholder otherwise. The response shape is
the Lambda proxy format that Function URLs and API Gateway HTTP APIs both accept:
https://docs.aws.amazon.com/lambda/latest/dg/urls-invocation.html#urls-response-payload
"""

from __future__ import annotations

import json
import os
from typing import Any

from contract.serving import ENV_MODEL_URI


def _response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps(body, sort_keys=True),
    }


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Answer one request; the model itself is not loaded yet."""
    model_uri = os.environ.get(ENV_MODEL_URI, "").strip()
    if not model_uri:
        return _response(503, {"error": "no model deployed yet"})
    return _response(200, {"model_uri": model_uri, "status": "placeholder"})

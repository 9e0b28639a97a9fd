"""What every EndpointTarget does with an endpoint's answer: the same errors on every cloud.

The endpoints answer as `deploy/service.py` says: a 200 with the predictions, or a 4xx/5xx
JSON body `{"error": ..., "field": ..., "request_id": ...}`.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from contract.serving import LOAD_FAILED
from ml.errors import NotFoundError, TandemError

TIMEOUT_SECONDS = 30.0


def answer_or_error(model: str, status: int, answer: Any) -> dict[str, Any]:
    """The answer of a 200 with predictions; NotFoundError for a 503 (nothing loaded yet) or
    a 404, TandemError naming the endpoint's own message for anything else, a model that
    failed to load included (`contract.serving.LOAD_FAILED`: asking again will not help)."""
    if status == 200 and isinstance(answer, dict) and "predictions" in answer:
        return answer
    message = answer.get("error") if isinstance(answer, dict) else None
    message = str(message or json.dumps(answer)[:300])
    if status in (404, 503) and not message.startswith(LOAD_FAILED):
        raise NotFoundError(f"{model}: the endpoint answered {status}: {message}")
    raise TandemError(f"{model}: the endpoint refused the request ({status}): {message}")


def post_json(url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, Any]:
    """POST `body` to an http:// URL; (status, parsed JSON answer). OSError when unreachable,
    ValueError when the answer is not JSON."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not an http:// URL: {url!r}")
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT_SECONDS)
    try:
        connection.request("POST", parts.path or "/", body=body, headers=dict(headers))
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()

"""Azure Functions entry point for the inference endpoint (Python v2 programming model).

One HTTP-triggered function takes every path and every method (`route="{*path}"` and no method
list, which the host reads as all methods), and host.json's empty `routePrefix` makes the paths
exactly /health and /predict: the Service answers what the Lambda and the local server answer,
its own 404 and 405 included, with the same limits, errors and JSON. Callers present a function
key (auth level FUNCTION: the `x-functions-key` header or the `code` query parameter), which the
Functions host checks before the function runs.

What every serverless entry point does the same way lives in deploy/endpoint.py. The model loads
once per worker, when the host indexes this module, from the app settings: MODEL_URI (a blob
URL of the artifact, fetched as the function's managed identity and verified by its manifest,
deploy/azure_blob.py), MODEL_NAME, MODEL_VERSION, and a canary from CANARY_MODEL_URI,
CANARY_MODEL_VERSION and CANARY_WEIGHT, split by the Service (Flex Consumption has no deployment
slots). App settings are fixed for a worker's life: a deploy changes them and the host restarts
the worker, which loads what they now name. A load that fails answers 503 naming the problem
and is retried. A request keeps the client's request id, else takes the invocation id.

Each request logs one JSON line through `logging`; the worker hands it to the host, which sends
it to Application Insights as a trace. It carries the fields of the Lambda's line: request id,
model, version, route, method, status, the `Model`/`Version` dimensions, and Tandem's endpoint
metrics (latency_ms, predictions, errors_4xx, errors_5xx). Capture (TANDEM_CAPTURE_URI, the
captures container's URL) drops the spec's personal columns; the worker keeps running between
requests, so the capture's own thread writes what waits every `CAPTURE_FLUSH_SECONDS` and no
request waits for a write.
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import urlsplit

import azure.functions as func

from deploy.endpoint import Endpoint, Request, line, record

log = logging.getLogger("tandem.endpoint")
log.setLevel(logging.INFO)  # what the host keeps is host.json's logLevel
# The Azure SDK logs every HTTP call it makes (a model download, a capture write) at INFO:
# Application Insights would keep and bill each one beside the request's own line.
logging.getLogger("azure").setLevel(logging.WARNING)


class FunctionEndpoint(Endpoint):
    """The endpoint's state in one worker; its lines go to `logging`."""

    def write_line(self, fields: dict[str, Any]) -> None:
        log.log(_level(fields), line(fields))

    def write_request(self, model, version, properties, values) -> None:
        log.log(_level(properties), line(record(model, version, properties, values)))


def _level(fields: dict[str, Any]) -> int:
    return logging.ERROR if fields.get("level") == "ERROR" else logging.INFO


def request_of(req: func.HttpRequest) -> Request:
    """(method, path, headers, body) of the host's request: the URL's path (the route prefix
    is empty), header names lowercased."""
    headers = {str(name).lower(): str(value) for name, value in req.headers.items()}
    return str(req.method).upper(), urlsplit(req.url).path or "/", headers, req.get_body() or b""


# Loaded once per worker, when the host indexes this module.
endpoint = FunctionEndpoint(dict(os.environ), freezes=False)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.function_name(name="serve")
@app.route(route="{*path}")  # every path, every method: the Service answers 404 and 405 itself
def serve(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    invocation_id = str(context.invocation_id or "") or os.urandom(16).hex()
    response = endpoint.serve(lambda: request_of(req), invocation_id)
    return func.HttpResponse(response.body, status_code=response.status, headers=response.headers)

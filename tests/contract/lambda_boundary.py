"""Lambda's side of `Invoke`, for moto: the stack's real handler, run in-process.

moto cannot invoke a Lambda function without Docker, so this fakes that one call and
nothing else: every other Lambda request (create, publish, aliases, configuration) goes to
moto. `LambdaInvoke` is a botocore `before-send` handler (the hook moto itself uses) that
answers `Invoke` at the HTTP boundary as Lambda would: it resolves the qualifier (a version
number, or the `live` alias: its primary version, since the fake splits no traffic) to a
published version, runs `deploy/aws_lambda/handler.py`'s `handler(event, context)` with
that version's environment in `os.environ`, and returns the handler's result as the payload
(`X-Amz-Function-Error: Unhandled` if it raised). Each published version gets its own copy
of the handler module, as each Lambda version gets its own execution environment. The
handler is whatever the repository holds: the serving handler answers with predictions.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import threading
import traceback
import uuid
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from botocore.awsrequest import AWSResponse

from tests.integration.aws_fixtures import REGION, REPO, client

HANDLER_FILE = REPO / "deploy" / "aws_lambda" / "handler.py"
INVOKE_EVENT = "before-send.lambda.Invoke"


class _Body(io.BytesIO):
    """A raw HTTP body as botocore reads it (`stream()` and `read()`)."""

    def stream(self, **_: Any):
        yield self.getvalue()


class LambdaInvoke:
    """Answers `Invoke` for every function in the moto account; `calls` records each one."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._modules: dict[tuple[str, str], Any] = {}
        self._env_lock = threading.Lock()  # os.environ is process-wide

    def _published(
        self, function: str, qualifier: str, endpoint_url: str | None
    ) -> tuple[str, dict[str, str]]:
        lam = client("lambda", endpoint_url)
        version = qualifier or "$LATEST"
        if not version.isdigit() and version != "$LATEST":
            version = lam.get_alias(FunctionName=function, Name=qualifier)["FunctionVersion"]
        conf = lam.get_function_configuration(FunctionName=function, Qualifier=version)
        return version, dict((conf.get("Environment") or {}).get("Variables") or {})

    def _handler(self, function: str, version: str) -> Any:
        key = (function, version)
        if key not in self._modules:
            name = f"tandem_handler_{uuid.uuid4().hex}"
            spec = importlib.util.spec_from_file_location(name, HANDLER_FILE)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            self._modules[key] = module
        return self._modules[key].handler

    def __call__(self, request: Any, **_: Any) -> AWSResponse:
        url = urlparse(request.url)
        function = unquote(url.path.split("/functions/", 1)[1].split("/", 1)[0])
        qualifier = parse_qs(url.query).get("Qualifier", [""])[0]
        # moto in-process answers any AWS host; a moto server is on a loopback address
        server = url.hostname in ("127.0.0.1", "localhost")
        endpoint_url = f"{url.scheme}://{url.netloc}" if server else None
        version, variables = self._published(function, qualifier, endpoint_url)
        body = request.body or b"{}"
        event = json.loads(body.decode() if isinstance(body, bytes) else body)
        context = SimpleNamespace(
            function_name=function,
            function_version=version,
            invoked_function_arn=f"arn:aws:lambda:{REGION}:123456789012:function:{function}",
            aws_request_id=str(uuid.uuid4()),
            memory_limit_in_mb=1024,
            get_remaining_time_in_millis=lambda: 30_000,
        )
        headers = {"X-Amz-Executed-Version": version, "Content-Type": "application/json"}
        environment = {
            **variables,
            "AWS_REGION": REGION,
            "AWS_LAMBDA_FUNCTION_NAME": function,
            "AWS_LAMBDA_FUNCTION_VERSION": version,
        }
        if endpoint_url:  # the function's own clients (its model download) reach the server
            environment["AWS_ENDPOINT_URL"] = endpoint_url
        with self._env_lock:
            saved = {key: os.environ.get(key) for key in environment}
            os.environ.update(environment)
            try:
                payload: Any = self._handler(function, version)(event, context)
            except Exception as exc:  # Lambda reports a raising handler in the payload
                headers["X-Amz-Function-Error"] = "Unhandled"
                payload = {
                    "errorMessage": str(exc),
                    "errorType": type(exc).__name__,
                    "stackTrace": traceback.format_exception(exc),
                }
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
        self.calls.append({"function": function, "version": version, "event": event})
        return AWSResponse(request.url, 200, headers, _Body(json.dumps(payload).encode()))

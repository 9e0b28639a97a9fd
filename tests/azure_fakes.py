"""A loopback HTTPS fake of the Azure services that have no emulator: Azure Resource Manager
(Microsoft.Web sites), Azure ML, Azure ML's run history, Azure Monitor custom metrics and Key
Vault secrets, all on one base URL (the `management_url` stack
output, contract.outputs.MANAGEMENT_URL).

HTTPS because the SDKs refuse to send a bearer token over plain HTTP (azure-core's
BearerTokenCredentialPolicy, Key Vault's challenge policy): the fakes make a certificate
authority of their own (one per process, so one bundle trusts every fake), and `ca_bundle` is a
file with it and the usual public roots, for REQUESTS_CA_BUNDLE. No SDK or adapter code is
patched; the fake only answers HTTP.

It answers exactly these requests, with `{ws}` = /subscriptions/{sub}/resourceGroups/{rg}/
providers/Microsoft.MachineLearningServices/workspaces/{workspace} and `{site}` =
/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{app}:

    Azure ML (ARM; a placeholder token for the management audience, else 401)
    GET  {ws}                                          the workspace: its discoveryUrl is here
    GET  {ws}/models                                   model containers (listViewType)
    GET  {ws}/models/{name}                            a container: latestVersion, nextVersion
    GET  {ws}/models/{name}/versions                   listViewType, $orderBy=createdtime desc, $top
    GET  {ws}/models/{name}/versions/{version}
    PUT  {ws}/models/{name}/versions/{version}         create, or change tags, properties,
                                                       isArchived; an existing version's modelUri
                                                       cannot change (400 UserError, as Azure ML)
    GET  {ws}/codes/{name}/versions/{version}
    PUT  {ws}/codes/{name}/versions/{version}          codeUri immutable likewise
    GET  {ws}/environments/{name}/versions/{version}   those given to the fake
    PUT  {ws}/jobs/{name}                              a command job, played locally (below);
                                                       an existing name: 409 Conflict
    GET  {ws}/jobs/{name}                              status in properties.status
    POST {ws}/jobs/{name}/cancel                       202; the job's process is stopped
    GET  /discovery                                    the workspace's service URLs: this fake
    GET  /history/v1.0{ws}/runs/{run}/details          a job's status and error (run history)
    ARM, Microsoft.Web (management token)
    POST {site}/config/appsettings/list
    PUT  {site}/config/appsettings                     replaces the whole set, as ARM does
    POST {site}/host/default/listkeys                  masterKey, functionKeys.default
    Azure Monitor (a token for https://monitoring.azure.com/)
    POST {resource id}/metrics                         one JSON document, or x-ndjson; checked
                                                       against the API's limits (400 otherwise)
    Key Vault (401 with a challenge without a token, then a token for vault.azure.net)
    GET  /secrets/{name}/                              the newest enabled version
    GET  /secrets/{name}/versions                      every version's id and attributes
    GET  /secrets/{name}/{version}
    PUT  /secrets/{name}                               a new version

Anything else answers 501 and is listed by `unanswered()`; `operations()` lists every request
as (method, path template), for a least-privilege test to map to RBAC actions.

A training job is played when it is PUT: its code (the code asset's codeUri) and its
`uri_file` inputs are read through `blobs`, its command runs in a child process in the code
directory (`python` is this interpreter, `${{inputs.x}}` / `${{outputs.y}}` are local paths)
with the environment variables it declares and AZUREML_RUN_ID, and its `uri_folder` outputs are
written back through `blobs`; then it is Completed, or Failed with the process's last error line
as Azure ML's run history reports it. `blobs` reads and writes URIs of any ArtifactStore
(`StoreBlobs`), so the fake works with the Blob store on Azurite and with a local store alike.

A registered function app is the real deploy/azure_functions/function_app.py behind the
Functions host stand-in (tests/azure_function_host.py) on a loopback port of its own, serving
from the app settings this fake holds and wanting the function key it hands out: what a deploy
writes through ARM is what the function serves, as in Azure.

Helpers for tests: `register_function_app` (its URL), `app_settings` / `set_app_settings` (a change
made outside Tandem), `function_key` / `rotate_function_key`, `set_secret` /
`secret_versions`, `model_versions`, `add_environment`, `job` / `wait_job`, `points` and
`metric_posts` (what Azure Monitor received), and `fail(method, path part, status, code,
message)`, which answers the next matching request with that ARM error.

Checked as Azure checks it: a bearer token for the right audience (a PlaceholderCredential's
token names its scopes), the workspace and resource group in the path, a job's environment,
compute and code asset existing, Azure Monitor's limits (window, dimensions, lengths), an
asset version's path never changing.

Not modelled: paging (every list is one page), ARM's asynchronous operations (a cancel answers
202 without a Location), RBAC (every well-formed token is allowed), ETags, Azure ML's
datastores and its own blob uploads (Tandem never asks for them), job queues and compute (a
job starts at once, in this machine's Python, with no image), a job's identity (recorded, not
used: the fake reads and writes with `blobs`), Key Vault's soft delete and expiry. (A function
app's restart on a settings change is the host stand-in's: tests/azure_function_host.py.)
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

MANAGEMENT_AUDIENCE = "https://management.azure.com"
MONITOR_AUDIENCE = "https://monitoring.azure.com"
VAULT_AUDIENCE = "https://vault.azure.net"
PLACEHOLDER = "placeholder-token-for:"  # ml.clouds.azure.common.PlaceholderCredential
TENANT = "00000000-0000-0000-0000-000000000000"

# Azure Monitor custom metrics limits
# https://learn.microsoft.com/azure/azure-monitor/essentials/metrics-store-custom-rest-api
METRIC_DIMENSIONS_MAX = 10
METRIC_TEXT_MAX = 256
METRIC_PAST = dt.timedelta(minutes=20)
METRIC_FUTURE = dt.timedelta(minutes=5)


class Blobs(Protocol):
    """Where the fake's jobs and functions read and write blobs, by URI."""

    def read(self, uri: str) -> bytes: ...

    def write(self, uri: str, data: bytes) -> None: ...

    def list(self, prefix_uri: str) -> list[str]: ...


class StoreBlobs:
    """`Blobs` over any ArtifactStore (ml/clouds/base.py): a URI's key is the suffix of its
    path that the store maps back to the same URI."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def key(self, uri: str) -> str:
        parts = uri.rstrip("/").split("/")
        for start in range(len(parts) - 1, 0, -1):
            candidate = "/".join(parts[start:])
            if self.store.uri_for(candidate).rstrip("/") == uri.rstrip("/"):
                return candidate
        raise KeyError(f"{uri}: not a URI of this store")

    def read(self, uri: str) -> bytes:
        return self.store.get_bytes(self.key(uri))

    def write(self, uri: str, data: bytes) -> None:
        self.store.put_bytes(self.key(uri), data)

    def list(self, prefix_uri: str) -> list[str]:
        prefix = self.key(prefix_uri).rstrip("/") + "/"
        return [self.store.uri_for(k) for k in self.store.list_keys(prefix)]


# -- TLS -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Tls:
    cert: Path
    key: Path
    ca_bundle: Path


@functools.cache
def _tls() -> _Tls:
    """A certificate authority of the fakes' own and a certificate for 127.0.0.1/localhost,
    made once per process: every fake serves it, so one bundle trusts them all (a test may
    run two stacks, each with its fake)."""
    import certifi
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    validity = (now - dt.timedelta(hours=1), now + dt.timedelta(days=2))

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("tandem test CA"))
        .issuer_name(name("tandem test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    directory = Path(tempfile.mkdtemp(prefix="azure-fake-tls-"))
    atexit.register(shutil.rmtree, directory, True)
    tls = _Tls(directory / "fake.crt", directory / "fake.key", directory / "ca-bundle.pem")
    tls.cert.write_bytes(cert.public_bytes(pem))
    tls.key.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    tls.ca_bundle.write_bytes(Path(certifi.where()).read_bytes() + b"\n" + ca.public_bytes(pem))
    return tls


# -- requests and answers --------------------------------------------------------------------
class Reply(Exception):
    """Raised by a handler to answer with an error (ARM's error body)."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            raise Reply(400, "BadRequest", "the body is not JSON") from None


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Callable[[Request], tuple[int, Any]]
    audience: str | None  # the token audience it needs; None: no bearer token


def _pattern(template: str) -> re.Pattern[str]:
    out, pos = "", 0
    for match in re.finditer(r"\{(\w+)\}", template):
        out += re.escape(template[pos : match.start()])
        greedy = match.group(1) == "resource_id"
        out += f"(?P<{match.group(1)}>{'/subscriptions/.+' if greedy else '[^/]+'})"
        pos = match.end()
    out += re.escape(template[pos:])
    return re.compile(f"^{out}/?$", re.IGNORECASE)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _system_data(created: str) -> dict[str, str]:
    return {
        "createdAt": created,
        "createdBy": "tandem-tests",
        "createdByType": "Application",
        "lastModifiedAt": _now(),
    }


def _int_or_none(text: str) -> int | None:
    return int(text) if text.isdigit() else None


# -- the fake --------------------------------------------------------------------------------
@dataclass
class _Job:
    name: str
    body: dict[str, Any]
    status: str = "NotStarted"
    error: dict[str, str] | None = None
    process: subprocess.Popen | None = None
    created: str = field(default_factory=_now)
    done: threading.Event = field(default_factory=threading.Event)


class AzureFake:
    """The services above for one workspace, on https://127.0.0.1:<free port>."""

    WS = (
        "/subscriptions/{sub}/resourceGroups/{rg}/providers/"
        "Microsoft.MachineLearningServices/workspaces/{workspace}"
    )
    SITE = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Web/sites/{app}"

    def __init__(
        self,
        *,
        subscription_id: str,
        resource_group: str,
        workspace: str,
        blobs: Blobs | None = None,
        environments: tuple[str, ...] = (),
        computes: tuple[str, ...] = (),
        workdir: Path | None = None,
    ) -> None:
        self.subscription_id = subscription_id
        self.resource_group = resource_group
        self.workspace = workspace
        self.blobs = blobs
        self._workdir_handle = None if workdir else tempfile.TemporaryDirectory(prefix="azfake-")
        self.workdir = Path(workdir or self._workdir_handle.name)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._log: list[tuple[str, str, str, int]] = []  # method, template, path, status
        self._models: dict[str, dict[str, dict]] = {}  # lower name -> version -> resource
        self._model_names: dict[str, str] = {}  # lower name -> name as created
        self._codes: dict[tuple[str, str], dict] = {}
        self._environments = {self._asset_key(e) for e in environments}
        self._computes = {c.lower() for c in computes}
        self._jobs: dict[str, _Job] = {}
        self._apps: dict[str, dict[str, Any]] = {}  # lower app -> settings, key
        self._hosts: dict[str, Any] = {}  # lower app -> its FunctionHost
        self._running_hosts = ExitStack()
        self._secrets: dict[str, list[dict]] = {}
        self.points: list[dict[str, Any]] = []  # every metric series received, flattened
        self.metric_posts: list[dict[str, Any]] = []  # each POST: resource, content type, docs
        self.job_logs: dict[str, str] = {}  # a played job's output
        self._failures: list[dict[str, Any]] = []  # what `fail` asked for
        self.routes = self._routes()
        self._tls = _tls()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""

    @staticmethod
    def _asset_key(reference: str) -> tuple[str, str]:
        """("name", "version") of `azureml:name:version` or an ARM id ending in
        `/environments/{name}/versions/{version}`."""
        match = re.search(r"/(?:environments|codes)/([^/]+)/versions/([^/]+)$", reference)
        if match:
            return match.group(1).lower(), match.group(2)
        _, name, version = reference.split(":", 2)
        return name.lower(), version

    # -- life -------------------------------------------------------------------------------
    @property
    def ca_bundle(self) -> Path:
        """The public roots plus the fake's authority: point REQUESTS_CA_BUNDLE here."""
        return self._tls.ca_bundle

    def start(self) -> AzureFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # keep-alive answers without waiting on delayed ACKs
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                status, headers, payload = fake._dispatch(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = _serve

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._tls.cert, self._tls.key)
        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.url = f"https://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        for job in list(self._jobs.values()):
            self._kill(job)
        self._running_hosts.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._workdir_handle is not None:
            self._workdir_handle.cleanup()

    def __enter__(self) -> AzureFake:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- what tests read and set ------------------------------------------------------------
    def operations(self) -> list[tuple[str, str]]:
        """Every request answered, in order, as (method, path template)."""
        with self._lock:
            return [(m, t) for m, t, _, status in self._log if status != 501]

    def unanswered(self) -> list[tuple[str, str]]:
        """Every request the fake does not know, as (method, path with query)."""
        with self._lock:
            return [(m, p) for m, t, p, status in self._log if status == 501]

    def register_function_app(
        self, app: str, settings: dict[str, str] | None = None, key: str | None = None
    ) -> str:
        """A function app with these settings and function key, running; returns its URL."""
        from tests.azure_function_host import FUNCTION_APP, FunctionHost

        with self._lock:
            self._apps[app.lower()] = {
                "name": app,
                "settings": dict(settings or {}),
                "key": key or uuid.uuid4().hex,
            }
            host = FunctionHost(
                FUNCTION_APP, self._apps[app.lower()]["key"], lambda: self.app_settings(app)
            )
            self._hosts[app.lower()] = self._running_hosts.enter_context(host)
        return host.url

    def app_settings(self, app: str) -> dict[str, str]:
        with self._lock:
            return dict(self._apps[app.lower()]["settings"])

    def set_app_settings(self, app: str, settings: dict[str, str]) -> None:
        """Change an app's settings as someone outside Tandem would (the portal, the CLI)."""
        with self._lock:
            self._apps[app.lower()]["settings"] = dict(settings)

    def rotate_function_key(self, app: str) -> str:
        """A new default function key, as `az functionapp keys set` makes; returns it."""
        with self._lock:
            key = self._apps[app.lower()]["key"] = uuid.uuid4().hex
            self._hosts[app.lower()].key = key
            return key

    def function_key(self, app: str) -> str:
        with self._lock:
            return str(self._apps[app.lower()]["key"])

    def set_secret(self, name: str, value: str, created: float | None = None) -> str:
        """Add a version to a Key Vault secret (created now, or at that POSIX time); returns
        the version id."""
        with self._lock:
            return self._add_secret(name, value, created)["version"]

    def secret_versions(self, name: str) -> list[str]:
        with self._lock:
            return [v["value"] for v in self._secrets.get(name.lower(), [])]

    def model_versions(self, name: str) -> dict[str, dict[str, Any]]:
        """{version: resource} of a model, as Azure ML holds them."""
        with self._lock:
            return json.loads(json.dumps(self._models.get(name.lower(), {})))

    def fail(
        self, method: str, path_part: str, status: int, code: str, message: str, times: int = 1
    ) -> None:
        """Answer the next `times` requests of `method` whose path contains `path_part` with
        an ARM error, as a throttled, refused or failing service would."""
        with self._lock:
            self._failures.append({"method": method, "part": path_part, "status": status,
                                   "code": code, "message": message, "times": times})  # fmt: skip

    def _injected(self, method: str, path: str) -> Reply | None:
        with self._lock:
            for failure in self._failures:
                if failure["times"] and failure["method"] == method and failure["part"] in path:
                    failure["times"] -= 1
                    return Reply(failure["status"], failure["code"], failure["message"])
        return None

    def add_environment(self, reference: str) -> None:
        with self._lock:
            self._environments.add(self._asset_key(reference))

    def job_names(self) -> list[str]:
        """Every job submitted, in order."""
        with self._lock:
            return [job.name for job in self._jobs.values()]

    def job(self, name: str) -> dict[str, Any]:
        """A job's resource as GET returns it."""
        with self._lock:
            return self._job_resource(self._jobs[name.lower()])

    def wait_job(self, name: str, timeout: float = 120) -> str:
        job = self._jobs[name.lower()]
        job.done.wait(timeout)
        return job.status

    # -- dispatch ---------------------------------------------------------------------------
    def _dispatch(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(raw_path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        request = Request(method, path, query, headers, body)
        template, status, extra, payload = "", 501, {}, b""
        for route in self.routes:
            match = route.pattern.match(path)
            if route.method != method or not match:
                continue
            template = route.template
            request.params = {k: unquote(v) for k, v in match.groupdict().items()}
            try:
                self._authorize(route, request)
                injected = self._injected(method, path)
                if injected is not None:
                    raise injected
                status, answer = route.handler(request)
                payload = b"" if answer is None else json.dumps(answer).encode()
                if isinstance(answer, bytes):
                    payload = answer
            except Reply as reply:
                status, extra = reply.status, reply.headers
                payload = json.dumps(
                    {"error": {"code": reply.code, "message": reply.message}}
                ).encode()
            except Exception as exc:  # a bug in the fake: say so, never hang the client
                status = 500
                payload = json.dumps(
                    {"error": {"code": "FakeError", "message": f"{type(exc).__name__}: {exc}"}}
                ).encode()
            break
        else:
            payload = json.dumps(
                {"error": {"code": "NotImplemented", "message": f"the fake does not answer "
                                                                f"{method} {path}"}}
            ).encode()  # fmt: skip
        with self._lock:
            self._log.append((method, template, raw_path, status))
        answer_headers = {"content-type": "application/json", **extra}
        return status, answer_headers, payload

    def _authorize(self, route: Route, request: Request) -> None:
        if route.audience is None:
            return
        auth = request.headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            challenge = {}
            if route.audience == VAULT_AUDIENCE:
                challenge = {
                    "WWW-Authenticate": f'Bearer authorization="https://login.microsoftonline'
                    f'.com/{TENANT}", resource="{VAULT_AUDIENCE}"'
                }
            raise Reply(401, "Unauthorized", "no bearer token", challenge)
        token = auth[7:]
        if token.startswith(PLACEHOLDER):
            audiences = {
                s.removesuffix(".default").rstrip("/") for s in token[len(PLACEHOLDER) :].split()
            }
            wanted = {route.audience}
            if route.audience == MANAGEMENT_AUDIENCE:
                wanted.add(self.url)  # azure-ai-ml's scope for a cloud whose ARM is here
            if not audiences & wanted:
                raise Reply(
                    401, "InvalidAuthenticationTokenAudience",
                    f"the token is for {sorted(audiences)}, not {route.audience}",
                )  # fmt: skip

    def _routes(self) -> list[Route]:
        ws, site = self.WS, self.SITE
        arm, monitor, vault = MANAGEMENT_AUDIENCE, MONITOR_AUDIENCE, VAULT_AUDIENCE
        table = [
            ("GET", ws, self._workspace, arm),
            ("GET", f"{ws}/models", self._list_models, arm),
            ("GET", f"{ws}/models/{{name}}", self._get_model_container, arm),
            ("GET", f"{ws}/models/{{name}}/versions", self._list_model_versions, arm),
            ("GET", f"{ws}/models/{{name}}/versions/{{version}}", self._get_model_version, arm),
            ("PUT", f"{ws}/models/{{name}}/versions/{{version}}", self._put_model_version, arm),
            ("GET", f"{ws}/codes/{{name}}/versions/{{version}}", self._get_code, arm),
            ("PUT", f"{ws}/codes/{{name}}/versions/{{version}}", self._put_code, arm),
            ("GET", f"{ws}/environments/{{name}}/versions/{{version}}", self._environment, arm),
            ("PUT", f"{ws}/jobs/{{name}}", self._put_job, arm),
            ("GET", f"{ws}/jobs/{{name}}", self._get_job, arm),
            ("POST", f"{ws}/jobs/{{name}}/cancel", self._cancel_job, arm),
            ("GET", "/discovery", self._discovery, None),
            ("GET", f"/history/v1.0{ws}/runs/{{run}}/details", self._run_details, arm),
            ("POST", f"{site}/config/appsettings/list", self._list_settings, arm),
            ("PUT", f"{site}/config/appsettings", self._put_settings, arm),
            ("POST", f"{site}/host/default/listkeys", self._list_keys, arm),
            ("POST", "{resource_id}/metrics", self._metrics, monitor),
            ("GET", "/secrets/{name}/versions", self._secret_versions, vault),
            ("GET", "/secrets/{name}", self._get_secret, vault),
            ("GET", "/secrets/{name}/{version}", self._get_secret, vault),
            ("PUT", "/secrets/{name}", self._put_secret, vault),
        ]
        return [Route(m, t, _pattern(t), h, a) for m, t, h, a in table]

    def _in_workspace(self, request: Request) -> None:
        p = request.params
        if (p.get("sub"), p.get("rg", "").lower(), p.get("workspace", "").lower()) != (
            self.subscription_id,
            self.resource_group.lower(),
            self.workspace.lower(),
        ):
            raise Reply(404, "ResourceNotFound", f"no workspace at {request.path}")

    def _ws_id(self) -> str:
        return self.WS.format(sub=self.subscription_id, rg=self.resource_group,
                              workspace=self.workspace)  # fmt: skip

    # -- Azure ML: workspace and discovery ---------------------------------------------------
    def _workspace(self, request: Request) -> tuple[int, Any]:
        self._in_workspace(request)
        return 200, {
            "id": self._ws_id(),
            "name": self.workspace,
            "type": "Microsoft.MachineLearningServices/workspaces",
            "location": "local",
            "properties": {"discoveryUrl": f"{self.url}/discovery", "friendlyName": self.workspace},
        }

    def _discovery(self, request: Request) -> tuple[int, Any]:
        return 200, {"api": self.url, "history": self.url, "catalog": self.url}

    # -- Azure ML: models --------------------------------------------------------------------
    def _container(self, name: str) -> dict[str, Any]:
        versions = self._models.get(name.lower(), {})
        numbers = [n for n in (_int_or_none(v) for v in versions) if n is not None]
        latest = max(versions, key=lambda v: versions[v]["systemData"]["createdAt"], default=None)
        return {
            "id": f"{self._ws_id()}/models/{self._model_names.get(name.lower(), name)}",
            "name": self._model_names.get(name.lower(), name),
            "type": "Microsoft.MachineLearningServices/workspaces/models",
            "properties": {
                "latestVersion": latest,
                "nextVersion": str(max(numbers, default=0) + 1),
                "isArchived": False,
                "tags": {},
                "properties": {},
            },
            "systemData": _system_data(
                min((v["systemData"]["createdAt"] for v in versions.values()), default=_now())
            ),
        }

    @staticmethod
    def _view(request: Request, resource: dict[str, Any]) -> bool:
        view = request.query.get("listViewType", "ActiveOnly").lower()
        archived = bool(resource["properties"].get("isArchived"))
        return view == "all" or archived == (view == "archivedonly")

    def _list_models(self, request: Request) -> tuple[int, Any]:
        self._in_workspace(request)
        with self._lock:
            names = [n for n, versions in self._models.items() if versions]
            return 200, {"value": [self._container(n) for n in sorted(names)]}

    def _get_model_container(self, request: Request) -> tuple[int, Any]:
        self._in_workspace(request)
        name = request.params["name"]
        with self._lock:
            if not self._models.get(name.lower()):
                raise Reply(404, "UserError", f"Could not find asset with name {name}")
            return 200, self._container(name)

    def _list_model_versions(self, request: Request) -> tuple[int, Any]:
        self._in_workspace(request)
        name = request.params["name"]
        with self._lock:
            if not self._models.get(name.lower()):
                raise Reply(404, "UserError", f"Could not find asset with name {name}")
            versions = [v for v in self._models[name.lower()].values() if self._view(request, v)]
        order = request.query.get("$orderBy", "").lower()
        if order.startswith("createdtime"):
            versions.sort(key=lambda v: v["systemData"]["createdAt"], reverse="desc" in order)
        if request.query.get("$top"):
            versions = versions[: int(request.query["$top"])]
        return 200, {"value": versions}

    def _get_model_version(self, request: Request) -> tuple[int, Any]:
        self._in_workspace(request)
        name, version = request.params["name"], request.params["version"]
        with self._lock:
            found = self._models.get(name.lower(), {}).get(version)
        if found is None:
            raise Reply(
                404, "UserError", f"Could not find asset with name {name} version {version}"
            )
        return 200, found

    def _put_model_version(self, request: Request) -> tuple[int, Any]:
        self._in_workspace(request)
        name, version = request.params["name"], request.params["version"]
        sent = (request.json() or {}).get("properties") or {}
        if not sent.get("modelUri"):
            raise Reply(400, "UserError", "modelUri is required")
        with self._lock:
            versions = self._models.setdefault(name.lower(), {})
            self._model_names.setdefault(name.lower(), name)
            existing = versions.get(version)
            if existing is not None and existing["properties"]["modelUri"] != sent["modelUri"]:
                raise Reply(400, "UserError", "Asset paths cannot be updated.")
            created = existing["systemData"]["createdAt"] if existing else _now()
            resource = {
                "id": f"{self._ws_id()}/models/{name}/versions/{version}",
                "name": version,
                "type": "Microsoft.MachineLearningServices/workspaces/models/versions",
                "properties": {
                    "description": sent.get("description"),
                    "tags": dict(sent.get("tags") or {}),
                    "properties": dict(sent.get("properties") or {}),
                    "modelType": sent.get("modelType") or "custom_model",
                    "modelUri": sent["modelUri"],
                    "isAnonymous": bool(sent.get("isAnonymous")),
                    "isArchived": bool(sent.get("isArchived")),
                    "stage": sent.get("stage"),
                    "flavors": sent.get("flavors") or {},
                    "provisioningState": "Succeeded",
                },
                "systemData": _system_data(created),
            }
            if existing is not None:
                # Azure ML keeps the properties a version was created with: only adds are taken
                resource["properties"]["properties"] = {
                    **resource["properties"]["properties"],
                    **existing["properties"]["properties"],
                }
            versions[version] = resource
        return (200 if existing else 201), resource

    # -- Azure ML: code, environments --------------------------------------------------------
    def _get_code(self, request: Request) -> tuple[int, Any]:
        self._in_workspace(request)
        key = (request.params["name"].lower(), request.params["version"])
        with self._lock:
            found = self._codes.get(key)
        if found is None:
            raise Reply(404, "UserError", f"Could not find code {key[0]}:{key[1]}")
        return 200, found

    def _put_code(self, request: Request) -> tuple[int, Any]:
        self._in_workspace(request)
        name, version = request.params["name"], request.params["version"]
        sent = (request.json() or {}).get("properties") or {}
        if not sent.get("codeUri"):
            raise Reply(400, "UserError", "codeUri is required")
        with self._lock:
            existing = self._codes.get((name.lower(), version))
            if existing is not None and existing["properties"]["codeUri"] != sent["codeUri"]:
                raise Reply(400, "UserError", "Asset paths cannot be updated.")
            resource = {
                "id": f"{self._ws_id()}/codes/{name}/versions/{version}",
                "name": version,
                "type": "Microsoft.MachineLearningServices/workspaces/codes/versions",
                "properties": {
                    "codeUri": sent["codeUri"],
                    "description": sent.get("description"),
                    "tags": dict(sent.get("tags") or {}),
                    "properties": dict(sent.get("properties") or {}),
                    "isAnonymous": bool(sent.get("isAnonymous")),
                    "isArchived": False,
                    "provisioningState": "Succeeded",
                },
                "systemData": _system_data(_now()),
            }
            self._codes[(name.lower(), version)] = resource
        return (200 if existing else 201), resource

    def _environment(self, request: Request) -> tuple[int, Any]:
        self._in_workspace(request)
        name, version = request.params["name"], request.params["version"]
        with self._lock:
            known = (name.lower(), version) in self._environments
        if not known:
            raise Reply(404, "UserError", f"Could not find environment {name}:{version}")
        return 200, {
            "id": f"{self._ws_id()}/environments/{name}/versions/{version}",
            "name": version,
            "type": "Microsoft.MachineLearningServices/workspaces/environments/versions",
            "properties": {"image": "mcr.microsoft.com/azureml/tandem-training:latest",
                           "osType": "Linux", "isArchived": False, "tags": {}},
            "systemData": _system_data(_now()),
        }  # fmt: skip

    # -- Azure ML: jobs ----------------------------------------------------------------------
    def _job_resource(self, job: _Job) -> dict[str, Any]:
        properties = dict(job.body.get("properties") or {})
        properties["status"] = job.status
        properties.setdefault("services", {})
        return {
            "id": f"{self._ws_id()}/jobs/{job.name}",
            "name": job.name,
            "type": "Microsoft.MachineLearningServices/workspaces/jobs",
            "properties": properties,
            "systemData": _system_data(job.created),
        }

    def _put_job(self, request: Request) -> tuple[int, Any]:
        self._in_workspace(request)
        name = request.params["name"]
        body = request.json() or {}
        properties = body.get("properties") or {}
        if properties.get("jobType") != "Command":
            raise Reply(
                400, "UserError", f"the fake plays command jobs, not {properties.get('jobType')}"
            )
        for required in ("command", "environmentId", "computeId"):
            if not properties.get(required):
                raise Reply(400, "UserError", f"{required} is required")
        with self._lock:
            if name.lower() in self._jobs:
                raise Reply(409, "Conflict", f"a job named {name} exists")
            env = self._asset_key(properties["environmentId"])
            if env not in self._environments:
                raise Reply(400, "UserError", f"environment {env[0]}:{env[1]} does not exist")
            compute = properties["computeId"].rstrip("/").rsplit("/", 1)[-1].lower()
            if self._computes and compute not in self._computes:
                raise Reply(400, "UserError", f"compute {compute} does not exist")
            code = None
            if properties.get("codeId"):
                code = self._codes.get(self._asset_key(properties["codeId"]))
                if code is None:
                    raise Reply(400, "UserError", f"code {properties['codeId']} does not exist")
            job = _Job(name, body)
            self._jobs[name.lower()] = job
            resource = self._job_resource(job)
        threading.Thread(target=self._play, args=(job, code), daemon=True).start()
        return 201, resource

    def _get_job(self, request: Request) -> tuple[int, Any]:
        self._in_workspace(request)
        with self._lock:
            job = self._jobs.get(request.params["name"].lower())
            if job is None:
                raise Reply(404, "UserError", f"job {request.params['name']} not found")
            return 200, self._job_resource(job)

    def _cancel_job(self, request: Request) -> tuple[int, Any]:
        self._in_workspace(request)
        with self._lock:
            job = self._jobs.get(request.params["name"].lower())
            if job is None:
                raise Reply(404, "UserError", f"job {request.params['name']} not found")
            if job.status not in ("Completed", "Failed", "Canceled"):
                job.status = "CancelRequested"
        self._kill(job)
        return 202, None

    def _run_details(self, request: Request) -> tuple[int, Any]:
        self._in_workspace(request)
        with self._lock:
            job = self._jobs.get(request.params["run"].lower())
            if job is None:
                raise Reply(404, "UserError", f"run {request.params['run']} not found")
            details = {"runId": job.name, "status": job.status, "target": "compute"}
            if job.error:
                details["error"] = {"error": dict(job.error)}
            return 200, details

    def _kill(self, job: _Job) -> None:
        process = job.process
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)

    def _set_status(self, job: _Job, status: str, error: dict | None = None) -> None:
        with self._lock:
            if job.status in ("CancelRequested", "Canceled") and status != "Canceled":
                status = "Canceled"
            job.status, job.error = status, error

    def _play(self, job: _Job, code: dict | None) -> None:
        """Run the job's command as Azure ML would on a node (see the module docstring)."""
        try:
            self._run(job, code)
        except Exception as exc:  # the job fails, with what went wrong
            self._set_status(job, "Failed", {"code": "SystemError", "message": str(exc)})
        finally:
            job.done.set()

    def _run(self, job: _Job, code: dict | None) -> None:
        properties = job.body["properties"]
        if self.blobs is None:
            raise RuntimeError("the fake was given no blobs to run jobs over")
        root = Path(tempfile.mkdtemp(prefix=f"job-{job.name}-", dir=self.workdir))
        self._set_status(job, "Preparing")
        code_dir = root / "code"
        code_dir.mkdir()
        if code is not None:
            base = code["properties"]["codeUri"].rstrip("/") + "/"
            for uri in self.blobs.list(base):
                target = code_dir / uri[len(base) :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self.blobs.read(uri))
        values: dict[str, str] = {}
        for name, given in (properties.get("inputs") or {}).items():
            kind = given.get("jobInputType")
            if kind == "literal":
                values[f"inputs.{name}"] = str(given.get("value"))
                continue
            if kind != "uri_file":
                raise RuntimeError(f"input {name}: the fake reads uri_file inputs, not {kind}")
            local = root / "inputs" / name / given["uri"].rstrip("/").rsplit("/", 1)[-1]
            local.parent.mkdir(parents=True)
            local.write_bytes(self.blobs.read(given["uri"]))
            values[f"inputs.{name}"] = str(local)
        outputs = {}
        for name, given in (properties.get("outputs") or {}).items():
            if given.get("jobOutputType") != "uri_folder" or not given.get("uri"):
                raise RuntimeError(f"output {name}: the fake writes uri_folder outputs with a uri")
            local = root / "outputs" / name
            local.mkdir(parents=True)
            values[f"outputs.{name}"] = str(local)
            outputs[name] = (local, given["uri"])

        def substitute(match: re.Match[str]) -> str:
            reference = match.group(1).strip()
            if reference not in values:
                raise RuntimeError(f"the command refers to {reference}, which the job lacks")
            return shlex.quote(values[reference])

        command = re.sub(r"\$\{\{([^}]+)\}\}", substitute, properties["command"])
        argv = shlex.split(command)
        if argv and argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        environment = {k: v for k, v in os.environ.items() if not k.startswith("AZUREML_")}
        environment |= {
            str(k): str(v) for k, v in (properties.get("environmentVariables") or {}).items()
        }
        environment |= {"AZUREML_RUN_ID": job.name, "AZUREML_EXPERIMENT_NAME":
                        str(properties.get("experimentName") or "")}  # fmt: skip
        self._set_status(job, "Running")
        with self._lock:
            if job.status == "Canceled":
                return
            job.process = subprocess.Popen(
                argv, cwd=code_dir, env=environment, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, start_new_session=True,
            )  # fmt: skip
        stdout, stderr = job.process.communicate()
        self.job_logs[job.name] = stdout + stderr
        if job.process.returncode != 0:
            last = (stderr.strip().splitlines() or ["(no output)"])[-1]
            self._set_status(job, "Failed", {
                "code": "UserError",
                "message": f"Execution failed. User process '{argv[0]}' exited with status code "
                           f"{job.process.returncode}. Error: {last}",
            })  # fmt: skip
            return
        self._set_status(job, "Finalizing")
        for local, uri in outputs.values():
            for path in sorted(p for p in local.rglob("*") if p.is_file()):
                self.blobs.write(f"{uri.rstrip('/')}/{path.relative_to(local).as_posix()}",
                                 path.read_bytes())  # fmt: skip
        self._set_status(job, "Completed")

    # -- ARM: function apps ------------------------------------------------------------------
    def _app(self, request: Request) -> dict[str, Any]:
        p = request.params
        if (p["sub"], p["rg"].lower()) != (self.subscription_id, self.resource_group.lower()):
            raise Reply(404, "ResourceGroupNotFound", f"no resource group at {request.path}")
        app = self._apps.get(p["app"].lower())
        if app is None:
            raise Reply(404, "ResourceNotFound", f"The Resource 'Microsoft.Web/sites/{p['app']}' "
                                                 "was not found.")  # fmt: skip
        return app

    def _settings_resource(self, app: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": self.SITE.format(sub=self.subscription_id, rg=self.resource_group,
                                   app=app["name"]) + "/config/appsettings",
            "name": "appsettings",
            "type": "Microsoft.Web/sites/config",
            "location": "local",
            "properties": dict(app["settings"]),
        }  # fmt: skip

    def _list_settings(self, request: Request) -> tuple[int, Any]:
        with self._lock:
            return 200, self._settings_resource(self._app(request))

    def _put_settings(self, request: Request) -> tuple[int, Any]:
        sent = (request.json() or {}).get("properties")
        if not isinstance(sent, dict) or not all(isinstance(v, str) for v in sent.values()):
            raise Reply(400, "BadRequest", "properties must map setting names to strings")
        with self._lock:
            app = self._app(request)
            app["settings"] = dict(sent)
            return 200, self._settings_resource(app)

    def _list_keys(self, request: Request) -> tuple[int, Any]:
        with self._lock:
            app = self._app(request)
            return 200, {
                "masterKey": f"master-{app['key']}",
                "functionKeys": {"default": app["key"]},
                "systemKeys": {},
            }

    # -- Azure Monitor -----------------------------------------------------------------------
    def _metrics(self, request: Request) -> tuple[int, Any]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        text = request.body.decode()
        if kind == "application/x-ndjson":
            lines = [line for line in text.splitlines() if line.strip()]
        elif kind == "application/json":
            lines = [text]
        else:
            raise Reply(415, "UnsupportedMediaType", f"content-type {kind!r}")
        try:
            documents = [json.loads(line) for line in lines]
        except ValueError:
            raise Reply(400, "InvalidPayload", "a document is not JSON") from None
        now = dt.datetime.now(dt.UTC)
        received = []
        for document in documents:
            try:
                at = dt.datetime.fromisoformat(document["time"].replace("Z", "+00:00"))
                base = document["data"]["baseData"]
                metric, namespace = base["metric"], base["namespace"]
                names = list(base.get("dimNames") or [])
                series = base["series"]
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise Reply(400, "InvalidPayload", f"malformed document ({exc!r})") from None
            if not now - METRIC_PAST <= at <= now + METRIC_FUTURE:
                raise Reply(400, "InvalidTimestamp", f"{document['time']} is outside the window")
            if len(names) > METRIC_DIMENSIONS_MAX:
                raise Reply(400, "TooManyDimensions", f"{len(names)} dimensions")
            for text_value in (metric, namespace, *names):
                if not text_value or len(text_value) > METRIC_TEXT_MAX:
                    raise Reply(400, "InvalidName", f"{text_value!r}: 1-{METRIC_TEXT_MAX} chars")
            for entry in series:
                values = list(entry.get("dimValues") or [])
                if len(values) != len(names):
                    raise Reply(400, "InvalidPayload", "dimValues do not match dimNames")
                if any(len(str(v)) > METRIC_TEXT_MAX for v in values):
                    raise Reply(400, "InvalidDimensionValue", "a dimension value is too long")
                for stat in ("min", "max", "sum", "count"):
                    if not isinstance(entry.get(stat), int | float):
                        raise Reply(400, "InvalidPayload", f"series without a numeric {stat}")
                received.append(
                    {
                        "resource_id": request.params["resource_id"],
                        "time": document["time"],
                        "namespace": namespace,
                        "metric": metric,
                        "dimensions": dict(zip(names, values, strict=True)),
                        **{stat: entry[stat] for stat in ("min", "max", "sum", "count")},
                    }
                )
        with self._lock:
            self.metric_posts.append(
                {"resource_id": request.params["resource_id"], "content_type": kind,
                 "documents": documents}
            )  # fmt: skip
            self.points.extend(received)
        return 200, None

    # -- Key Vault ---------------------------------------------------------------------------
    def _secret_bundle(self, name: str, entry: dict[str, Any], value: bool = True) -> dict:
        bundle = {
            "id": f"{self.url}/secrets/{name}/{entry['version']}",
            "attributes": {"enabled": True, "created": entry["created"],
                           "updated": entry["created"], "recoveryLevel": "Recoverable"},
            "tags": {},
        }  # fmt: skip
        if value:
            bundle["value"] = entry["value"]
        return bundle

    def _add_secret(self, name: str, value: str, created: float | None = None) -> dict:
        entry = {
            "version": uuid.uuid4().hex,
            "value": value,
            # Key Vault's attributes are whole seconds: versions made in one second tie
            "created": int(dt.datetime.now(dt.UTC).timestamp() if created is None else created),
            "name": name,
        }
        self._secrets.setdefault(name.lower(), []).append(entry)
        return entry

    def _get_secret(self, request: Request) -> tuple[int, Any]:
        name, version = request.params["name"], request.params.get("version")
        with self._lock:
            versions = self._secrets.get(name.lower(), [])
            found = versions[-1] if versions and not version else None
            if version:
                found = next((v for v in versions if v["version"] == version), None)
        if found is None:
            raise Reply(404, "SecretNotFound", f"A secret with (name/id) {name} was not found")
        return 200, self._secret_bundle(found["name"], found)

    def _secret_versions(self, request: Request) -> tuple[int, Any]:
        name = request.params["name"]
        with self._lock:
            versions = list(self._secrets.get(name.lower(), []))
        if not versions:
            raise Reply(404, "SecretNotFound", f"A secret with (name/id) {name} was not found")
        return 200, {
            "value": [self._secret_bundle(v["name"], v, value=False) for v in versions],
            "nextLink": None,
        }

    def _put_secret(self, request: Request) -> tuple[int, Any]:
        value = (request.json() or {}).get("value")
        if not isinstance(value, str):
            raise Reply(400, "BadParameter", "value is required")
        with self._lock:
            entry = self._add_secret(request.params["name"], value)
        return 200, self._secret_bundle(entry["name"], entry)


@contextmanager
def running(**kwargs: Any) -> Iterator[AzureFake]:
    fake = AzureFake(**kwargs).start()
    try:
        yield fake
    finally:
        fake.stop()

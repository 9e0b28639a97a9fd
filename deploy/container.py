"""The serving container's one command: `python -m deploy.container serve [--model-dir DIR]`.

One image serves a Tandem model on SageMaker real-time endpoints, Azure ML online endpoints and
any Kubernetes cluster; the routes and the port are each platform's (contract/serving.py):

- SageMaker hosting: `docker run IMAGE serve`, GET /ping, POST /invocations on port 8080
  (SAGEMAKER_BIND_TO_PORT when set), the model unpacked from model.tar.gz into /opt/ml/model.
- Azure ML custom container: the model mounted under $AZUREML_MODEL_DIR (in a subfolder),
  liveness, readiness and scoring paths and the port from TANDEM_LIVENESS_PATH,
  TANDEM_READINESS_PATH, TANDEM_SCORING_PATH and TANDEM_PORT, set to match the environment's
  inference_config.
- Kubernetes or anything else: MODEL_URI (a path, s3:// or https://) or --model-dir.

/health, /predict and /live always answer too. Where the model comes from, first found:
--model-dir, MODEL_URI, $AZUREML_MODEL_DIR, /opt/ml/model; a directory is searched (three
levels down) for the one Tandem artifact (MANIFEST.json) or model.tar.gz in it. The canary,
limits and capture are the endpoint environment of contract/serving.py; the capture goes only
to a mounted directory, or to s3:// when boto3 is installed. Personal-data columns are dropped
from captured rows (the container holds no pseudonymisation key).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from contract import serving
from deploy.capture import Capture
from deploy.inference import MANIFEST, TARBALL
from deploy.server import Server
from deploy.service import Service

SEARCH_DEPTH = 3


class ContainerError(Exception):
    """A configuration the container cannot serve: printed, exit status 2."""


def find_artifact(root: Path, depth: int = SEARCH_DEPTH) -> Path:
    """The artifact directory (or model.tar.gz) at or below `root`: exactly one."""
    if not root.is_dir():
        if root.is_file():
            return root
        raise ContainerError(f"no model at {root}: the directory does not exist")
    level = [root]
    for _ in range(depth + 1):
        found = [d for d in level if (d / MANIFEST).is_file() or (d / TARBALL).is_file()]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ContainerError(
                f"more than one model under {root}: "
                + ", ".join(str(d.relative_to(root)) for d in found[:5])
            )
        level = sorted(c for d in level for c in d.iterdir() if c.is_dir() and c.name[0] != ".")
    raise ContainerError(f"no Tandem model under {root} ({MANIFEST} or {TARBALL} not found)")


def model_source(model_dir: str | None, environ: Mapping[str, str]) -> str:
    if model_dir:
        return str(find_artifact(Path(model_dir)))
    uri = environ.get(serving.ENV_MODEL_URI, "").strip()
    if uri:
        return uri if "://" in uri else str(find_artifact(Path(uri)))
    azure = environ.get(serving.ENV_AZUREML_MODEL_DIR, "").strip()
    return str(find_artifact(Path(azure or serving.SAGEMAKER_MODEL_DIR)))


def _paths(*paths: str | None) -> frozenset[str]:
    chosen = set()
    for path in paths:
        path = (path or "").strip()
        if path:
            if not path.startswith("/"):
                raise ContainerError(f"a route must start with '/': {path[:60]!r}")
            chosen.add(path)
    return frozenset(chosen)


def _int(environ: Mapping[str, str], *keys: str, default: int) -> int:
    for key in keys:
        value = environ.get(key, "").strip()
        if value:
            try:
                return int(value)
            except ValueError:
                raise ContainerError(f"{key}={value[:60]!r}: expected an integer") from None
    return default


def _capture(environ: Mapping[str, str], service: Service) -> Capture | None:
    uri = environ.get(serving.ENV_CAPTURE_URI, "").strip()
    if not uri:
        return None
    scheme = urlparse(uri).scheme
    if scheme == "s3" and importlib.util.find_spec("boto3") is None:
        raise ContainerError(
            f"{serving.ENV_CAPTURE_URI}={uri[:60]!r}: s3 capture needs boto3, which this image "
            "does not install; mount a directory and name its path"
        )
    if scheme not in ("", "file", "s3"):
        raise ContainerError(
            f"{serving.ENV_CAPTURE_URI}={uri[:60]!r}: expected a mounted directory's path"
        )
    live = service.routing.live
    spec = (live.card.get("spec") or {}) if live is not None else {}
    try:
        return Capture.from_env(environ, personal_columns=spec.get("personal_data") or ())
    except ValueError as exc:
        raise ContainerError(str(exc)) from None


def build(model_dir: str | None, environ: Mapping[str, str]) -> Server:
    """The server the container runs, configured from the platform's environment."""
    env = {**environ, serving.ENV_MODEL_URI: model_source(model_dir, environ)}
    service = Service.from_env(
        env,
        health_paths=_paths(serving.HEALTH_PATH, serving.SAGEMAKER_PING_PATH,
                            environ.get(serving.ENV_READINESS_PATH)),
        predict_paths=_paths(serving.PREDICT_PATH, serving.SAGEMAKER_INVOCATIONS_PATH,
                             environ.get(serving.ENV_SCORING_PATH)),
    )  # fmt: skip
    service.capture = _capture(environ, service)
    return Server(
        service,
        environ.get(serving.ENV_HOST, "").strip() or serving.CONTAINER_HOST,
        _int(environ, serving.ENV_PORT, serving.ENV_SAGEMAKER_PORT, default=serving.SAGEMAKER_PORT),
        workers=_int(environ, serving.ENV_WORKERS, default=8),
        liveness_paths=_paths(serving.LIVENESS_PATH, environ.get(serving.ENV_LIVENESS_PATH)),
        log=sys.stdout,  # the platform collects the container's output
    )


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] = os.environ) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.container")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the model over HTTP")
    serve.add_argument("--model-dir", help="the model directory (default: see the module doc)")
    commands.add_parser("train", help="not served by this image")
    args = parser.parse_args(argv)
    if args.command != "serve":
        print("this image serves models; train with the training image", file=sys.stderr)
        return 2
    try:
        server = build(args.model_dir, environ)
    except (ContainerError, ValueError, OSError) as exc:
        print(f"tandem container: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # onnxruntime's own errors for a bad graph
        print(f"tandem container: the model cannot be loaded ({exc})", file=sys.stderr)
        return 2

    def listening(server: Server) -> None:
        print(f"serving {server.describe()} on {server.url}", file=sys.stderr, flush=True)

    server.on_listening = listening
    capture: Any = server.service.capture
    try:
        server.serve_forever()
    except OSError as exc:
        print(f"tandem container: cannot listen: {exc}", file=sys.stderr)
        return 2
    finally:
        if capture is not None:
            capture.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

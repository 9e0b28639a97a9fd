"""Training: AzureMLJobRunner, `ml/train.py` as an Azure ML command job.

`submit` stages the data in the store, ships the code as an Azure ML code asset and starts a
command job; `wait` polls it; `collect` verifies what the job wrote and stores it as the
artifact. The job runs the same `python -m ml.train` as every stack, on the stack's compute
cluster, as the training identity, in the stack's environment (Tandem's training image), in an
experiment `<name_prefix>-<model>`.

The code: azure-ai-ml uploads a local code folder with its own blob client, around the azure-core
transport and Tandem's verified store, so the runner writes the files into the store itself
(under the run's `code/` key) and creates the code version by REST; the job names it by its
bare ARM id, the one form a command job accepts for an existing code asset. The version is the
code's SHA-256, so unchanged code is uploaded once. Data and the artifact move as blob paths:
the job reads the staged dataset (`uri_file`) and writes the artifact directory to the run's
`output/` key (`uri_folder`, uploaded when the job ends), each given to Azure ML as
`wasbs://<container>@<account>.blob.core.windows.net/<path>`, the form Azure ML documents for a
storage account it reaches with the job's identity (its docs withdrew the https:// form for
that: https://github.com/MicrosoftDocs/azure-docs/issues/98360).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shlex
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError

from contract import layout
from ml import artifact, tracking
from ml import train as training
from ml.clouds import packaging
from ml.clouds.azure.arm import ArmRest
from ml.clouds.azure.common import AzureOutputs, translate_errors
from ml.clouds.base import ArtifactStore, JobResult, Progress
from ml.errors import ConfigError, NotFoundError, TandemError
from ml.spec import ModelSpec

# Azure ML job names: letters, digits, '-' and '_', starting with a letter or digit.
JOB_NAME_MAX = 255
_JOB_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]+")
CODE_NAME = "tandem-training"
COMPLETED = "Completed"
ENDED = frozenset({COMPLETED, "Failed", "Canceled", "NotResponding"})
FIRST_POLL_SECONDS = 1.0  # then doubling up to poll_seconds


def job_name(prefix: str, output_key: str) -> str:
    """`<prefix>-<run>` within Azure ML's limits: one output key, one job name, so a retried
    call follows the job it started before."""
    run = output_key.rstrip("/").rsplit("/", 1)[-1]
    name = _JOB_NAME_BAD.sub("-", f"{prefix}-{run}").strip("-_")
    if len(name) > JOB_NAME_MAX:
        digest = hashlib.sha256(output_key.encode()).hexdigest()[:10]
        name = f"{name[: JOB_NAME_MAX - len(digest) - 1].rstrip('-_')}-{digest}"
    return name


def job_path(uri: str) -> str:
    """A blob URL as a job's input or output path: `wasbs://container@host/path` for a storage
    account's blob endpoint; anything else (an emulator's address) as it is."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    container, _, path = parts.path.lstrip("/").partition("/")
    if parts.scheme != "https" or ".blob." not in host or not container:
        return uri
    return f"wasbs://{container}@{parts.netloc}/{path}"


def code_version(files: dict[str, bytes]) -> str:
    """The code's content digest: the same files, the same code version."""
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.encode() + b"\0" + hashlib.sha256(files[path]).digest())
    return digest.hexdigest()[:32]


def _status(job: Any) -> str:
    status = getattr(job, "status", None)
    return str(getattr(status, "value", status) or "Unknown")


@translate_errors
class AzureMLJobRunner:
    """JobRunner over Azure ML command jobs (azure-ai-ml's `MLClient.jobs`)."""

    def __init__(
        self,
        ml_client: Any,
        arm: ArmRest,
        store: ArtifactStore,
        cfg: AzureOutputs,
        *,
        poll_seconds: float = 15.0,
        timeout_seconds: int = 21600,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.ml = ml_client
        self.arm = arm
        self.store = store
        self.cfg = cfg
        self.poll_seconds = poll_seconds
        self.timeout_seconds = timeout_seconds
        self.sleep = sleep

    def run_training(
        self, spec: ModelSpec, data_uri: str, output_key: str, *, progress: Progress | None = None
    ) -> JobResult:
        job = self.submit(spec, data_uri, output_key, progress=progress)
        try:
            self.wait(job, progress=progress)
        except (KeyboardInterrupt, SystemExit):  # the job stops with its caller
            self.stop(job)
            raise
        return self.collect(job, output_key, progress=progress)

    def stop(self, job: str) -> None:
        with contextlib.suppress(AzureError):  # already ended, or gone
            self.ml.jobs.begin_cancel(job)

    # -- submit ----------------------------------------------------------------------------
    def _environment_checked(self) -> str:
        """The stack's environment, `azureml:<name>:<version>`, known to exist: a job in a
        missing one fails only after it is queued, with a less helpful message."""
        reference = self.cfg.training_environment
        parts = reference.split(":")
        if len(parts) != 3 or parts[0] != "azureml" or not all(parts[1:]):
            raise ConfigError(
                f"stack output training_environment must be azureml:<name>:<version>, "
                f"got {reference!r}"
            )
        try:
            self.ml.environments.get(name=parts[1], version=parts[2])
        except ResourceNotFoundError:
            raise ConfigError(
                f"Azure ML environment {parts[1]}:{parts[2]} (training_environment) does not "
                f"exist in workspace {self.cfg.workspace_name}"
            ) from None
        return reference

    def ship_code(self, spec: ModelSpec, output_key: str) -> str:
        """The code version's ARM id, the code uploaded through the store when it is new."""
        files = packaging.source_files(spec)
        version = code_version(files)
        path = f"{self.arm.workspace_id}/codes/{CODE_NAME}/versions/{version}"
        with contextlib.suppress(ResourceNotFoundError):
            self.arm.get(path)
            return path  # the same code was shipped before
        for name, data in sorted(files.items()):
            self.store.put_bytes(layout.code_key(output_key, name), data)
        code_uri = self.store.uri_for(layout.code_key(output_key, "")).rstrip("/") + "/"
        body = {
            "properties": {
                "codeUri": code_uri,
                "isAnonymous": False,
                "description": f"Tandem's training code ({len(files)} files)",
                "tags": {"tandem:model": spec.name},
            }
        }
        try:
            self.arm.put(path, body)
        except HttpResponseError:
            # another caller shipped the same code a moment before (Azure ML refuses to
            # move a version's path): theirs is the same content
            self.arm.get(path)
        return path

    def submit(
        self, spec: ModelSpec, data_uri: str, output_key: str, *, progress: Progress | None = None
    ) -> str:
        """Stage the data and the code, create the command job; return its name."""
        from azure.ai.ml import Input, Output, command
        from azure.ai.ml.entities import ManagedIdentityConfiguration

        name = job_name(self.cfg.name_prefix, output_key)
        with contextlib.suppress(ResourceNotFoundError):
            self.ml.jobs.get(name)
            if progress:
                progress(f"job {name}: already submitted, following it")
            return name  # the same output key was submitted before (a retried call)
        environment = self._environment_checked()
        if progress:
            progress(f"job {name}: staging data and code")
        data = packaging.stage_dataset(self.store, spec, data_uri)
        code = self.ship_code(spec, output_key)
        output = self.store.uri_for(layout.output_key(output_key)).rstrip("/") + "/"
        variables = {"TANDEM_CODE_VERSION": training.code_version()}
        if self.cfg.mlflow_tracking_uri:
            variables[tracking.URI_ENV] = self.cfg.mlflow_tracking_uri
        job = command(
            name=name,
            display_name=name,
            experiment_name=f"{self.cfg.name_prefix}-{spec.name}",
            description=f"Tandem training of {spec.name} into {output_key}",
            command=(
                f"python -m ml.train --spec {shlex.quote(packaging.spec_path_in_job(spec))} "
                "--data ${{inputs.data}} --model-dir ${{outputs.model}} "
                f"--data-uri {shlex.quote(data)} --run-id {shlex.quote(name)}"
            ),
            code=code,
            inputs={"data": Input(type="uri_file", path=job_path(data))},
            outputs={"model": Output(type="uri_folder", path=job_path(output), mode="upload")},
            environment=environment,
            compute=self.cfg.compute_name,
            identity=ManagedIdentityConfiguration(client_id=self.cfg.training_identity_client_id),
            environment_variables=variables,
            timeout=self.timeout_seconds,  # Azure ML stops the job after this
            tags={
                "tandem:model": spec.name,
                "tandem:stack": self.cfg.stack,
                "tandem:output-key": output_key,
            },
        )
        self.ml.jobs.create_or_update(job)
        if progress:
            progress(f"job {name}: submitted to {self.cfg.compute_name} ({environment})")
        return name

    # -- wait ------------------------------------------------------------------------------
    def reason(self, job: str) -> str:
        """Why a job failed, from the workspace's run history (what the studio shows)."""
        try:
            workspace = self.ml.workspaces.get(self.cfg.workspace_name)
            api = self.arm.get_url(workspace.discovery_url)["api"].rstrip("/")
            details = self.arm.get_url(
                f"{api}/history/v1.0{self.arm.workspace_id}/runs/{job}/details"
            )
        except (AzureError, KeyError, TypeError) as exc:
            return f"no reason available ({type(exc).__name__})"
        error = (details.get("error") or {}).get("error") or {}
        message = str(error.get("message") or "no reason given").strip()
        return f"{error['code']}: {message}" if error.get("code") else message

    def wait(self, job: str, *, progress: Progress | None = None) -> Any:
        """Poll until the job ends; return it. Failed, canceled or lost: TandemError."""
        # Azure ML stops the job at its timeout; allow for queueing and scaling up too
        deadline = time.monotonic() + self.timeout_seconds + 3600
        last = None
        # a short job is seen ending soon after it does; a long one costs a poll a period
        interval = min(FIRST_POLL_SECONDS, self.poll_seconds)
        while True:
            found = self.ml.jobs.get(job)
            status = _status(found)
            if progress and status != last:
                progress(f"job {job}: {status}")
            last = status
            if status == COMPLETED:
                return found
            if status in ENDED:
                where = getattr(found, "studio_url", None) or self.cfg.workspace_name
                raise TandemError(
                    f"training job {job} {status.lower()}: {self.reason(job)} (studio: {where})"
                )
            if time.monotonic() > deadline:
                self.stop(job)
                raise TandemError(f"training job {job} still {status} after the deadline")
            self.sleep(interval)
            interval = min(interval * 2, self.poll_seconds)

    # -- collect ---------------------------------------------------------------------------
    def collect(self, job: str, output_key: str, *, progress: Progress | None = None) -> JobResult:
        """Verify the artifact the job wrote and store it under `output_key`."""
        found = self.ml.jobs.get(job)
        if _status(found) != COMPLETED:
            raise TandemError(f"training job {job} is {_status(found)}, not {COMPLETED}")
        written = self.store.uri_for(layout.output_key(output_key))
        if progress:
            progress(f"job {job}: collecting {written}")
        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self.store.get_artifact(written, Path(tmp) / "model")  # verified
            except NotFoundError:
                raise TandemError(
                    f"training job {job} completed but wrote no artifact to {written}"
                ) from None
            uri = self.store.put_artifact(local, output_key)
            card = json.loads((local / artifact.CARD).read_text())
        return JobResult(
            job_id=job,
            status=COMPLETED,
            artifact_uri=uri,
            card=card,
            logs_uri=str(getattr(found, "studio_url", "") or ""),
        )

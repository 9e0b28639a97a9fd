"""What a client of the stack's SageMaker MLflow tracking server may call: the MLflow REST
calls of Tandem's mirror (ml/tracking.py), and nothing else.

SageMaker authorizes each MLflow REST call against the IAM action named after its MLflow
RPC (`sagemaker-mlflow:<Rpc>`, Service Authorization Reference, "Amazon SageMaker with
MLflow"), on the tracking server's ARN. `MIRROR_CALLS` maps each RPC the mirror makes to
its action; tests/integration/test_mlflow.py records the calls a whole lifecycle makes
against a real MLflow server and holds this table to exactly them.

Not granted: `sagemaker-mlflow:AccessUI` (people browse; the mirror does not),
`sagemaker:CreatePresignedMlflowTrackingServerUrl` (a browser login URL for the UI; the
plugin signs every REST call with SigV4 and builds the server's URL from its ARN, no call
needed), any Delete* but the alias the mirror moves, and the deprecated stage transitions.
Artifacts do not pass through the server: the client writes them to the artifact store,
``s3://<models bucket>/mlflow/`` (`contract.layout.MLFLOW`), with its own S3 permissions.
"""

from __future__ import annotations

from infra.aws.policies.statements import Statement, allow

# MLflow RPC (mlflow/protos/service.proto, model_registry.proto) -> IAM action.
MIRROR_CALLS = {
    # find or create the model's experiment, find the run of a Tandem run id
    "GetExperimentByName": "sagemaker-mlflow:GetExperimentByName",
    "CreateExperiment": "sagemaker-mlflow:CreateExperiment",
    "SearchRuns": "sagemaker-mlflow:SearchRuns",
    # log the run: tags, params, metrics in batches; end it
    "CreateRun": "sagemaker-mlflow:CreateRun",
    "GetRun": "sagemaker-mlflow:GetRun",
    "LogBatch": "sagemaker-mlflow:LogBatch",
    "SetTag": "sagemaker-mlflow:SetTag",
    "UpdateRun": "sagemaker-mlflow:UpdateRun",
    # log the model (MLflow 3 logged models): create, link to the run, finalize; MLflow
    # reads the run's metric history to attach it to the model. The reference lists no
    # CreateLoggedModel action: creating one is logging a model (LogModel).
    "CreateLoggedModel": "sagemaker-mlflow:LogModel",
    "GetLoggedModel": "sagemaker-mlflow:GetLoggedModel",
    "FinalizeLoggedModel": "sagemaker-mlflow:FinalizeLoggedModel",
    "LogOutputs": "sagemaker-mlflow:LogOutputs",
    "GetMetricHistory": "sagemaker-mlflow:GetMetricHistory",
    # TANDEM_MLFLOW_REGISTRY=1: the version, its status tag, the champion alias
    "SearchRegisteredModels": "sagemaker-mlflow:SearchRegisteredModels",
    "CreateRegisteredModel": "sagemaker-mlflow:CreateRegisteredModel",
    "GetRegisteredModel": "sagemaker-mlflow:GetRegisteredModel",
    "SearchModelVersions": "sagemaker-mlflow:SearchModelVersions",
    "CreateModelVersion": "sagemaker-mlflow:CreateModelVersion",
    # polled by MLflow while a new version is still PENDING_REGISTRATION
    "GetModelVersion": "sagemaker-mlflow:GetModelVersion",
    "SetModelVersionTag": "sagemaker-mlflow:SetModelVersionTag",
    "SetRegisteredModelAlias": "sagemaker-mlflow:SetRegisteredModelAlias",
    # only when no approved version is mirrored any more (the champion was archived)
    "DeleteRegisteredModelAlias": "sagemaker-mlflow:DeleteRegisteredModelAlias",
}
MIRROR_ACTIONS = tuple(sorted(set(MIRROR_CALLS.values())))


def use_tracking_server(sid: str, tracking_server_arn: str) -> Statement:
    """The mirror's calls on exactly one tracking server."""
    return allow(sid, list(MIRROR_ACTIONS), tracking_server_arn)

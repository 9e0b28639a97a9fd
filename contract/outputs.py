"""Stack outputs per cloud: the whole contract between a Pulumi program and an adapter.

`required` are exported by every stack of the cloud and read by its adapter; `optional` are
exported by some stacks (a feature turned on) and read when present; `informational` are
exported for people and tools (alarm topics, image repositories) and read by no adapter.
The output-contract test holds each side to exactly these lists.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CLOUD, STACK = "cloud", "stack"
# Not exported by any program: added by hand (or by tests) to point every client of an
# adapter at an emulator (moto, LocalStack, Azurite).
ENDPOINT_URL = "endpoint_url"
# Azure only, likewise never exported: where the Azure Resource Manager, Azure ML, Key Vault
# and Azure Monitor calls go instead of Azure (a loopback fake in the tests).
MANAGEMENT_URL = "management_url"


@dataclass(frozen=True)
class OutputContract:
    cloud: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    informational: tuple[str, ...] = ()

    @property
    def read(self) -> tuple[str, ...]:
        """Every key the adapter reads."""
        return (*self.required, *self.optional)

    @property
    def exported(self) -> tuple[str, ...]:
        """Every key a stack with every feature on exports."""
        return (*self.required, *self.optional, *self.informational)

    def check_exported(self, keys: Iterable[str], exporter: str) -> None:
        """What a program exports is exactly the contract (optional keys may be absent): a key
        added on one side only fails the program at preview, naming what differs."""
        have = set(keys)
        expected = {*self.required, *self.informational}
        if have - set(self.optional) != expected:
            raise AssertionError(
                f"{exporter}: keys {sorted(have)} do not match contract.outputs."
                f"{self.cloud.upper()} (missing {sorted(expected - have)}, "
                f"unknown {sorted(have - set(self.exported))})"
            )

    def missing(self, outputs: object) -> list[str]:
        """Required keys absent (or empty) in `outputs`, in contract order."""
        get = getattr(outputs, "get", None)
        if get is None:
            return list(self.required)
        return [k for k in self.required if get(k) in (None, "")]


# The embedded local stack (ml/clouds/local.py writes these into <home>/<stack>/outputs.json).
LOCAL = OutputContract(
    cloud="local",
    required=(CLOUD, STACK, "root"),
    optional=(ENDPOINT_URL,),
)

# An AWS stack (infra/aws/platform.py exports these; ml/clouds/aws/ reads them).
ENDPOINT_KEYS = ("function_name", "alias", "url")  # each entry of AWS's `endpoints`
AWS = OutputContract(
    cloud="aws",
    required=(
        CLOUD,
        STACK,
        "region",
        "name_prefix",
        "kms_key_arn",
        "data_bucket",
        "models_bucket",
        "sagemaker_role_arn",
        "model_package_groups",
        # {model: {"function_name", "alias", "url"}}: one serving function per model
        "endpoints",
        "metric_namespace",
        "training_image_uri",
        # the serving container (deploy/Dockerfile) the model packages name for hosting
        "serving_image_uri",
        "pseudonym_secret_arn",
    ),
    optional=("mlflow_tracking_server_arn",),
    informational=(
        "logs_bucket",
        "lambda_role_arns",  # {model: role ARN}
        "alarm_topic_arn",
        "alarm_names",
        "training_image_repository_url",
        "serving_image_repository_url",
        "lambda_code_key",  # the serving functions' code archive in the models bucket
        "ci_role_arn",
    ),
)

# An Azure stack (infra/azure/ exports these; ml/clouds/azure/ reads them).
AZURE_ENDPOINT_KEYS = ("function_app", "url")  # each entry of Azure's `endpoints`
AZURE = OutputContract(
    cloud="azure",
    required=(
        CLOUD,
        STACK,
        "location",
        "name_prefix",
        "subscription_id",
        "resource_group",
        # https://<account>.blob.core.windows.net
        "storage_account_url",
        # {role: container name} for every role in contract.layout.AZURE_CONTAINERS
        "containers",
        "workspace_name",
        "compute_name",
        # the user-assigned identity training jobs run as (its client id)
        "training_identity_client_id",
        # the Azure ML environment jobs run in: azureml:<name>:<version>
        "training_environment",
        # {model: {"function_app", "url"}}: one Flex Consumption function app per model
        "endpoints",
        # the resource Tandem's custom metrics are published on (and alerted from)
        "metrics_resource_id",
        "metric_namespace",
        "key_vault_url",
        "pseudonym_secret_name",
    ),
    optional=("mlflow_tracking_uri",),
    informational=(
        "tenant_id",
        "storage_account_name",
        "key_vault_name",
        "log_analytics_workspace_id",
        "application_insights_name",
        "container_registry_login_server",
        "action_group_id",
        "alert_names",
        "function_identity_client_ids",  # {model: client id}
        "ci_identity_client_id",
        # {model: blob container}: each function app's deployment package (one per app)
        "functions_package_container",
    ),
)

BY_CLOUD = {c.cloud: c for c in (LOCAL, AWS, AZURE)}

# A stack with both clouds exports the AWS outputs at the top level and the Azure outputs as
# one mapping under this key, beside them.
AZURE_IN_DUAL_STACK = "azure"


def cloud_half(cloud: str, outputs: Mapping[str, Any]) -> dict[str, Any]:
    """``cloud``'s half of a stack's outputs: the whole mapping for a single-cloud stack of
    that cloud, the top level (without the nested Azure half) or the nested Azure half for a
    stack with both. ValueError when the stack has no such half."""
    own = outputs.get(CLOUD)
    nested = outputs.get(AZURE_IN_DUAL_STACK)
    if isinstance(nested, str):  # a CLI may hand a nested value over JSON-encoded
        try:
            nested = json.loads(nested)
        except ValueError:
            nested = None
    if own == cloud:
        return {k: v for k, v in outputs.items() if k != AZURE_IN_DUAL_STACK}
    if cloud == AZURE.cloud and isinstance(nested, Mapping) and nested.get(CLOUD) == cloud:
        return dict(nested)
    has = [c for c in (own, nested.get(CLOUD) if isinstance(nested, Mapping) else None) if c]
    raise ValueError(
        f"stack outputs hold no {cloud!r} half (clouds: {', '.join(map(str, has)) or 'none'})"
    )

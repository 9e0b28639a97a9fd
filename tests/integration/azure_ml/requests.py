"""Every request each part of the Azure adapter makes, as (method, path template) in the
fake's terms (tests/azure_fakes.py): what its identities need Azure RBAC actions for. The
tests hold the adapter to exactly these sets, so a new call shows up here first.
"""

from __future__ import annotations

from tests.azure_fakes import AzureFake

WS, SITE = AzureFake.WS, AzureFake.SITE

REGISTRY = {
    ("GET", f"{WS}/models"),  # list_models
    ("GET", f"{WS}/models/{{name}}"),  # the container's nextVersion (create)
    ("GET", f"{WS}/models/{{name}}/versions"),  # list, and the latest before a create
    ("GET", f"{WS}/models/{{name}}/versions/{{version}}"),
    ("PUT", f"{WS}/models/{{name}}/versions/{{version}}"),  # create, tags, archive
}
ENDPOINT = {
    ("POST", f"{SITE}/config/appsettings/list"),
    ("PUT", f"{SITE}/config/appsettings"),
    ("POST", f"{SITE}/host/default/listkeys"),  # the function key, for invoke
}
METRICS = {("POST", "{resource_id}/metrics")}
SECRETS = {
    ("GET", "/secrets/{name}/versions"),
    ("GET", "/secrets/{name}/{version}"),
    ("PUT", "/secrets/{name}"),  # the first reader only
}
JOBS = {
    ("GET", f"{WS}/jobs/{{name}}"),  # a retried submission, then the polls
    ("GET", f"{WS}/environments/{{name}}/versions/{{version}}"),
    ("GET", f"{WS}/codes/{{name}}/versions/{{version}}"),
    ("PUT", f"{WS}/codes/{{name}}/versions/{{version}}"),
    ("PUT", f"{WS}/jobs/{{name}}"),
}
JOB_FAILED = {  # why a job failed: the workspace's run history
    ("GET", WS),
    ("GET", "/discovery"),
    ("GET", f"/history/v1.0{WS}/runs/{{run}}/details"),
}
JOB_CANCELED = {("POST", f"{WS}/jobs/{{name}}/cancel")}

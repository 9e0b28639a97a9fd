"""The whole program: an Azure stack exports exactly `contract.outputs.AZURE` (and the
adapter parses it), each value is its component's own; a stack with both clouds builds both
halves in one program and nests the Azure outputs beside the AWS ones; `infra/__main__.py`
builds Azure stacks instead of refusing them."""

from __future__ import annotations

import json
import runpy

import pulumi
import pytest

from contract import layout
from contract.outputs import AWS, AZURE, AZURE_IN_DUAL_STACK, cloud_half
from infra.azure.names import AzureNames
from tests.infra.azure.conftest import ROOT, azure_only, build_stack, stack_file
from tests.infra.azure_mocks import SUBSCRIPTION, TENANT


def _difference(got: set[str], expected: set[str]) -> str:
    return f"missing {sorted(expected - got)}, extra {sorted(got - expected)}"


@pytest.fixture(scope="module")
def dual(azure_session):
    """staging's stack file as it is: both clouds in one program."""
    return build_stack(azure_session, "staging", stack_file("staging"))


@pytest.mark.parametrize("stack", ["prod", "staging", "dev"])
def test_outputs_are_exactly_the_contract(stack, request):
    built = request.getfixturevalue(stack)
    out = built.outputs
    expected = {*AZURE.required, *AZURE.informational}
    if built.cfg.azure.mlflow:
        expected.add("mlflow_tracking_uri")
    assert set(out) == expected, f"{stack}: {_difference(set(out), expected)}"
    assert not AZURE.missing(out), f"{stack}: required outputs empty: {AZURE.missing(out)}"
    n = AzureNames.of(built.cfg)
    assert (out["cloud"], out["stack"], out["name_prefix"]) == ("azure", stack, n.prefix)
    assert out["location"] == built.cfg.azure.location
    assert (out["subscription_id"], out["tenant_id"]) == (SUBSCRIPTION, TENANT)
    assert out["resource_group"] == n.resource_group
    assert out["storage_account_url"] == f"https://{n.storage_account}.blob.core.windows.net"
    assert out["storage_account_name"] == n.storage_account
    assert out["containers"] == {role: n.container(role) for role in layout.AZURE_CONTAINERS}
    assert out["key_vault_url"] == f"https://{n.key_vault}.vault.azure.net/"
    assert out["key_vault_name"] == n.key_vault
    assert out["pseudonym_secret_name"] == n.pseudonym_secret
    assert out["application_insights_name"] == n.application_insights
    assert out["log_analytics_workspace_id"].endswith(
        f"/Microsoft.OperationalInsights/workspaces/{n.log_analytics}"
    )
    assert out["container_registry_login_server"] == f"{n.container_registry}.azurecr.io"
    assert set(out["function_identity_client_ids"]) == set(built.cfg.models)
    assert set(out["alert_names"]) and all(a.startswith(f"{n.prefix}-") for a in out["alert_names"])
    if built.cfg.azure.mlflow:
        assert out["mlflow_tracking_uri"].startswith("azureml://")


def test_the_adapter_parses_what_the_program_exports(prod, staging):
    from ml.clouds.azure.common import AzureOutputs

    for built in (prod, staging):
        parsed = AzureOutputs.parse(json.loads(json.dumps(built.outputs)))
        assert parsed.containers == built.outputs["containers"]
        assert {m: (e.function_app, e.url) for m, e in parsed.endpoints.items()} == {
            m: (e["function_app"], e["url"]) for m, e in built.outputs["endpoints"].items()
        }
        assert parsed.resource_group_id == (
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{built.outputs['resource_group']}"
        )
        assert parsed.mlflow_tracking_uri == built.outputs.get("mlflow_tracking_uri")


@pulumi.runtime.test
def test_outputs_are_the_components_own_values(prod):
    p = prod.azure

    def check(values):
        urn, expected = values
        for key, value in expected.items():
            assert prod.outputs[key] == value, (
                f"{urn}: output {key} is {prod.outputs[key]!r}, component has {value!r}"
            )

    return pulumi.Output.all(
        p.urn,
        pulumi.Output.all(
            metrics_resource_id=p.insights.application_insights.id,
            log_analytics_workspace_id=p.insights.log_analytics.id,
            training_identity_client_id=p.identities.training.client_id,
            ci_identity_client_id=p.identities.ci.client_id,
            action_group_id=p.monitoring.action_group.id,
            workspace_name=p.workspace.workspace.name,
            compute_name=p.workspace.compute.name,
            training_environment=p.workspace.environment_uri,
            mlflow_tracking_uri=p.workspace.workspace.ml_flow_tracking_uri,
            function_identity_client_ids=pulumi.Output.all(
                **{m: i.client_id for m, i in p.identities.functions.items()}
            ),
        ),
    ).apply(check)


def test_a_stack_with_both_clouds_builds_both_halves_and_nests_azure(dual):
    assert dual.cfg.clouds == ("aws", "azure")
    assert dual.program.aws is not None and dual.program.azure is not None
    out = json.loads(json.dumps(dual.outputs))  # as the CLI hands it over
    expected_top = {*AWS.required, *AWS.informational, AZURE_IN_DUAL_STACK}
    assert set(out) == expected_top, _difference(set(out), expected_top)
    aws, azure = cloud_half("aws", out), cloud_half("azure", out)
    assert set(aws) == {*AWS.required, *AWS.informational}
    assert set(azure) == {*AZURE.required, *AZURE.informational}
    assert (aws["cloud"], azure["cloud"]) == ("aws", "azure")
    assert aws["stack"] == azure["stack"] == "staging"
    assert set(aws["endpoints"]) == set(azure["endpoints"]) == set(dual.cfg.models)
    # Both halves were created: AWS and azure-native resources in one program.
    assert dual.all("aws:lambda/function:Function") and dual.all("web:WebApp")


def test_cloud_half_of_single_cloud_stacks_is_the_whole_mapping(prod):
    assert cloud_half("azure", prod.outputs) == prod.outputs
    with pytest.raises(ValueError, match=r"no 'aws' half \(clouds: azure\)"):
        cloud_half("aws", prod.outputs)
    aws_only = {"cloud": "aws", "stack": "dev"}
    assert cloud_half("aws", aws_only) == aws_only
    with pytest.raises(ValueError, match=r"no 'azure' half \(clouds: aws\)"):
        cloud_half("azure", aws_only)
    nested_json = {"cloud": "aws", AZURE_IN_DUAL_STACK: json.dumps({"cloud": "azure", "x": 1})}
    assert cloud_half("azure", nested_json) == {"cloud": "azure", "x": 1}


def _run_main(monkeypatch, raw: dict) -> dict:
    """`infra/__main__.py` as `pulumi up` runs it, with ``raw`` as the stack config."""
    pulumi.runtime.set_all_config(
        {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}
    )
    exported: dict = {}
    monkeypatch.setattr(pulumi, "export", lambda key, value: exported.__setitem__(key, value))
    try:
        runpy.run_path(str(ROOT / "infra" / "__main__.py"), run_name="__main__")
    finally:
        pulumi.runtime.set_all_config({})
    return exported


def test_main_builds_an_azure_stack_and_exports_the_contract(monkeypatch):
    raw = azure_only("dev", models=["churn"], azure={"mlflow": True})

    @pulumi.runtime.test
    def run():
        exported = _run_main(monkeypatch, raw)
        assert set(exported) == set(AZURE.exported), _difference(set(exported), set(AZURE.exported))

        def check(values):
            assert not AZURE.missing(values), AZURE.missing(values)
            assert values["cloud"] == "azure" and values["stack"] == "dev", values
            assert set(values["endpoints"]) == {"churn"}, values["endpoints"]

        return pulumi.Output.all(**exported).apply(check)

    run()

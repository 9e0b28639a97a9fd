"""One Flex Consumption plan and function app per model: the Azure Functions baseline,
identity-based storage and telemetry, the deployment package, settings the deploy owns."""

from __future__ import annotations

from contract import serving
from infra.azure.names import AzureNames
from tests.infra.azure_mocks import resource_group_id

# What would put a credential into a setting: an account key, a SAS, a key-based string.
KEY_MARKERS = ("AccountKey=", "SharedAccessSignature", "sig=", "DefaultEndpointsProtocol")


def apps(built) -> dict[str, dict]:
    """model -> the inputs of its function app."""
    return {_model_of(r): r.inputs for r in built.all("web:WebApp")}


def _model_of(record) -> str:
    return next(
        s["value"]
        for s in record.inputs["siteConfig"]["appSettings"]
        if s["name"] == serving.ENV_MODEL_NAME
    )


def settings(app: dict) -> dict[str, str]:
    return {s["name"]: s["value"] for s in app["siteConfig"]["appSettings"]}


def test_one_flex_consumption_plan_and_app_per_model(prod):
    n = AzureNames.of(prod.cfg)
    plans = {r.inputs["name"]: r.inputs for r in prod.all("web:AppServicePlan")}
    assert set(plans) == {n.plan(m) for m in prod.cfg.models}
    for plan in plans.values():
        assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
        assert plan["kind"] == "functionapp" and plan["reserved"] is True  # Linux
    found = apps(prod)
    assert set(found) == set(prod.cfg.models)
    for model, app in found.items():
        assert app["name"] == n.function_app(model)
        assert app["kind"] == "functionapp,linux"
        assert app["serverFarmId"].endswith(f"/Microsoft.Web/serverfarms/{n.plan(model)}")


def test_apps_meet_the_functions_baseline(prod, staging):
    for built in (prod, staging):
        for model, app in apps(built).items():
            where = f"{built.cfg.stack}/{model}"
            site = app["siteConfig"]
            assert app["httpsOnly"] is True, where  # CKV_AZURE_70
            assert site["minTlsVersion"] == "1.2", where  # CKV_AZURE_145
            assert site["scmMinTlsVersion"] == "1.2", where
            assert site["ftpsState"] == "Disabled", where  # CIS 9.10
            assert site["remoteDebuggingEnabled"] is False, where  # CKV_AZURE_72
            origins = site["cors"]["allowedOrigins"]
            assert "*" not in origins and not origins, where  # CKV_AZURE_62
            runtime = app["functionAppConfig"]["runtime"]
            assert runtime == {"name": "python", "version": "3.11"}, where
    # Basic-auth publishing (FTP and SCM) is off for every app: deploys sign in with Entra.
    for token in ("web:WebAppFtpAllowed", "web:WebAppScmAllowed"):
        switches = prod.all(token)
        assert len(switches) == len(prod.cfg.models), token
        assert all(s.inputs["allow"] is False for s in switches), token


def test_each_app_runs_as_its_own_identity_with_identity_based_storage(prod):
    n = AzureNames.of(prod.cfg)
    identities = {
        r.inputs["resourceName"]: r for r in prod.all("managedidentity:UserAssignedIdentity")
    }
    account = n.storage_account
    for model, app in apps(prod).items():
        identity = identities[n.function_identity(model)]
        rid = (
            f"{resource_group_id(n.resource_group)}/providers/Microsoft.ManagedIdentity/"
            f"userAssignedIdentities/{n.function_identity(model)}"
        )
        assert app["identity"] == {"type": "UserAssigned", "userAssignedIdentities": [rid]}
        s = settings(app)
        client_id = identity.outputs["clientId"]
        assert s["AzureWebJobsStorage__accountName"] == account
        assert s["AzureWebJobsStorage__credential"] == "managedidentity"
        assert s["AzureWebJobsStorage__clientId"] == client_id
        assert s["AZURE_CLIENT_ID"] == client_id
        assert s["AzureFunctionsWebHost__hostid"] == n.host_id(model)
        assert "AzureWebJobsStorage" not in s, "a connection string would carry the key"
        assert s["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
            f"Authorization=AAD;ClientId={client_id}"
        )
        assert s["APPLICATIONINSIGHTS_CONNECTION_STRING"].startswith("InstrumentationKey=")
        for name, value in s.items():
            assert not any(m in value for m in KEY_MARKERS), f"{model}: {name} holds a key"


def test_initial_settings_name_the_model_and_where_captures_go(prod):
    n = AzureNames.of(prod.cfg)
    captures = f"https://{n.storage_account}.blob.core.windows.net/{n.container('captures')}"
    host_ids = set()
    for model, app in apps(prod).items():
        s = settings(app)
        assert s[serving.ENV_MODEL_NAME] == model
        assert s[serving.ENV_CAPTURE_URI] == captures
        assert serving.ENV_MODEL_URI not in s, "the deploy sets the model, not Pulumi"
        host_ids.add(s["AzureFunctionsWebHost__hostid"])
    assert len(host_ids) == len(prod.cfg.models), "apps sharing an account need distinct ids"


def test_pulumi_leaves_the_settings_the_deploy_writes(prod):
    for record in prod.all("web:WebApp"):
        assert prod.ignored(record) == ["siteConfig.appSettings"], record.name


def test_package_comes_from_the_apps_own_container_read_with_its_identity(prod):
    n = AzureNames.of(prod.cfg)
    for model, app in apps(prod).items():
        storage = app["functionAppConfig"]["deployment"]["storage"]
        assert storage["type"] == "blobContainer"
        assert storage["value"] == (
            f"https://{n.storage_account}.blob.core.windows.net/{n.package_container(model)}"
        )
        auth = storage["authentication"]
        assert auth["type"] == "UserAssignedIdentity"
        assert (
            auth["userAssignedIdentityResourceId"] == app["identity"]["userAssignedIdentities"][0]
        )
    assert prod.outputs["functions_package_container"] == {
        m: n.package_container(m) for m in prod.cfg.models
    }


def test_plan_sizes_come_from_config(staging):
    for app in apps(staging).values():
        scale = app["functionAppConfig"]["scaleAndConcurrency"]
        assert (scale["instanceMemoryMB"], scale["maximumInstanceCount"]) == (4096, 250)


def test_prod_apps_integrate_with_the_functions_subnet(prod, staging):
    subnet = prod.cfg.azure.network.functions_subnet_id
    for app in apps(prod).values():
        assert app["virtualNetworkSubnetId"] == subnet
        assert app["siteConfig"]["vnetRouteAllEnabled"] is True
    for app in apps(staging).values():
        assert "virtualNetworkSubnetId" not in app


def test_endpoints_output_names_each_app_and_its_https_url(prod):
    n = AzureNames.of(prod.cfg)
    assert prod.outputs["endpoints"] == {
        m: {
            "function_app": n.function_app(m),
            "url": f"https://{n.function_app(m)}.azurewebsites.net",
        }
        for m in prod.cfg.models
    }

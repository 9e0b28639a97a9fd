"""One Flex Consumption plan and function app per model: the Azure twin of the Lambdas.

Flex Consumption hosts one app per plan (FC1); it has no deployment slots, so a canary is
split by the inference core from app settings (`contract.serving`). Each app:

- runs Python 3.11 on Linux (``kind="functionapp,linux"``), scales from 0 to
  ``max_instances`` instances of ``instance_memory_mb``;
- is HTTPS only, TLS 1.2 (site and SCM), FTPS off and FTP/SCM basic-auth publishing off,
  remote debugging off, no CORS origin at all (CKV_AZURE_70/145/62/72, CIS 9.10);
- runs as its model's user-assigned identity; its host storage is identity-based
  (``AzureWebJobsStorage__*``: no key in any connection string), and its Application
  Insights telemetry signs in with Entra ID (local auth is off on the component);
- takes its deployment package from its own blob container, read with that identity
  (`tandem bundle --target azure` builds the package; one-deploy with a remote build,
  `az functionapp deployment source config-zip --build-remote true`, puts it there: the
  program deploys no code, so an app answers nothing until then);
- in prod, integrates with the functions' subnet (the storage account and Key Vault deny
  other networks).

The initial app settings name the model and where captures go. Tandem's deploy then writes
the model's settings (``MODEL_URI``, canary) through ARM, read-modify-write; Pulumi ignores
``siteConfig.appSettings`` after creation so an ``up`` never rolls a deploy back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
from pulumi import Input, Output, ResourceOptions
from pulumi_azure_native import web

from contract import serving
from infra.azure.names import AzureNames
from infra.common.checks import check_models

PYTHON_VERSION = "3.11"
# Pulumi leaves these alone after creation: the deploy owns them.
APP_IGNORED = ["siteConfig.appSettings"]


def app_settings(
    *,
    model: str,
    storage_account_name: Input[str],
    client_id: Input[str],
    connection_string: Input[str],
    capture_uri: Input[str],
    host_id: str,
) -> list[web.NameValuePairArgs]:
    """The app's initial settings: identity-based storage and telemetry, the model's name."""
    settings: dict[str, Input[str]] = {
        # Identity-based host storage: account name + managed identity, no key anywhere.
        # https://learn.microsoft.com/en-us/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity
        "AzureWebJobsStorage__accountName": storage_account_name,
        "AzureWebJobsStorage__credential": "managedidentity",
        "AzureWebJobsStorage__clientId": client_id,
        # Apps sharing a storage account need distinct host ids (see AzureNames.host_id).
        "AzureFunctionsWebHost__hostid": host_id,
        # Telemetry with Entra ID: the component refuses its instrumentation key alone.
        # https://learn.microsoft.com/en-us/azure/azure-monitor/app/azure-ad-authentication
        "APPLICATIONINSIGHTS_CONNECTION_STRING": connection_string,
        "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": Output.concat(
            "Authorization=AAD;ClientId=", client_id
        ),
        # azure-identity's DefaultAzureCredential picks this user-assigned identity.
        "AZURE_CLIENT_ID": client_id,
        serving.ENV_MODEL_NAME: model,
        serving.ENV_CAPTURE_URI: capture_uri,
    }
    return [web.NameValuePairArgs(name=k, value=v) for k, v in settings.items()]


@dataclass
class ServingArgs:
    """Inputs of the serving component.

    identities: model -> (the app identity's resource id, its client id).
    package_container_urls: model -> ``https://<account>.blob.core.windows.net/<container>``.
    capture_uri: the captures container's URL (`contract.serving.ENV_CAPTURE_URI`).
    subnet_id: the functions' subnet (prod), else None.
    """

    names: AzureNames
    resource_group_name: Input[str]
    location: str
    models: list[str]
    identities: dict[str, tuple[Input[str], Input[str]]]
    package_container_urls: dict[str, Input[str]]
    storage_account_name: Input[str]
    connection_string: Input[str]
    capture_uri: Input[str]
    instance_memory_mb: int = 2048
    max_instances: int = 40
    subnet_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        check_models("Serving", self.models)
        for what, mapping in (
            ("identities", self.identities),
            ("package_container_urls", self.package_container_urls),
        ):
            missing = sorted(set(self.models) - set(mapping))
            if missing:
                raise ValueError(f"Serving: {what} lacks models {missing}")


@dataclass
class FunctionEndpoint:
    """One model's plan and app (and the switches that turn basic-auth publishing off)."""

    plan: web.AppServicePlan
    app: web.WebApp
    ftp_basic_auth: web.WebAppFtpAllowed
    scm_basic_auth: web.WebAppScmAllowed
    url: Output[str]


class Serving(pulumi.ComponentResource):
    """``endpoints``: model -> `FunctionEndpoint`."""

    endpoints: dict[str, FunctionEndpoint]

    def __init__(self, name: str, args: ServingArgs, opts: ResourceOptions | None = None) -> None:
        args.validate()
        super().__init__("tandem:azure:Serving", name, None, opts)
        child_opts = ResourceOptions.merge(opts, ResourceOptions(parent=self))
        names = args.names
        self.endpoints = {}
        for model in args.models:
            identity_id, client_id = args.identities[model]
            tags = {**args.tags, "tandem:model": model}
            plan = web.AppServicePlan(
                f"{name}-{model}-plan",
                name=names.plan(model),
                resource_group_name=args.resource_group_name,
                location=args.location,
                kind="functionapp",
                reserved=True,  # Linux
                sku=web.SkuDescriptionArgs(name="FC1", tier="FlexConsumption"),
                tags=tags,
                opts=child_opts,
            )
            app = web.WebApp(
                f"{name}-{model}-app",
                name=names.function_app(model),
                resource_group_name=args.resource_group_name,
                location=args.location,
                kind="functionapp,linux",
                server_farm_id=plan.id,
                https_only=True,
                client_affinity_enabled=False,
                public_network_access="Enabled",
                virtual_network_subnet_id=args.subnet_id,
                identity=web.ManagedServiceIdentityArgs(
                    type="UserAssigned", user_assigned_identities=[identity_id]
                ),
                function_app_config=web.FunctionAppConfigArgs(
                    deployment=web.FunctionsDeploymentArgs(
                        storage=web.FunctionsDeploymentStorageArgs(
                            type="blobContainer",
                            value=args.package_container_urls[model],
                            authentication=web.FunctionsDeploymentStorageAuthenticationArgs(
                                type="UserAssignedIdentity",
                                user_assigned_identity_resource_id=identity_id,
                            ),
                        )
                    ),
                    runtime=web.FunctionsRuntimeArgs(name="python", version=PYTHON_VERSION),
                    scale_and_concurrency=web.FunctionsScaleAndConcurrencyArgs(
                        instance_memory_mb=args.instance_memory_mb,
                        maximum_instance_count=args.max_instances,
                    ),
                ),
                site_config=web.SiteConfigArgs(
                    app_settings=app_settings(
                        model=model,
                        storage_account_name=args.storage_account_name,
                        client_id=client_id,
                        connection_string=args.connection_string,
                        capture_uri=args.capture_uri,
                        host_id=names.host_id(model),
                    ),
                    min_tls_version="1.2",
                    scm_min_tls_version="1.2",
                    ftps_state="Disabled",
                    remote_debugging_enabled=False,
                    http20_enabled=True,
                    cors=web.CorsSettingsArgs(allowed_origins=[], support_credentials=False),
                    vnet_route_all_enabled=args.subnet_id is not None,
                ),
                tags=tags,
                opts=ResourceOptions.merge(child_opts, ResourceOptions(ignore_changes=APP_IGNORED)),
            )
            in_app = ResourceOptions.merge(child_opts, ResourceOptions(parent=app))
            ftp = web.WebAppFtpAllowed(
                f"{name}-{model}-ftp-basic-auth",
                name=app.name,
                resource_group_name=args.resource_group_name,
                allow=False,
                opts=in_app,
            )
            scm = web.WebAppScmAllowed(
                f"{name}-{model}-scm-basic-auth",
                name=app.name,
                resource_group_name=args.resource_group_name,
                allow=False,
                opts=in_app,
            )
            url = app.default_host_name.apply(lambda host: f"https://{host}")
            self.endpoints[model] = FunctionEndpoint(plan, app, ftp, scm, url)
        self.register_outputs({"apps": {m: e.app.name for m, e in self.endpoints.items()}})

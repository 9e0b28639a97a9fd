"""The stack's user-assigned managed identities: one per job, none shared.

- ``storage_encryption``: what the storage account unwraps its customer-managed key with.
- ``workspace``: the Azure ML workspace's own identity (the service acts as it).
- ``training``: what a training job on the compute cluster runs as.
- ``functions[model]``: one per model's function app, so one endpoint cannot read another
  model's deployment package or act as another app.
- ``ci``: what GitHub Actions signs in as, through a federated credential that trusts one
  repository and one environment or branch (GitHub's OIDC token, no secret anywhere); the
  twin of the AWS CI role.

Identities hold no role here: `infra.azure.access` grants each its roles at the narrowest
scope, once the resources exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
from pulumi import Input, ResourceOptions
from pulumi_azure_native import managedidentity

from infra.azure.names import AzureNames
from infra.common.checks import check_models

# GitHub's OIDC issuer and the audience Entra ID expects for a federated credential:
# https://learn.microsoft.com/en-us/entra/workload-id/workload-identity-federation-create-trust
GITHUB_ISSUER = "https://token.actions.githubusercontent.com"
ENTRA_TOKEN_EXCHANGE_AUDIENCE = "api://AzureADTokenExchange"


@dataclass
class IdentitiesArgs:
    """Inputs of the identities component.

    github_subject: the ``sub`` claim CI's federated credential trusts
        (``repo:<owner>/<repo>:environment:<env>`` or ``...:ref:refs/heads/<branch>``);
        None: the stack has no CI identity.
    """

    names: AzureNames
    resource_group_name: Input[str]
    location: str
    models: list[str]
    github_subject: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        check_models("Identities", self.models)
        subject = self.github_subject
        if subject is not None and not subject.startswith("repo:"):
            raise ValueError(f"Identities: github_subject {subject!r} is not a GitHub sub claim")


class Identities(pulumi.ComponentResource):
    """``storage_encryption``, ``workspace``, ``training``, ``functions`` (per model), ``ci``
    (None without GitHub OIDC) and ``ci_federation``."""

    storage_encryption: managedidentity.UserAssignedIdentity
    workspace: managedidentity.UserAssignedIdentity
    training: managedidentity.UserAssignedIdentity
    functions: dict[str, managedidentity.UserAssignedIdentity]
    ci: managedidentity.UserAssignedIdentity | None
    ci_federation: managedidentity.FederatedIdentityCredential | None

    def __init__(
        self, name: str, args: IdentitiesArgs, opts: ResourceOptions | None = None
    ) -> None:
        args.validate()
        super().__init__("tandem:azure:Identities", name, None, opts)
        child_opts = ResourceOptions.merge(opts, ResourceOptions(parent=self))
        names = args.names

        def identity(logical: str, role: str) -> managedidentity.UserAssignedIdentity:
            return managedidentity.UserAssignedIdentity(
                f"{name}-{logical}",
                resource_name_=names.identity(role),
                resource_group_name=args.resource_group_name,
                location=args.location,
                tags={**args.tags, "tandem:identity": role},
                opts=child_opts,
            )

        self.storage_encryption = identity("storage-encryption", "storage-cmk")
        self.workspace = identity("workspace", "workspace")
        self.training = identity("training", "training")
        self.functions = {
            model: managedidentity.UserAssignedIdentity(
                f"{name}-function-{model}",
                resource_name_=names.function_identity(model),
                resource_group_name=args.resource_group_name,
                location=args.location,
                tags={**args.tags, "tandem:identity": "function", "tandem:model": model},
                opts=child_opts,
            )
            for model in args.models
        }
        self.ci = self.ci_federation = None
        if args.github_subject is not None:
            self.ci = identity("ci", "ci")
            self.ci_federation = managedidentity.FederatedIdentityCredential(
                f"{name}-ci-github",
                federated_identity_credential_resource_name="github-actions",
                resource_name_=self.ci.name,
                resource_group_name=args.resource_group_name,
                issuer=GITHUB_ISSUER,
                subject=args.github_subject,
                audiences=[ENTRA_TOKEN_EXCHANGE_AUDIENCE],
                opts=ResourceOptions.merge(child_opts, ResourceOptions(parent=self.ci)),
            )
        self.register_outputs(
            {
                "training_client_id": self.training.client_id,
                "ci_client_id": self.ci.client_id if self.ci is not None else "",
            }
        )

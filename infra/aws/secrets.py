"""The stack's pseudonymisation key: a Secrets Manager secret with no value from Pulumi.

The ML side keys personal-data pseudonyms (`contract.privacy`) with a per-stack secret.
Pulumi creates the secret, ``<prefix>/pseudonym-key``, encrypted with the stack's KMS key
(CKV_AWS_149), and sets NO value: the ML adapter initialises it once with PutSecretValue
and a fixed ClientRequestToken (idempotent: a second initialisation with the same token is
a no-op, a different value is refused), so the key never enters Pulumi state or the
program's outputs. Only the CI role (describe, initialise, read) and the Lambda role (read)
may touch it (`infra.aws.policies`), and the key policy lets them use the stack key
through Secrets Manager.

Deleting the secret destroys every pseudonym's link to its subject: outside dev it waits
the longest recovery window (30 days) so an accidental `pulumi destroy` can be undone.
https://docs.aws.amazon.com/secretsmanager/latest/apireference/API_DeleteSecret.html
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
from pulumi import Input, ResourceOptions

from infra.aws._checks import check_arn
from infra.aws.names import AwsNames
from infra.common.checks import check_name_prefix

MAX_RECOVERY_WINDOW_DAYS = 30


@dataclass
class PseudonymSecretArgs:
    """Inputs of the pseudonym key secret.

    name_prefix: stack-wide prefix; the secret is ``<prefix>/pseudonym-key``.
    kms_key_arn: the stack's customer-managed key, which encrypts the secret.
    recovery_window_days: days a deleted secret can be restored (0: deleted at once, for
        dev stacks that are torn down and rebuilt under the same name; else 7..30).
    tags: applied to the secret.
    """

    name_prefix: str
    kms_key_arn: Input[str]
    recovery_window_days: int = MAX_RECOVERY_WINDOW_DAYS
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        check_name_prefix("PseudonymSecret", self.name_prefix)
        check_arn("PseudonymSecret", "kms_key_arn", self.kms_key_arn)
        days = self.recovery_window_days
        if not isinstance(days, int) or not (days == 0 or 7 <= days <= MAX_RECOVERY_WINDOW_DAYS):
            raise ValueError(
                f"PseudonymSecret: recovery_window_days={days!r} must be 0 or in 7..30"
            )


class PseudonymSecret(pulumi.ComponentResource):
    """``secret``: the pseudonym key's Secrets Manager secret (no version, no value)."""

    secret: aws.secretsmanager.Secret

    def __init__(
        self, name: str, args: PseudonymSecretArgs, opts: ResourceOptions | None = None
    ) -> None:
        args.validate()
        super().__init__("tandem:aws:PseudonymSecret", name, None, opts)
        child_opts = ResourceOptions.merge(opts, ResourceOptions(parent=self))
        self.secret = aws.secretsmanager.Secret(
            f"{name}-secret",
            name=AwsNames(args.name_prefix).pseudonym_secret,
            description=(
                f"{args.name_prefix}: key of personal-data pseudonyms (HMAC-SHA256); "
                "initialised by the ML side, never by Pulumi"
            ),
            kms_key_id=args.kms_key_arn,
            recovery_window_in_days=args.recovery_window_days,
            tags={**args.tags, "tandem:secret": "pseudonym-key"},
            opts=child_opts,
        )
        self.register_outputs({"arn": self.secret.arn})

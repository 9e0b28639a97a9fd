"""The pseudonym key's secret: named per stack, encrypted with the stack's key (CKV_AWS_149),
and created without a value, so the key never enters Pulumi state."""

from __future__ import annotations

import pulumi
import pytest

from infra.aws.secrets import PseudonymSecret, PseudonymSecretArgs
from tests.infra.conftest import ACCOUNT, REGION

KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"


class Recording(pulumi.runtime.Mocks):
    """Records the type of every resource created (the conftest mocks echo inputs)."""

    def __init__(self, inner: pulumi.runtime.Mocks) -> None:
        self.inner = inner
        self.types: list[str] = []

    def new_resource(self, args):
        self.types.append(args.typ)
        return self.inner.new_resource(args)

    def call(self, args):
        return self.inner.call(args)


def make(**overrides) -> PseudonymSecret:
    args = {"name_prefix": "tandem-dev", "kms_key_arn": KEY, "tags": {"tandem:stack": "dev"}}
    args.update(overrides)
    return PseudonymSecret("secrets", PseudonymSecretArgs(**args))


@pulumi.runtime.test
def test_secret_is_named_per_stack_and_encrypted_with_the_stack_key():
    secret = make().secret

    def check(values):
        urn, name, key, window, tags = values
        assert name == "tandem-dev/pseudonym-key", f"{urn}: name {name!r}"
        assert key == KEY, f"{urn}: kms_key_id {key!r} (CKV_AWS_149: the stack's CMK)"
        assert window == 30, f"{urn}: recovery window {window!r}"
        assert tags["tandem:stack"] == "dev", f"{urn}: tags {tags!r}"

    return pulumi.Output.all(
        secret.urn, secret.name, secret.kms_key_id, secret.recovery_window_in_days, secret.tags
    ).apply(check)


@pulumi.runtime.test
def test_pulumi_sets_no_value():
    from tests.infra.conftest import TandemMocks

    mocks = Recording(TandemMocks())
    pulumi.runtime.set_mocks(mocks, project="tandem", stack="dev", preview=False)
    component = make()

    def check(urn):
        assert "aws:secretsmanager/secretVersion:SecretVersion" not in mocks.types, (
            f"{urn}: a secret version (the key's value) would be in Pulumi state: {mocks.types}"
        )
        assert mocks.types.count("aws:secretsmanager/secret:Secret") == 1, mocks.types

    return component.secret.urn.apply(check)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name_prefix": "Tandem"}, "name_prefix"),
        ({"kms_key_arn": "alias/tandem"}, "kms_key_arn must be an ARN"),
        ({"recovery_window_days": 3}, "recovery_window_days=3"),
        ({"recovery_window_days": 31}, "recovery_window_days=31"),
    ],
)
def test_bad_arguments_fail_before_any_resource(overrides, message):
    with pytest.raises(ValueError, match=r"^PseudonymSecret: ") as info:
        make(**overrides)
    assert message in str(info.value)

"""The line between infra and ml is data: what the Pulumi program exports is what the
adapter reads. Neither side imports the other, so this test holds the two lists together."""

from infra.aws import OPTIONAL_OUTPUT_KEYS, OUTPUT_KEYS
from ml.clouds import aws


def test_every_output_the_aws_adapter_requires_is_exported_by_every_aws_stack() -> None:
    missing = sorted(set(aws.REQUIRED_OUTPUTS) - set(OUTPUT_KEYS))
    assert not missing, f"the adapter requires outputs the program does not export: {missing}"


def test_the_adapter_requires_no_output_that_only_some_stacks_export() -> None:
    optional = sorted(set(aws.REQUIRED_OUTPUTS) & set(OPTIONAL_OUTPUT_KEYS))
    assert not optional, f"required by the adapter but optional in the program: {optional}"

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


def test_the_moto_stack_has_the_programs_outputs(monkeypatch, tmp_path) -> None:
    """The integration tests' stack (aws_fixtures.create_stack) stands for a deployed one:
    it must carry the same keys, no more, no fewer."""
    from tests.integration.aws_fixtures import create_stack, fake_credentials, moto_backend

    fake_credentials(monkeypatch, tmp_path)
    with moto_backend("in-process"):
        outputs = create_stack("dev")
    assert set(outputs) == set(OUTPUT_KEYS), (
        f"missing {sorted(set(OUTPUT_KEYS) - set(outputs))}, "
        f"extra {sorted(set(outputs) - set(OUTPUT_KEYS))}"
    )
    assert outputs["training_image_uri"].startswith(f"{outputs['training_image_repository_url']}:")

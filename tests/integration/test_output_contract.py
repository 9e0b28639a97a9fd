"""The line between infra and ml is data: what the Pulumi program exports is what the
adapter reads, and both are `contract.outputs.AWS`. Neither side imports the other; this
test holds each side to that one list: the program (under Pulumi's mocks), the moto stack
the integration tests stand a deployed one in for, and the adapter's parsed outputs."""

from __future__ import annotations

import dataclasses
import json
import runpy
from pathlib import Path

import pulumi
import pytest
import yaml

from contract.outputs import AWS, ENDPOINT_URL
from tests.infra.conftest import pulumi_mocks  # noqa: F401  (fixture: fresh loop + mocks)

ROOT = Path(__file__).resolve().parents[2]


def _difference(got: set[str], expected: set[str]) -> str:
    return f"missing {sorted(expected - got)}, extra {sorted(got - expected)}"


def _run_program(monkeypatch, tmp_path, raw: dict) -> dict[str, pulumi.Output]:
    """`infra/__main__.py` as `pulumi up` runs it, with `raw` as the stack config."""
    from infra.aws import serving

    monkeypatch.setattr(serving, "default_build_dir", lambda: tmp_path)  # not the repo's build/
    pulumi.runtime.set_all_config(
        {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}
    )
    exported: dict[str, pulumi.Output] = {}
    monkeypatch.setattr(pulumi, "export", lambda key, value: exported.__setitem__(key, value))
    try:
        runpy.run_path(str(ROOT / "infra" / "__main__.py"), run_name="__main__")
    finally:
        pulumi.runtime.set_all_config({})
    return exported


def _dev_config(**aws_section) -> dict:
    raw = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    return {**raw, "tandem:aws": {**raw["tandem:aws"], **aws_section}}


@pytest.mark.usefixtures("pulumi_mocks")
@pulumi.runtime.test
def test_the_program_with_every_feature_on_exports_exactly_the_contract(monkeypatch, tmp_path):
    raw = {
        **_dev_config(mlflow=True),
        "tandem:github_oidc": {"repository": "example-org/tandem", "branch": "main"},
    }
    exported = _run_program(monkeypatch, tmp_path, raw)
    assert set(exported) == set(AWS.exported), _difference(set(exported), set(AWS.exported))

    def check(values):
        assert not AWS.missing(values), f"required outputs empty: {AWS.missing(values)}"
        assert values["ci_role_arn"].startswith("arn:aws:iam::"), values["ci_role_arn"]
        _adapter_from(values, monkeypatch, tmp_path)

    return pulumi.Output.all(**exported).apply(check)


def _adapter_from(values: dict, monkeypatch, tmp_path) -> None:
    """The adapter, built from what the program exported and nothing else, reaches each
    model's own function and names the serving image in its model packages."""
    from ml.clouds import connect
    from tests.integration.aws_fixtures import fake_credentials

    fake_credentials(monkeypatch, tmp_path)
    stack = connect("aws", json.loads(json.dumps(values)))  # as `pulumi stack output --json`
    models = set(values["model_package_groups"])
    assert set(values["endpoints"]) == models, values["endpoints"]
    for model in models:
        fn = stack.endpoint.function(model)
        assert fn.function_name == f"{values['name_prefix']}-{model}-serve", fn
        assert (fn.alias, fn.url) == ("live", values["endpoints"][model]["url"]), fn
    assert stack.registry.image_uri == values["serving_image_uri"]
    assert "-serving:" in values["serving_image_uri"], values["serving_image_uri"]


@pytest.mark.usefixtures("pulumi_mocks")
@pulumi.runtime.test
def test_the_program_with_every_feature_off_exports_required_and_informational(
    monkeypatch, tmp_path
):
    exported = _run_program(monkeypatch, tmp_path, _dev_config(mlflow=False))
    expected = {*AWS.required, *AWS.informational}
    assert set(exported) == expected, _difference(set(exported), expected)
    assert ENDPOINT_URL not in exported

    def check(values):
        assert not AWS.missing(values), f"required outputs empty: {AWS.missing(values)}"
        assert values["stack"] == "dev" and values["cloud"] == "aws", values
        assert values["ci_role_arn"] == "", f"no CI role, yet {values['ci_role_arn']!r}"
        _adapter_from(values, monkeypatch, tmp_path)

    return pulumi.Output.all(**exported).apply(check)


def test_the_moto_stack_has_the_programs_outputs(monkeypatch, tmp_path) -> None:
    """The integration tests' stack (aws_fixtures.create_stack) stands for a deployed one
    without CI role or MLflow: it must carry the same keys, no more, no fewer."""
    from tests.integration.aws_fixtures import create_stack, fake_credentials, moto_backend

    fake_credentials(monkeypatch, tmp_path)
    with moto_backend("in-process"):
        outputs = create_stack("dev")
    expected = {*AWS.required, *AWS.informational}
    assert set(outputs) == expected, _difference(set(outputs), expected)
    assert not AWS.missing(outputs), f"required outputs empty: {AWS.missing(outputs)}"
    assert outputs["training_image_uri"].startswith(f"{outputs['training_image_repository_url']}:")
    assert outputs["serving_image_uri"].startswith(f"{outputs['serving_image_repository_url']}:")
    assert set(outputs["endpoints"]) == set(outputs["model_package_groups"]), outputs["endpoints"]
    assert ":secretsmanager:" in outputs["pseudonym_secret_arn"], outputs["pseudonym_secret_arn"]


def test_the_aws_adapter_reads_exactly_the_contract() -> None:
    """`endpoint_url` is no output: it points an adapter at an emulator, by hand."""
    from ml.clouds.aws.common import AwsOutputs

    read = {f.name for f in dataclasses.fields(AwsOutputs)} - {ENDPOINT_URL}
    assert read == set(AWS.read), _difference(read, set(AWS.read))

"""FunctionAppEndpoint against the ARM fake and the function apps' trigger (the inference core
over each app's settings): settings written read-modify-write, what is live read back from the
app, canaries by settings, history, invoke with the function key."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from contract.metrics import MODEL_QUALITY, dimensions
from contract.serving import (
    ENV_CANARY_URI,
    ENV_CANARY_VERSION,
    ENV_CANARY_WEIGHT,
    ENV_MODEL_NAME,
    ENV_MODEL_URI,
    ENV_MODEL_VERSION,
)
from ml import lifecycle
from ml.clouds.azure.common import AzureOutputs, PlaceholderCredential
from ml.clouds.azure.endpoint import DEPLOYED_AT, FunctionAppEndpoint
from ml.clouds.azure.locks import BlobLocks
from ml.clouds.azure.store import BlobArtifactStore
from ml.clouds.base import APPROVED, MetricPoint, ModelVersion
from ml.clouds.records import now
from ml.errors import ArtifactIntegrityError, ConfigError, NotFoundError, TandemError
from tests.azure_fakes import AzureFake
from tests.contract.conftest import feature_rows
from tests.integration.azure_ml import requests
from tests.integration.azure_ml.conftest import app_name, stack_of

PUT = "config/appsettings"


@pytest.fixture
def endpoint(cfg: AzureOutputs, store: BlobArtifactStore, locks: BlobLocks) -> FunctionAppEndpoint:
    return FunctionAppEndpoint(cfg, PlaceholderCredential(), store, locks)


@pytest.fixture
def version(
    store: BlobArtifactStore, trained_artifact: Path, tmp_path: Path
) -> Callable[[int], ModelVersion]:
    """`version(n)`: an approved version n of credit whose artifact is in the store."""

    def make(n: int) -> ModelVersion:
        local = tmp_path / f"artifact-{n}"
        shutil.copytree(trained_artifact, local)
        uri = store.put_artifact(local, f"artifacts/credit/run-{n}")
        return ModelVersion("credit", n, APPROVED, uri, now())

    return make


def calls(fake: AzureFake, ending: str) -> int:
    return sum(template.endswith(ending) for _, template in fake.operations())


def test_a_deploy_writes_tandems_settings_and_keeps_every_other(
    endpoint: FunctionAppEndpoint, fake: AzureFake, version: Callable[[int], ModelVersion]
) -> None:
    fake.set_app_settings(
        app_name(endpoint.cfg), {"FUNCTIONS_WORKER_RUNTIME": "python", "TEAM_SETTING": "kept"}
    )
    v1 = version(1)
    deployed = endpoint.deploy(v1)
    settings = fake.app_settings(app_name(endpoint.cfg))
    assert settings["FUNCTIONS_WORKER_RUNTIME"] == "python" and settings["TEAM_SETTING"] == "kept"
    assert (settings[ENV_MODEL_URI], settings[ENV_MODEL_NAME], settings[ENV_MODEL_VERSION]) == (
        v1.artifact_uri, "credit", "1",
    )  # fmt: skip
    assert settings[DEPLOYED_AT] == deployed.deployed_at
    assert endpoint.current("credit") == deployed
    assert (deployed.version, deployed.canary_weight, deployed.endpoint) == (
        1, None, endpoint.cfg.endpoints["credit"].url,
    )  # fmt: skip
    answer = endpoint.invoke("credit", feature_rows(2))
    assert (answer["model"], answer["version"], len(answer["predictions"])) == ("credit", 1, 2)
    assert fake.unanswered() == []


def test_deploying_what_is_live_changes_nothing(
    endpoint: FunctionAppEndpoint, fake: AzureFake, version: Callable[[int], ModelVersion]
) -> None:
    v1 = version(1)
    first = endpoint.deploy(v1)
    assert endpoint.deploy(v1) == first
    assert calls(fake, PUT) == 1


def test_a_canary_is_split_by_settings_and_promoted_by_a_deploy(
    endpoint: FunctionAppEndpoint, fake: AzureFake, version: Callable[[int], ModelVersion]
) -> None:
    v1, v2 = version(1), version(2)
    with pytest.raises(TandemError, match="a canary needs another live version"):
        endpoint.deploy(v1, canary_weight=0.2)
    endpoint.deploy(v1)
    canary = endpoint.deploy(v2, canary_weight=0.25)
    settings = fake.app_settings(app_name(endpoint.cfg))
    assert (settings[ENV_MODEL_VERSION], settings[ENV_MODEL_URI]) == ("1", v1.artifact_uri)
    assert (settings[ENV_CANARY_VERSION], settings[ENV_CANARY_URI]) == ("2", v2.artifact_uri)
    assert float(settings[ENV_CANARY_WEIGHT]) == 0.25
    assert endpoint.current("credit") == canary
    assert (canary.version, canary.canary_weight) == (2, 0.25)
    assert canary.details["primary_model_version"] == "1"
    assert endpoint.invoke("credit", feature_rows(1), route="live")["version"] == 1
    assert endpoint.invoke("credit", feature_rows(1), route="canary")["version"] == 2
    promoted = endpoint.deploy(v2)
    settings = fake.app_settings(app_name(endpoint.cfg))
    assert settings[ENV_MODEL_VERSION] == "2"
    assert not {ENV_CANARY_URI, ENV_CANARY_VERSION, ENV_CANARY_WEIGHT} & set(settings)
    assert endpoint.current("credit") == promoted
    with pytest.raises(TandemError, match="no canary is running"):
        endpoint.invoke("credit", feature_rows(1), route="canary")


def test_what_is_live_comes_from_the_app_even_when_changed_outside_tandem(
    endpoint: FunctionAppEndpoint, fake: AzureFake, version: Callable[[int], ModelVersion]
) -> None:
    v1, v2 = version(1), version(2)
    endpoint.deploy(v1)
    endpoint.deploy(v2)
    by_hand = {
        **fake.app_settings(app_name(endpoint.cfg)),
        ENV_MODEL_URI: v1.artifact_uri,
        ENV_MODEL_VERSION: "1",
    }
    fake.set_app_settings(
        app_name(endpoint.cfg), by_hand
    )  # someone points the app back at v1 in the portal
    live = endpoint.current("credit")
    assert live is not None and (live.version, live.artifact_uri) == (1, v1.artifact_uri)
    assert [d.version for d in endpoint.history("credit")] == [1, 2, 1]
    assert endpoint.invoke("credit", feature_rows(1))["version"] == 1


def test_history_lists_every_deployment_in_order(
    endpoint: FunctionAppEndpoint, version: Callable[[int], ModelVersion]
) -> None:
    v1, v2 = version(1), version(2)
    deployed = [endpoint.deploy(v1), endpoint.deploy(v2), endpoint.deploy(v2, canary_weight=None)]
    endpoint.deploy(v1)
    history = endpoint.history("credit")
    assert [d.version for d in history] == [1, 2, 1]
    assert history[:2] == deployed[:2]


def test_an_artifact_that_fails_its_manifest_is_never_deployed(
    endpoint: FunctionAppEndpoint,
    fake: AzureFake,
    store: BlobArtifactStore,
    version: Callable[[int], ModelVersion],
) -> None:
    v1, v2 = version(1), version(2)
    endpoint.deploy(v1)
    store.put_bytes("artifacts/credit/run-2/model.onnx", b"tampered")
    with pytest.raises(ArtifactIntegrityError, match=r"model\.onnx"):
        endpoint.deploy(v2)
    missing = ModelVersion("credit", 3, APPROVED, store.uri_for("artifacts/credit/none"), now())
    with pytest.raises(NotFoundError):
        endpoint.deploy(missing)
    assert fake.app_settings(app_name(endpoint.cfg))[ENV_MODEL_VERSION] == "1"
    assert calls(fake, PUT) == 1


def test_nothing_deployed_and_models_without_an_app(
    endpoint: FunctionAppEndpoint, fake: AzureFake
) -> None:
    assert endpoint.current("credit") is None
    assert endpoint.history("credit") == []
    with pytest.raises(NotFoundError, match="not deployed"):
        endpoint.invoke("credit", feature_rows(1))
    stack = endpoint.cfg.stack
    with pytest.raises(ConfigError, match=f"'fraud' has no function app on stack '{stack}'"):
        endpoint.current("fraud")
    with pytest.raises(TandemError, match="route must be one of"):
        endpoint.invoke("credit", feature_rows(1), route="blue")


def test_invoke_reads_the_function_key_again_after_a_rotation(
    endpoint: FunctionAppEndpoint, fake: AzureFake, version: Callable[[int], ModelVersion]
) -> None:
    endpoint.deploy(version(1))
    endpoint.invoke("credit", feature_rows(1))
    endpoint.invoke("credit", feature_rows(1))
    assert calls(fake, "host/default/listkeys") == 1  # kept between calls
    fake.rotate_function_key(app_name(endpoint.cfg))
    assert endpoint.invoke("credit", feature_rows(1))["version"] == 1
    assert calls(fake, "host/default/listkeys") == 2


def test_the_endpoints_answer_refusing_a_request_is_tandems_error(
    endpoint: FunctionAppEndpoint, version: Callable[[int], ModelVersion]
) -> None:
    endpoint.deploy(version(1))
    with pytest.raises(TandemError, match=r"refused the request \(4\d\d\)"):
        endpoint.invoke("credit", [{"age": "old"}])


def test_the_lifecycle_deploys_canaries_promotes_and_rolls_back_through_the_app(
    outputs: dict, cfg: AzureOutputs, fake: AzureFake, trained_artifact: Path, tmp_path: Path
) -> None:
    """The unchanged lifecycle over the Azure stack: Azure ML registers, the app serves."""
    stack = stack_of(outputs)
    for n in (1, 2, 3):
        local = tmp_path / f"artifact-{n}"
        shutil.copytree(trained_artifact, local)
        uri = stack.store.put_artifact(local, f"artifacts/credit/run-{n}")
        registered = lifecycle.register(stack, "credit", uri, {}, {"run_id": f"run-{n}"})
        lifecycle.approve(stack, "credit", registered.version, "gates passed")
    assert lifecycle.deploy(stack, "credit", 2).version == 2
    canary = lifecycle.deploy(stack, "credit", 3, canary_weight=0.1)
    assert (canary.version, canary.canary_weight) == (3, 0.1)
    assert lifecycle.promote_canary(stack, "credit").version == 3
    back = lifecycle.rollback(stack, "credit", "worse in production")
    assert back.version == 2
    assert fake.app_settings(app_name(cfg))[ENV_MODEL_VERSION] == "2"
    assert stack.registry.get_version("credit", 3).status == "archived"
    assert fake.model_versions("credit")["3"]["properties"]["isArchived"] is True
    assert stack.endpoint.invoke("credit", feature_rows(1))["version"] == 2
    stack.endpoint.history("credit")
    assert stack.registry.list_models() == ["credit"]
    stack.metrics.emit([MetricPoint(MODEL_QUALITY, 0.8, dimensions("credit", 2))])
    assert stack.pseudonym_key is not None and len(stack.pseudonym_key()) == 32
    # exactly the requests the parts are known to make (tests/integration/azure_ml/requests.py)
    known = requests.REGISTRY | requests.ENDPOINT | requests.METRICS
    assert set(fake.operations()) == known | requests.SECRETS
    assert fake.unanswered() == []

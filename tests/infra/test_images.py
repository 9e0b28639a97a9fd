"""The image repositories (training and serving): immutable tags, scan on push, the stack's
key, a lifecycle policy, no repository policy, and the image URI the stack runs."""

from __future__ import annotations

import json

import pulumi
import pytest

from infra.aws.images import (
    DEFAULT_KEEP_IMAGES,
    ImageArgs,
    ServingImage,
    TrainingImage,
    lifecycle_policy,
)
from tests.infra.conftest import ACCOUNT, REGION

KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
TAGS = {"tandem:stack": "dev"}


KINDS = {"training": TrainingImage, "serving": ServingImage}


def make(kind: str = "training", **overrides) -> TrainingImage | ServingImage:
    args = {"name_prefix": "tandem-dev", "kms_key_arn": KEY, "tag": "0.1.0", "tags": TAGS}
    args.update(overrides)
    return KINDS[kind](kind, ImageArgs(**args))


@pytest.mark.parametrize("kind", sorted(KINDS))
@pulumi.runtime.test
def test_repository_is_immutable_scanned_and_encrypted_with_the_stack_key(kind):
    repo = make(kind).repository

    def check(values):
        urn, name, mutability, scanning, encryption, force_delete, tags = values
        assert name == f"tandem-dev-{kind}", f"{urn}: name {name!r}"
        assert mutability == "IMMUTABLE", f"{urn}: image_tag_mutability {mutability!r} (CKV_AWS_51)"
        assert scanning == {"scan_on_push": True}, f"{urn}: scanning {scanning!r} (CKV_AWS_163)"
        assert encryption == [{"encryption_type": "KMS", "kms_key": KEY}], (
            f"{urn}: encryption {encryption!r} (CKV_AWS_136: the stack's CMK)"
        )
        assert force_delete is False, f"{urn}: force_delete {force_delete!r} by default"
        assert tags == {**TAGS, "tandem:image": kind}, f"{urn}: tags {tags!r}"

    return pulumi.Output.all(
        repo.urn,
        repo.name,
        repo.image_tag_mutability,
        repo.image_scanning_configuration.apply(lambda v: json.loads(json.dumps(v))),
        repo.encryption_configurations.apply(lambda v: json.loads(json.dumps(v))),
        repo.force_delete,
        repo.tags,
    ).apply(check)


@pulumi.runtime.test
def test_lifecycle_policy_keeps_the_newest_images_of_this_repository():
    image = make(keep_images=7)
    pol = image.lifecycle_policy

    def check(values):
        urn, repository, repo_name, policy = values
        assert repository == repo_name, f"{urn}: applies to {repository!r}, not {repo_name!r}"
        (rule,) = json.loads(policy)["rules"]
        assert rule["selection"] == {
            "tagStatus": "any",
            "countType": "imageCountMoreThan",
            "countNumber": 7,
        }, f"{urn}: selection {rule['selection']!r}"
        assert rule["action"] == {"type": "expire"}, f"{urn}: action {rule['action']!r}"
        assert rule["rulePriority"] == 1, urn

    return pulumi.Output.all(pol.urn, pol.repository, image.repository.name, pol.policy).apply(
        check
    )


@pytest.mark.parametrize("kind", sorted(KINDS))
@pulumi.runtime.test
def test_image_uri_is_the_repository_url_and_the_tag(kind):
    image = make(kind, tag="2026.11.27-abc123")

    def check(values):
        urn, uri = values
        assert uri == (
            f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/tandem-dev-{kind}:2026.11.27-abc123"
        ), f"{urn}: image_uri {uri!r}"

    return pulumi.Output.all(image.urn, image.image_uri).apply(check)


def test_default_lifecycle_keeps_a_rollback_window():
    (rule,) = lifecycle_policy(DEFAULT_KEEP_IMAGES)["rules"]
    assert rule["selection"]["countNumber"] == DEFAULT_KEEP_IMAGES >= 5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name_prefix": "Tandem"}, "name_prefix"),
        ({"kms_key_arn": "alias/tandem"}, "kms_key_arn must be an ARN"),
        ({"tag": "-x"}, "is not an image tag"),
        ({"tag": "latest"}, "immutable repository"),
        ({"keep_images": 0}, "keep_images=0"),
        ({"keep_images": 10_001}, "keep_images=10001"),
    ],
)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_bad_arguments_fail_before_any_resource(kind, overrides, message):
    with pytest.raises(ValueError, match=rf"^{KINDS[kind].__name__}: ") as info:
        make(kind, **overrides)
    assert message in str(info.value)

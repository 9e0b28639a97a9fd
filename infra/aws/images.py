"""Tandem's images' homes: two private ECR repositories per stack.

- ``<prefix>-training`` (`TrainingImage`): CI builds ``deploy/training/Dockerfile`` (Python
  3.11, the project's dependencies, the ``train`` entry point SageMaker starts) and pushes
  it under the stack's ``tandem:aws.training_image_tag``; training jobs then run
  ``<repository url>:<tag>`` with network isolation on (the code arrives as an input
  channel, nothing is installed at run time). ``infra/config.py`` says why the repository
  exists even when ``tandem:aws.training_image_uri`` overrides the image.
- ``<prefix>-serving`` (`ServingImage`): CI builds ``deploy/Dockerfile`` (numpy and
  onnxruntime only; ``python -m deploy.container serve``) and pushes it under
  ``tandem:aws.serving_image_tag``. The model packages' InferenceSpecification names this
  image, so SageMaker real-time hosting (and any Kubernetes cluster) can serve a version.

Controls: tags immutable (CKV_AWS_51: a tag names one build forever, so a training job
and its model package point at exactly what ran), scan on push (CKV_AWS_163), encrypted
with the stack's customer-managed key (CKV_AWS_136), a lifecycle policy (only the newest
``keep_images`` images are kept), and no repository policy at all (CKV_AWS_32: nothing
public; the SageMaker execution role pulls and the CI role pushes through their own IAM
policies, `infra/aws/policies.py`).

With a customer-managed key, ECR creates grants on the key when the repository is created
(https://docs.aws.amazon.com/AmazonECR/latest/userguide/encryption-at-rest.html): the key
policy lets the deployer do that only through ECR (``kms:ViaService``), see
`policies.kms_key_policy`. Pushing and pulling need no KMS permission of their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
from pulumi import Input, Output, ResourceOptions

from infra.aws._checks import check_arn
from infra.aws.config import IMAGE_TAG_RE
from infra.aws.names import AwsNames
from infra.common.checks import check_name_prefix

# ECR keeps at most 10,000 images per repository; a handful is enough to roll back to.
DEFAULT_KEEP_IMAGES = 20


def lifecycle_policy(keep_images: int) -> dict:
    """Expire all but the newest ``keep_images`` images, tagged or not.

    https://docs.aws.amazon.com/AmazonECR/latest/userguide/lifecycle_policy_parameters.html
    """
    return {
        "rules": [
            {
                "rulePriority": 1,
                "description": f"keep the newest {keep_images} images",
                "selection": {
                    "tagStatus": "any",
                    "countType": "imageCountMoreThan",
                    "countNumber": keep_images,
                },
                "action": {"type": "expire"},
            }
        ]
    }


@dataclass
class ImageArgs:
    """Inputs of an image repository.

    name_prefix: stack-wide prefix; the repository is ``<prefix>-training`` or
        ``<prefix>-serving``.
    kms_key_arn: the stack's customer-managed key (ECR encryption at rest).
    tag: the image tag the stack runs (immutable in this repository).
    keep_images: how many of the newest images the lifecycle policy keeps (1..10000).
    force_delete: let `pulumi destroy` delete the repository with images in it (dev only).
    tags: applied to the repository.
    """

    name_prefix: str
    kms_key_arn: Input[str]
    tag: str
    keep_images: int = DEFAULT_KEEP_IMAGES
    force_delete: bool = False
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self, component: str) -> None:
        check_name_prefix(component, self.name_prefix)
        check_arn(component, "kms_key_arn", self.kms_key_arn)
        if not isinstance(self.tag, str) or not IMAGE_TAG_RE.fullmatch(self.tag):
            raise ValueError(f"{component}: tag {self.tag!r} is not an image tag")
        if self.tag == "latest":
            raise ValueError(f"{component}: tag 'latest' in an immutable repository")
        if not isinstance(self.keep_images, int) or not 1 <= self.keep_images <= 10_000:
            raise ValueError(f"{component}: keep_images={self.keep_images!r} must be in 1..10000")


TrainingImageArgs = ServingImageArgs = ImageArgs


class _ImageRepository(pulumi.ComponentResource):
    """``repository`` (immutable tags, scan on push, KMS) and its ``lifecycle_policy``;
    ``image_uri`` is ``<repository url>:<tag>``."""

    KIND = ""  # "training" or "serving": the repository's suffix and its tandem:image tag
    TYPE = ""  # the component's type token (part of every child's URN: never change it)

    repository: aws.ecr.Repository
    lifecycle_policy: aws.ecr.LifecyclePolicy
    image_uri: Output[str]

    def __init__(self, name: str, args: ImageArgs, opts: ResourceOptions | None = None) -> None:
        args.validate(type(self).__name__)
        super().__init__(self.TYPE, name, None, opts)
        child_opts = ResourceOptions.merge(opts, ResourceOptions(parent=self))

        self.repository = aws.ecr.Repository(
            f"{name}-repository",
            name=getattr(AwsNames(args.name_prefix), f"{self.KIND}_repository"),
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(
                scan_on_push=True
            ),
            encryption_configurations=[
                aws.ecr.RepositoryEncryptionConfigurationArgs(
                    encryption_type="KMS", kms_key=args.kms_key_arn
                )
            ],
            force_delete=args.force_delete,
            tags={**args.tags, "tandem:image": self.KIND},
            opts=child_opts,
        )
        self.lifecycle_policy = aws.ecr.LifecyclePolicy(
            f"{name}-lifecycle",
            repository=self.repository.name,
            policy=json.dumps(lifecycle_policy(args.keep_images)),
            opts=ResourceOptions.merge(child_opts, ResourceOptions(parent=self.repository)),
        )
        self.image_uri = Output.concat(self.repository.repository_url, ":", args.tag)

        self.register_outputs(
            {
                "repository_arn": self.repository.arn,
                "repository_url": self.repository.repository_url,
                "image_uri": self.image_uri,
            }
        )


class TrainingImage(_ImageRepository):
    """``<prefix>-training``: the image SageMaker training jobs run."""

    KIND = "training"
    TYPE = "tandem:aws:TrainingImage"


class ServingImage(_ImageRepository):
    """``<prefix>-serving``: the serving container (SageMaker hosting, Azure ML, Kubernetes)."""

    KIND = "serving"
    TYPE = "tandem:aws:ServingImage"

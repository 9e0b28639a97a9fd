"""Trust policies: each names exactly one principal (CKV_AWS_60, CKV_AWS_61)."""

from __future__ import annotations

from infra.aws.policies.statements import Document, document

GITHUB_OIDC_URL = "https://token.actions.githubusercontent.com"
GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
STS_AUDIENCE = "sts.amazonaws.com"


def _service_trust(service: str) -> Document:
    return document(
        {
            "Sid": "AssumedOnlyByService",
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "sts:AssumeRole",
        }
    )


def sagemaker_trust_policy() -> Document:
    """Only SageMaker (training jobs, the MLflow tracking server) assumes the role."""
    return _service_trust("sagemaker.amazonaws.com")


def lambda_trust_policy() -> Document:
    """Only Lambda assumes the serving function's role."""
    return _service_trust("lambda.amazonaws.com")


def github_oidc_trust_policy(provider_arn: str, subject: str) -> Document:
    """GitHub Actions of one repository and one environment/branch, via OIDC.

    ``subject`` is the exact ``sub`` claim, e.g. ``repo:org/name:environment:production``
    or ``repo:org/name:ref:refs/heads/main`` (StringEquals: no wildcard can widen it).
    https://docs.github.com/en/actions/deployment/security-hardening-your-deployments/configuring-openid-connect-in-amazon-web-services
    """
    if any(c in subject for c in "*?"):
        raise ValueError(f"github_oidc_trust_policy: subject {subject!r} must not be a pattern")
    return document(
        {
            "Sid": "GithubActionsOneRepositoryOneRef",
            "Effect": "Allow",
            "Principal": {"Federated": provider_arn},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {
                "StringEquals": {
                    f"{GITHUB_OIDC_HOST}:aud": STS_AUDIENCE,
                    f"{GITHUB_OIDC_HOST}:sub": subject,
                }
            },
        }
    )

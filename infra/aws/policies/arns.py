"""ARNs of the resources the policies name, built from plain strings (no Pulumi)."""

from __future__ import annotations


def partition_for(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def account_root(account_id: str, partition: str = "aws") -> str:
    return f"arn:{partition}:iam::{account_id}:root"


def role_arn(account_id: str, name: str, partition: str = "aws") -> str:
    return f"arn:{partition}:iam::{account_id}:role/{name}"


def bucket_arn(name: str, partition: str = "aws") -> str:
    return f"arn:{partition}:s3:::{name}"


def log_group_arn(region: str, account_id: str, name: str, partition: str = "aws") -> str:
    return f"arn:{partition}:logs:{region}:{account_id}:log-group:{name}"


def model_package_group_arn(
    region: str, account_id: str, group: str, partition: str = "aws"
) -> str:
    return f"arn:{partition}:sagemaker:{region}:{account_id}:model-package-group/{group}"


def model_package_arns(group_arn: str) -> str:
    """Versions of a group: ``model-package/<group>/<version>``."""
    return group_arn.replace(":model-package-group/", ":model-package/") + "/*"


def ecr_repository_arn(
    region: str, account_id: str, repository: str, partition: str = "aws"
) -> str:
    return f"arn:{partition}:ecr:{region}:{account_id}:repository/{repository}"


def function_arn(region: str, account_id: str, function: str, partition: str = "aws") -> str:
    return f"arn:{partition}:lambda:{region}:{account_id}:function:{function}"


def training_jobs_arn(
    region: str, account_id: str, name_prefix: str, partition: str = "aws"
) -> str:
    """Every training job of the stack (named ``<prefix>-...``)."""
    return f"arn:{partition}:sagemaker:{region}:{account_id}:training-job/{name_prefix}-*"


def mlflow_tracking_server_arn(
    region: str, account_id: str, name: str, partition: str = "aws"
) -> str:
    """A SageMaker MLflow tracking server, by its name (known before the server exists)."""
    return f"arn:{partition}:sagemaker:{region}:{account_id}:mlflow-tracking-server/{name}"


def alarms_arn(region: str, account_id: str, pattern: str, partition: str = "aws") -> str:
    return f"arn:{partition}:cloudwatch:{region}:{account_id}:alarm:{pattern}"


def principal_arn_of_caller(caller_arn: str) -> list[str]:
    """The `aws:PrincipalArn` values a caller identity ARN can show up as.

    An assumed-role session (``arn:aws:sts::<acct>:assumed-role/<role>/<session>``) is
    matched by its role's ARN; the session ARN drops the role's path, hence two patterns.
    """
    parts = caller_arn.split(":", 5)
    if len(parts) == 6 and parts[2] == "sts" and parts[5].startswith("assumed-role/"):
        role = parts[5].split("/")[1]
        base = f"arn:{parts[1]}:iam::{parts[4]}:role"
        return [f"{base}/{role}", f"{base}/*/{role}"]
    return [caller_arn]

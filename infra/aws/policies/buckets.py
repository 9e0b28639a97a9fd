"""S3 bucket policies: TLS only everywhere, and delivery into the logs bucket."""

from __future__ import annotations

from collections.abc import Sequence

from infra.aws.policies.statements import Document, Statement, document

# Where S3 server access logs go in the logs bucket (the trail has its own prefix).
ACCESS_LOGS = "s3-access/"


def tls_only_bucket_policy(bucket: str, *extra: Statement) -> Document:
    """Deny every request that is not TLS (FSBP S3.5), or is TLS older than 1.2."""
    resources = [bucket, f"{bucket}/*"]
    return document(
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": resources,
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
        {
            "Sid": "DenyOutdatedTls",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": resources,
            "Condition": {"NumericLessThan": {"s3:TlsVersion": "1.2"}},
        },
        *extra,
    )


def access_log_delivery_statement(
    logs_bucket: str, source_buckets: Sequence[str], account_id: str, prefix: str = ACCESS_LOGS
) -> Statement:
    """S3 server access log delivery into ``logs_bucket``, only from our own buckets.

    With BucketOwnerEnforced, ACL grants to the log delivery group are impossible; the
    logging service principal is allowed by bucket policy instead.
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/enable-server-access-logging.html
    """
    return {
        "Sid": "S3ServerAccessLogDelivery",
        "Effect": "Allow",
        "Principal": {"Service": "logging.s3.amazonaws.com"},
        "Action": "s3:PutObject",
        "Resource": f"{logs_bucket}/{prefix}*",
        "Condition": {
            "ArnLike": {"aws:SourceArn": list(source_buckets)},
            "StringEquals": {"aws:SourceAccount": account_id},
        },
    }


def logs_bucket_policy(
    logs_bucket: str, source_buckets: Sequence[str], account_id: str, prefix: str = ACCESS_LOGS
) -> Document:
    return tls_only_bucket_policy(
        logs_bucket, access_log_delivery_statement(logs_bucket, source_buckets, account_id, prefix)
    )

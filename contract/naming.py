"""Naming rules, each written once and checked at every entry (spec, config, CLI, registry).

A model name appears in store keys, file paths, SageMaker model package group names,
Lambda and Azure resource names, alarm names and metric dimensions: a DNS label short
enough that `<prefix>-<model>` fits the tightest of those limits.
"""

from __future__ import annotations

import re

# 1-32 characters: lowercase letters, digits and inner hyphens, starting with a letter.
# With a prefix of at most 24, `<prefix>-<model>` is at most 57 characters: inside the 63
# SageMaker allows for a model package group name and the 64 of a Lambda function name.
MODEL_NAME_MAX = 32
MODEL_NAME_RE = re.compile(r"^[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?$")
MODEL_NAME_RULE = (
    f"1-{MODEL_NAME_MAX} lowercase letters, digits and hyphens, starting with a letter "
    "and not ending with a hyphen"
)

# 2-24 characters: buckets are `<prefix>-<kind>-<account id>` (24 + 20 of S3's 63), IAM
# roles `<prefix>-sagemaker-execution` (of IAM's 64).
NAME_PREFIX_MAX = 24
NAME_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,22}[a-z0-9]$")
NAME_PREFIX_RULE = (
    f"2-{NAME_PREFIX_MAX} characters of lowercase letters, digits and hyphens, starting "
    "with a letter and not ending with a hyphen"
)

# Stack names become directory names and output file names: Pulumi's own rule (letters,
# digits, '-', '_', '.'), starting with a letter or digit, so '..' can never be one.
STACK_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

# A practical address check (one @, a dotted domain, no spaces): alarm e-mail subscriptions
# need a deliverable address; the full RFC 5322 grammar is not the point here.
EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$"
)


def is_model_name(name: object) -> bool:
    return isinstance(name, str) and MODEL_NAME_RE.fullmatch(name) is not None


def check_model_name(name: object) -> str:
    """`name` if it is a valid model name, else ValueError saying what the rule is."""
    if not is_model_name(name):
        shown = name if not isinstance(name, str) or len(name) <= 80 else name[:77] + "..."
        raise ValueError(f"model name {shown!r} must be {MODEL_NAME_RULE}")
    return name  # type: ignore[return-value]


def is_name_prefix(prefix: object) -> bool:
    return (
        isinstance(prefix, str)
        and NAME_PREFIX_RE.fullmatch(prefix) is not None
        and "--" not in prefix  # S3 reserves '--' in bucket names
    )


def check_name_prefix(prefix: object) -> str:
    if not is_name_prefix(prefix):
        raise ValueError(f"name prefix {prefix!r} must be {NAME_PREFIX_RULE}, without '--'")
    return prefix  # type: ignore[return-value]


def check_stack_name(name: object) -> str:
    if not isinstance(name, str) or not STACK_NAME_RE.fullmatch(name) or ".." in name:
        raise ValueError(
            f"stack name {name!r} must be 1-100 letters, digits, '-', '_' or '.', "
            "starting with a letter or digit"
        )
    return name


def is_email(address: object) -> bool:
    return isinstance(address, str) and EMAIL_RE.fullmatch(address) is not None

"""Argument checks any cloud's components share: fail at `pulumi preview` with a message
that names the component and the argument, instead of at `pulumi up` with a cloud error.

The rules themselves live in `contract.naming` (one rule for config, CLI and components);
these add the component's name to the message.
"""

from __future__ import annotations

from collections.abc import Sequence

from contract import naming


def check_name_prefix(component: str, name_prefix: object) -> None:
    try:
        naming.check_name_prefix(name_prefix)
    except ValueError as err:
        raise ValueError(f"{component}: name_prefix: {err}") from None


def check_models(component: str, models: Sequence[object]) -> None:
    """At least one model, each a valid model name, none repeated."""
    if not models:
        raise ValueError(f"{component}: models must name at least one model")
    for model in models:
        try:
            naming.check_model_name(model)
        except ValueError as err:
            raise ValueError(f"{component}: {err}") from None
    duplicates = sorted({m for m in models if models.count(m) > 1})  # type: ignore[misc]
    if duplicates:
        raise ValueError(f"{component}: models has duplicates: {duplicates}")


def check_emails(component: str, field: str, addresses: Sequence[object]) -> None:
    for address in addresses:
        if not naming.is_email(address):
            raise ValueError(f"{component}: {field} entry {address!r} is not an email address")

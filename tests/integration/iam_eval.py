"""A small, strict evaluator of IAM identity policies, for what moto does not enforce.

It decides one request (action, resource, request context) against identity policy
documents, following the IAM evaluation logic for a single account with no resource
policies, boundaries or SCPs:
https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html

- an explicit Deny wins; otherwise an Allow is needed; otherwise the request is denied;
- ``Action``/``NotAction`` match case-insensitively, ``Resource``/``NotResource``
  case-sensitively, both with ``*`` and ``?`` wildcards;
- every condition operator in a statement must hold, and every key within an operator;
  a key missing from the request context makes the condition false, except for
  ``...IfExists`` operators (true) and ``Null``;
- a condition operator it does not know raises ``NotImplementedError``: it never ignores
  a condition (which is precisely what moto does).

Supported operators: String{Equals,NotEquals,EqualsIgnoreCase,Like,NotLike},
Arn{Equals,Like,NotEquals,NotLike}, Bool, Numeric{Equals,LessThan,LessThanEquals,
GreaterThan,GreaterThanEquals}, Null, each with the ``IfExists`` suffix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

ALLOW, DENY, IMPLICIT_DENY = "allow", "explicit-deny", "implicit-deny"


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _glob(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, value, flags=re.IGNORECASE if ignore_case else 0) is not None


def _number(value: Any) -> float:
    return float(value)


def _bool(value: Any) -> bool:
    return str(value).lower() == "true"


_OPERATORS = {
    "StringEquals": lambda exp, act: exp == act,
    "StringNotEquals": lambda exp, act: exp != act,
    "StringEqualsIgnoreCase": lambda exp, act: exp.lower() == act.lower(),
    "StringLike": lambda exp, act: _glob(exp, act),
    "StringNotLike": lambda exp, act: not _glob(exp, act),
    "ArnEquals": lambda exp, act: exp == act,
    "ArnLike": lambda exp, act: _glob(exp, act),
    "ArnNotEquals": lambda exp, act: exp != act,
    "ArnNotLike": lambda exp, act: not _glob(exp, act),
    "Bool": lambda exp, act: _bool(exp) == _bool(act),
    "NumericEquals": lambda exp, act: _number(act) == _number(exp),
    "NumericLessThan": lambda exp, act: _number(act) < _number(exp),
    "NumericLessThanEquals": lambda exp, act: _number(act) <= _number(exp),
    "NumericGreaterThan": lambda exp, act: _number(act) > _number(exp),
    "NumericGreaterThanEquals": lambda exp, act: _number(act) >= _number(exp),
}
# Negated operators hold only when no expected value matches; the others when any does.
_NEGATED = {"StringNotEquals", "StringNotLike", "ArnNotEquals", "ArnNotLike"}


def _condition_holds(operator: str, key: str, expected: Any, context: Mapping[str, Any]) -> bool:
    # Condition key names are case-insensitive; `context` is keyed in lower case.
    key = key.lower()
    if operator == "Null":
        present = key in context
        return _bool(expected) is not present
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    if base not in _OPERATORS:
        raise NotImplementedError(f"condition operator {operator!r} is not evaluated")
    if key not in context:
        return if_exists
    compare = _OPERATORS[base]
    expected_values = [str(v) for v in _as_list(expected)]
    actual_values = [str(v) for v in _as_list(context[key])]
    if base in _NEGATED:
        return all(compare(e, a) for e in expected_values for a in actual_values)
    return all(any(compare(e, a) for e in expected_values) for a in actual_values)


def _matches(statement: Mapping[str, Any], action: str, resource: str, context) -> bool:
    if "Action" in statement:
        if not any(_glob(p, action, ignore_case=True) for p in _as_list(statement["Action"])):
            return False
    elif any(_glob(p, action, ignore_case=True) for p in _as_list(statement["NotAction"])):
        return False
    if "Resource" in statement:
        if not any(_glob(p, resource) for p in _as_list(statement["Resource"])):
            return False
    elif "NotResource" in statement and any(
        _glob(p, resource) for p in _as_list(statement["NotResource"])
    ):
        return False
    for operator, keys in statement.get("Condition", {}).items():
        for key, expected in keys.items():
            if not _condition_holds(operator, key, expected, context):
                return False
    return True


def evaluate(
    documents: Iterable[Mapping[str, Any] | str],
    action: str,
    resource: str,
    context: Mapping[str, Any] | None = None,
) -> str:
    """``ALLOW``, ``DENY`` (explicit) or ``IMPLICIT_DENY`` for one request."""
    context = {k.lower(): v for k, v in (context or {}).items()}
    allowed = False
    for doc in documents:
        if isinstance(doc, str):
            doc = json.loads(doc)
        for statement in _as_list(doc["Statement"]):
            if _matches(statement, action, resource, context):
                if statement["Effect"] == "Deny":
                    return DENY
                allowed = True
    return ALLOW if allowed else IMPLICIT_DENY

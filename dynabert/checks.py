"""Argument checks, one home each: a named value and its rule, the message as the CLI prints it.

Each raises the caller's error class (SearchError, MeasurementError, DataError, ...) so the CLI maps
it to its exit code; the value is returned so a check can stand in an assignment."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any


def is_positive_int(value: Any) -> bool:
    """An int >= 1 (a bool is not a number here)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def positive_int(name: str, value: Any, error: type[Exception], *, rule: str = "a positive integer") -> int:
    """`value` when it is an int >= 1; else error("NAME must be RULE; got VALUE")."""
    if not is_positive_int(value):
        raise error(f"{name} must be {rule}; got {value!r}")
    return value


def one_of(what: str, value: Any, allowed: Iterable[str], error: type[Exception]) -> Any:
    """`value` when it is in `allowed`; else error("unknown WHAT VALUE; allowed: A, B, C")."""
    allowed = list(allowed)
    if value not in allowed:
        raise error(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
    return value


_ABSENT = object()  # a field one side of a difference does not have: shown as (absent)


def differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """'field: old -> new' for every field whose value differs, for mismatch errors on resume (the
    saved value first, the asked one second). Nested objects are walked, so a field is named by its
    path (space.ffn_choices) and each value is whole, never a dict or JSON cut short; a field one
    side lacks shows as (absent)."""
    out = []
    for k in list(old) + [k for k in new if k not in old]:
        a, b = old.get(k, _ABSENT), new.get(k, _ABSENT)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += differences(a, b, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}: {_shown(a)} -> {_shown(b)}")
    return out


def _shown(value: Any) -> str:
    """A value as a message shows it: text bare, anything else as JSON (lists [4, 2], null, true)."""
    if value is _ABSENT:
        return "(absent)"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)

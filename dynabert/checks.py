"""Argument checks, one home each: a named value and its rule, the message as the CLI prints it.

Each raises the caller's error class (SearchError, MeasurementError, DataError, ...) so the CLI maps
it to its exit code; the value is returned so a check can stand in an assignment."""

from __future__ import annotations

from collections.abc import Iterable
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

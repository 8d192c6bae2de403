"""Latency with a unit, as users write it: "12ms", "12 ms", "0.5s", "800us" (the device runtime's
reader, `predictors.runtime.units`, raising the search's error class)."""

from __future__ import annotations

from predictors.runtime.units import UNITS  # noqa: F401  (re-exported)
from predictors.runtime.units import parse_latency as _parse

from .errors import SearchError


def parse_latency(text: str) -> float:
    """Milliseconds from a latency with a unit; SearchError naming the text otherwise."""
    return _parse(text, SearchError)

"""Latency with a unit, as users write it: "12ms", "12 ms", "0.5s", "800us" (the device runtime's
reader, `dynasearch_runtime.units`, raising the search's error class)."""

from __future__ import annotations

from dynasearch_runtime.units import UNITS  # noqa: F401  (re-exported)
from dynasearch_runtime.units import parse_latency as _parse

from .errors import SearchError


def parse_latency(text: str) -> float:
    """Milliseconds from a latency with a unit; SearchError naming the text otherwise."""
    return _parse(text, SearchError)

"""Latency with a unit, as users write it: "12ms", "12 ms", "0.5s", "800us" (a target, an SLO).

Part of the device runtime (standard library only; Python 3.8): the search's targets and the server's
--slo (also from a bundle, torch-free) read the same way, within the bounds table's latency range.
"""

from __future__ import annotations

import math
import re
from typing import Optional

from . import bounds

UNITS = {"ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Zµ]*)\s*$")


def parse_latency(text: str, error: type = ValueError) -> float:
    """Milliseconds from a latency with a unit; `error` (the caller's class) naming the text otherwise."""
    m = _PATTERN.match(str(text))
    if not m and _PATTERN.match(str(text).strip().lstrip("-")) and str(text).strip().startswith("-"):
        raise error(f"latency {text!r} is negative; a target is a positive time, e.g. {str(text).strip()[1:]}")
    if not m:
        raise error(f"latency {text!r} is not a number with a unit; write e.g. 12ms, 0.5s or 800us")
    value, unit = float(m.group(1)), m.group(2)
    if not unit:
        raise error(f"latency {text!r} has no unit; write e.g. {m.group(1)}ms (units: {', '.join(UNITS)})")
    if unit.lower() not in UNITS and unit not in UNITS:
        raise error(f"latency {text!r} has an unknown unit {unit!r}; allowed: {', '.join(UNITS)}")
    ms = value * UNITS.get(unit, UNITS.get(unit.lower(), 1.0))
    # The pattern admits no sign, so a non-finite or zero value is an exponent beyond what a float
    # holds ('1e400ms' reads as inf), or a zero ('0ms', or '1e-400ms', which reads as 0).
    if not math.isfinite(ms):
        raise error(f"latency {text!r} is too large: not a finite number of milliseconds")
    if ms <= 0:
        nonzero = re.search(r"[1-9]", m.group(1).lower().split("e")[0]) is not None  # '1e-400' underflows to 0.0
        raise error(f"latency {text!r} must be positive; it is {'too small (rounds to 0 ms)' if nonzero else 'zero'}")
    if bounds.violation("latency_ms", ms) is not None:  # above an hour: a typo (12s for 12ms), not a target
        raise error(f"latency {text!r} is {ms:.10g} ms; a target must be {bounds.describe('latency_ms')}")
    return ms


def parse_margin(text: Optional[str], error: type = ValueError) -> Optional[float]:
    """`--slo-margin`: milliseconds from a latency with a unit, or 0 ("0", "0ms": no margin); None for None."""
    if text is None:
        return None
    m = _PATTERN.match(str(text))
    if m and float(m.group(1)) == 0 and not re.search(r"[1-9]", m.group(1).lower().split("e")[0]):
        # a zero ("0", "0.0ms", "0 s", "00"): no margin, with or without a unit (an unknown unit still refused)
        if not m.group(2) or m.group(2) in UNITS or m.group(2).lower() in UNITS:
            return 0.0
    return parse_latency(text, error)

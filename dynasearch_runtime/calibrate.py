"""The serving latency table, measured on the serving machine: lat(config, batch, padded length bucket)
for every front config of a bundle, timed with the one timing protocol (interleaved rounds) before a
server says it is ready, and cached per machine fingerprint.

Part of the device runtime (standard library only, plus what the runners import; relative imports,
Python 3.8 syntax). The records' length is one (64); a server pads each batch to the next bucket,
so short texts cost less: the table is measured at every bucket, not predicted.

The cache: `BUNDLE/.serving/latency-<fingerprint>.json`, or, where the bundle is read-only,
`$XDG_CACHE_HOME/dynasearch/latency-<bundle digest>-<fingerprint>.json` (~/.cache by default). A
cache of another bundle, machine or grid is not used; a damaged one is measured again.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from . import bounds
from .policy import LatencyTable, PolicyError
from .protocol import Protocol, time_interleaved
from .schema import write_text_atomic

BATCHES = (1, 2, 4, 8, 16)  # between these the table interpolates linearly
BUCKETS = (16, 32, 48, 64)
CACHE_FORMAT = "dynasearch-serving-latency/2"  # 2: a cell times the whole batch path, padded to its bucket

# A runner makes the zero-argument callable that runs config `key` once on a batch of `batch` texts
# padded to `bucket` tokens (random token ids: latency does not depend on them).
Runner = Callable[[int, int], Callable[[], Any]]


def calibration_protocol(cells: int, budget_s: float) -> Protocol:
    """A short protocol that fits `cells` timed cells into about `budget_s` seconds: 3 to 7 timed
    runs per cell, each cell capped at its share of the budget (warm-up included)."""
    bounds.check("duration_s", budget_s, "calibration budget", PolicyError)
    share = max(0.01, budget_s / max(1, cells))
    return Protocol(
        rel_ci=0.05,
        min_runs=3,
        min_visits=1,
        runs_per_visit=2,
        max_runs=7,
        max_seconds=round(share * 0.7, 4),
        rewarm_runs=1,
        warmup_min=1,
        warmup_max=3,
        warmup_max_seconds=round(share * 0.3, 4),
        chunk_size=max(1, min(cells, 10_000)),
    )


def calibrate(
    runners: Mapping[str, Runner],
    accuracy: Mapping[str, float],
    batches: Sequence[int] = BATCHES,
    buckets: Sequence[int] = BUCKETS,
    budget_s: float = 30.0,
    seed: int = 0,
    progress: Optional[Callable[[str], None]] = None,
) -> Tuple[LatencyTable, Dict[str, Any]]:
    """Time every (config, batch, bucket) cell interleaved; (the table, what was done: seconds, runs)."""
    for b in batches:
        bounds.check("batch", b, "a calibration batch", PolicyError)
    for b in buckets:
        bounds.check("seq_len", b, "a length bucket", PolicyError)
    cells = [(k, b, L) for k in runners for b in sorted(set(batches)) for L in sorted(set(buckets))]
    protocol = calibration_protocol(len(cells), budget_s)
    runs = [(f"{k}|{b}|{L}", runners[k](b, L)) for k, b, L in cells]
    if progress:
        progress(f"calibrating {len(runners)} configs x {len(batches)} batch sizes x {len(buckets)} lengths")
    t0 = time.perf_counter()
    stats = time_interleaved(runs, protocol, random.Random(seed))
    seconds = time.perf_counter() - t0
    ms: Dict[Tuple[str, int, int], float] = {}
    for (k, b, L), (name, _) in zip(cells, runs):
        st = stats[name]
        if "error" in st:
            raise PolicyError(f"config {k} failed at batch {b}, length {L}: {st['error']}")
        ms[(k, b, L)] = float(st["median_ms"])
    _monotone(ms, runners, sorted(set(batches)), sorted(set(buckets)))
    info = {"seconds": round(seconds, 2), "cells": len(cells), "runs": sum(int(s["n_runs"]) for s in stats.values())}
    return LatencyTable(dict(accuracy), ms), info


def _monotone(ms: Dict[Tuple[str, int, int], float], keys, batches, buckets) -> None:
    """A bigger batch or a longer bucket never costs less (noise on a shared machine can say it does):
    each cell is raised to the largest of the cells it contains, so the policy's choices stay ordered."""
    for k in keys:
        for i, b in enumerate(batches):
            for j, L in enumerate(buckets):
                below = [ms[(k, batches[i - 1], L)]] if i else []
                below += [ms[(k, b, buckets[j - 1])]] if j else []
                ms[(k, b, L)] = max([ms[(k, b, L)]] + below)


def restrict(table: LatencyTable, keys: Sequence[str]) -> LatencyTable:
    """The table of `keys` only (a static server's one config out of a cached front's table)."""
    missing = [k for k in keys if k not in table.accuracy]
    if missing:
        raise PolicyError(f"the latency table has no config {missing[0]!r}; it has {', '.join(sorted(table.accuracy))}")
    return LatencyTable({k: table.accuracy[k] for k in keys}, {c: v for c, v in table.ms.items() if c[0] in keys})


# ------------------------------------------------------------------------------------------ cache
def cache_path(bundle: str, bundle_digest: str, fingerprint: str) -> str:
    """Where the table of this bundle on this machine is kept (see the module docstring)."""
    inside = os.path.join(str(bundle), ".serving")
    if os.access(str(bundle), os.W_OK) and (not os.path.exists(inside) or os.access(inside, os.W_OK)):
        return os.path.join(inside, f"latency-{fingerprint}.json")
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "dynasearch", f"latency-{bundle_digest[:16]}-{fingerprint}.json")


def table_identity(bundle_digest: str, fingerprint: str, batches: Sequence[int], buckets: Sequence[int]) -> str:
    text = json.dumps([bundle_digest, fingerprint, sorted(set(batches)), sorted(set(buckets))])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_table(path: str, table: LatencyTable, identity: str, info: Mapping[str, Any]) -> None:
    doc = {
        "format": CACHE_FORMAT,
        "identity": identity,
        "accuracy": table.accuracy,
        "cells": [[k, b, L, v] for (k, b, L), v in sorted(table.ms.items())],
        "info": dict(info),
    }
    write_text_atomic(path, json.dumps(doc, indent=1) + "\n")


def load_table(path: str, identity: str) -> Optional[LatencyTable]:
    """The cached table when it is this bundle's on this machine and whole; None otherwise (measure
    again: a cache is never an error)."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        if not isinstance(doc, dict) or doc.get("format") != CACHE_FORMAT or doc.get("identity") != identity:
            return None
        cells = doc["cells"]
        ms = {(str(k), b, L): v for k, b, L, v in cells}
        return LatencyTable({str(k): v for k, v in doc["accuracy"].items()}, ms)
    except (OSError, ValueError, TypeError, KeyError, AttributeError, PolicyError):
        return None

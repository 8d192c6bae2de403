"""The index of a deployment bundle (BUNDLE/devices.json): reading it, checking every field the loader
reads (one BundleError line naming the field and the entry), and the sha256 of every file.

Part of the device runtime (standard library only; relative imports, Python 3.8 syntax): see
`bundle` (the loader) for the bundle's layout.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Dict

from .errors import BundleError

BUNDLE_FORMAT = "dynasearch-bundle"
BUNDLE_VERSION = 1
INDEX = "devices.json"
ENTRY_DTYPES = ("float32", "float16", "bfloat16", "int8")  # predictors.backends' TORCH_DTYPES + ORT_DTYPES
ENTRY_FIELDS = (
    "name",
    "precision",
    "backend",
    "device",
    "provider",
    "threads",
    "spinning",
    "dtype",
    "batch",
    "length",
    "fingerprint",
    "file",
    "format",
    "key",
)


# ------------------------------------------------------------------------------------ the index
def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_index(bundle: str) -> Dict[str, Any]:
    """BUNDLE/devices.json, checked enough to pick an entry (BundleError in one line otherwise)."""
    path = os.path.join(str(bundle), INDEX)
    if not os.path.isdir(str(bundle)):
        raise BundleError(f"bundle {bundle} is not a folder")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise BundleError(f"{bundle} is not a dynasearch bundle (no {INDEX})") from None
    except (OSError, ValueError) as e:
        raise BundleError(f"cannot read bundle index {path}: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
        fmt = doc.get("format") if isinstance(doc, dict) else None
        raise BundleError(f"{path} is not a dynasearch bundle index (format {fmt!r})")
    if not isinstance(doc.get("version"), int) or doc["version"] > BUNDLE_VERSION:
        raise BundleError(
            f"{path} is bundle version {doc.get('version')!r}; this loader reads version {BUNDLE_VERSION} "
            "(export the bundle again with this dynasearch)"
        )
    entries, files = doc.get("devices"), doc.get("files")
    if not isinstance(entries, list) or not entries or not isinstance(files, dict):
        raise BundleError(f"{path} lists no devices or no file digests")
    for i, e in enumerate(entries):
        missing = [k for k in ENTRY_FIELDS if not isinstance(e, dict) or k not in e]
        if missing:
            raise BundleError(f"{path}: devices[{i}] lacks {', '.join(missing)}")
        for field, ok, what, nullable in NUMBER_FIELDS:
            v = e.get(field)
            if (v is not None or not nullable) and not ok(v):
                raise BundleError(
                    f"{path}: devices[{i}] ({e['name']}, {e['precision']}) has {field} {v!r}; it must be "
                    f"{'null or ' if nullable else ''}{what} (export the bundle again)"
                )
        # Settings the loader hands to onnxruntime/torch as they are: a "false" string would turn spinning ON.
        for field, allowed in (("spinning", (True, False)), ("dtype", ENTRY_DTYPES), ("precision", ("fp32", "int8"))):
            if isinstance(e[field], bool) != (field == "spinning") or e[field] not in allowed:
                raise BundleError(
                    f"{path}: devices[{i}] ({e['name']}, {e['precision']}) has {field} {e[field]!r}; it must be one of "
                    f"{', '.join(json.dumps(a) for a in allowed)} (export the bundle again)"
                )
    v = doc.get("vocab_size")
    if v is not None and not _count(v):
        raise BundleError(f"{path} has vocab_size {v!r}; it must be null or an integer >= 1 (export the bundle again)")
    return doc


def _finite_positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# the numbers of an entry that the loader (choose, describe_*, check) and the export's summary read:
# (field, test, what it must be, null allowed); read_index refuses any other value in one line
NUMBER_FIELDS = (
    ("threads", _count, "an integer >= 1", False),
    ("batch", _count, "an integer >= 1", False),
    ("length", _count, "an integer >= 1", False),
    ("cpu_cores", _count, "an integer >= 1", True),
    ("predicted_ms", _finite_positive, "a finite number > 0 (ms)", True),
    ("measured_ms", _finite_positive, "a finite number > 0 (ms)", True),
    ("measured_raw_ms", _finite_positive, "a finite number > 0 (ms)", True),
    ("check_ms", _finite_positive, "a finite number > 0 (ms)", True),
    ("check_runs", _count, "an integer >= 1", True),
    ("metric_value", _finite, "a finite number", True),
    ("metric_full", _finite, "a finite number", True),
    ("metric_search", _finite, "a finite number", True),
)


def inside(bundle: str, rel: str) -> str:
    """The path of `rel` (a file the index names) inside the bundle; BundleError for one outside it."""
    parts = rel.replace("\\", "/").split("/")
    if not rel or os.path.isabs(rel) or ".." in parts:
        raise BundleError(f"bundle index names the file {rel!r}, which is not a path inside the bundle")
    return os.path.join(str(bundle), *parts)


def verify_files(bundle: str, index: Dict[str, Any]) -> None:
    """Every file the index lists has the sha256 it records (BundleError naming the first that does not)."""
    for rel, digest in sorted(index["files"].items()):
        path = inside(bundle, rel)
        if not os.path.isfile(path):
            raise BundleError(f"bundle file {rel} is missing from {bundle}; export the bundle again")
        if _sha256(path) != digest:
            raise BundleError(
                f"bundle file {rel} changed since the bundle was written (its sha256 is not the one {INDEX} "
                "records); export the bundle again"
            )

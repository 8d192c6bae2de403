"""The index of a deployment bundle (BUNDLE/devices.json): reading it, checking every field the loader
reads (one BundleError line naming the field and the entry), and the sha256 of every file.

Part of the device runtime (standard library only; relative imports, Python 3.8 syntax): see
`bundle` (the loader) for the bundle's layout.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, Tuple

from .errors import BundleError
from .field_bounds import SHAPE_BOUNDS, SUBNET_BOUNDS, Field, first_violation, under
from .fingerprint import max_seq_len

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
    bad = first_violation(doc, INDEX_FIELDS)
    if bad:
        raise BundleError(f"{path} has {bad[0]} {bad[1]!r}; it must be {bad[2]} (export the bundle again)")
    # A length beyond the backbone's position table would be cut by the tokenizer and run at another shape.
    backbone = doc.get("backbone")
    highs = {"seq_len": (max_seq_len(backbone), "the backbone's positions")} if isinstance(backbone, dict) else {}
    for i, e in enumerate(entries):
        missing = [k for k in ENTRY_FIELDS if not isinstance(e, dict) or k not in e]
        if missing:
            raise BundleError(f"{path}: devices[{i}] lacks {', '.join(missing)}")
        bad = first_violation(e, NUMBER_FIELDS, highs)
        if bad:
            raise BundleError(
                f"{path}: devices[{i}] ({e['name']}, {e['precision']}) has {bad[0]} {bad[1]!r}; it must be "
                f"{bad[2]} (export the bundle again)"
            )
        # Settings the loader hands to onnxruntime/torch as they are: a "false" string would turn spinning ON.
        for field, allowed in (("spinning", (True, False)), ("dtype", ENTRY_DTYPES), ("precision", ("fp32", "int8"))):
            if isinstance(e[field], bool) != (field == "spinning") or e[field] not in allowed:
                raise BundleError(
                    f"{path}: devices[{i}] ({e['name']}, {e['precision']}) has {field} {e[field]!r}; it must be one of "
                    f"{', '.join(json.dumps(a) for a in allowed)} (export the bundle again)"
                )
    return doc


# Every number of an entry, by its kind in the bounds table (`field_bounds.Field`: path, kind, null
# allowed): what the loader (choose, describe_*, check) and the export's summary read, and the rest an
# entry records; read_index refuses any other value in one line. length is also capped by the backbone's
# positions (devices.json's backbone).
NUMBER_FIELDS: Tuple[Field, ...] = (
    ("threads", "threads", False),
    ("batch", "batch", False),
    ("length", "seq_len", False),
    ("cpu_cores", "cpu_cores", True),
    ("predicted_ms", "latency_ms", True),
    ("measured_ms", "latency_ms", True),
    ("measured_raw_ms", "latency_ms", True),
    ("check_ms", "latency_ms", True),
    ("check_runs", "runs", True),
    ("check_repeats_ms.*", "latency_ms", False),  # the list may be null (not timed); its items may not
    ("target_ms", "latency_ms", True),
    ("metric_value", "metric", True),
    ("metric_full", "metric", True),
    ("metric_search", "metric", True),
    ("where.cpu_cores", "cpu_cores", True),
) + under("subnet", SUBNET_BOUNDS)
# The numbers of the index itself (the backbone caps the entries' length; check_time says how they were timed).
INDEX_FIELDS: Tuple[Field, ...] = (
    (("vocab_size", "vocab", True),)
    + under("backbone", SHAPE_BOUNDS)
    + (
        ("check_time.runs", "runs", False),
        ("check_time.warmup", "runs0", False),
        ("check_time.repeats", "runs", False),
        ("check_time.entries", "count0", False),
    )
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

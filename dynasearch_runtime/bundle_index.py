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
# Bundle format versions (devices.json "version"); the loader reads 1..BUNDLE_VERSION:
#   1  one entry per device: its answer.
#   2  each entry also carries its device's `front` (up to `front.configs` front configs spread over the front's
#      latency range, the answer among them; none with --front 0) and the index its `report` (the task, its data
#      source and which dev examples the front's metrics were scored on). A version-1 bundle has no front.
BUNDLE_VERSION = 2
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
# What each config of an entry's front holds (version 2).
FRONT_FIELDS = ("key", "precision", "format", "file", "model_dir", "subnet", "metric_value", "predicted_ms", "answer")
REPORT_HASH = "the sha256 of the report examples' ascending indices in the dev split, joined by commas (e.g. '0,3,7')"


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
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= BUNDLE_VERSION:
        raise BundleError(
            f"{path} is bundle version {version!r}; this loader reads versions 1..{BUNDLE_VERSION} "
            "(export the bundle again with this dynasearch)"
        )
    entries, files = doc.get("devices"), doc.get("files")
    if not isinstance(entries, list) or not entries or not isinstance(files, dict):
        raise BundleError(f"{path} lists no devices or no file digests")
    bad = first_violation(doc, INDEX_FIELDS)
    if bad:
        raise BundleError(f"{path} has {bad[0]} {bad[1]!r}; it must be {bad[2]} (export the bundle again)")
    if doc["version"] >= 2:
        for key in ("front", "report"):
            if not isinstance(doc.get(key), dict):
                raise BundleError(
                    f"{path} has {key} {doc.get(key)!r}; it must be a JSON object (export the bundle again)"
                )
        if "configs" not in doc["front"]:
            raise BundleError(f"{path}: front lacks configs (export the bundle again)")
        _check_report(path, "report", doc["report"])
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
        if doc["version"] >= 2:
            _check_front(path, f"devices[{i}] ({e['name']}, {e['precision']})", e, int(doc["front"]["configs"]), files)
    return doc


def _check_report(path: str, where: str, report: Any) -> None:
    """The words of a `report` (its numbers are INDEX_FIELDS' / NUMBER_FIELDS'): held_out a bool, sha256 null
    (a search that did not record it) or 64 hexadecimal digits."""
    if not isinstance(report, dict):
        raise BundleError(f"{path}: {where} is {report!r}; it must be a JSON object (export the bundle again)")
    if not isinstance(report.get("held_out"), bool):
        raise BundleError(
            f"{path}: {where}.held_out is {report.get('held_out')!r}; it must be true or false (export the bundle again)"
        )
    digest = report.get("sha256")
    if digest is not None and not (
        isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    ):
        raise BundleError(
            f"{path}: {where}.sha256 is {digest!r}; it must be null or a sha256 digest (64 hexadecimal digits) "
            "(export the bundle again)"
        )


def _check_front(path: str, where: str, e: Dict[str, Any], configs: int, files: Dict[str, Any]) -> None:
    """An entry's front (version 2): absent with front.configs 0; else a list of at most `configs` configs, each
    with FRONT_FIELDS, at the entry's precision and format, its model among the bundle's files, fastest first,
    and exactly one the entry's answer (its key). Its numbers are NUMBER_FIELDS'."""
    if "report" in e:
        _check_report(path, f"{where} report", e["report"])
    front = e.get("front")
    if configs == 0:
        if front is not None:
            raise BundleError(f"{path}: {where} has a front, but front.configs is 0 (export the bundle again)")
        return
    if not isinstance(front, list) or not 1 <= len(front) <= configs:
        raise BundleError(
            f"{path}: {where} has front {_short(front)}; it must be a list of 1..{configs} configs (front.configs) "
            "(export the bundle again)"
        )
    for j, c in enumerate(front):
        name = f"{where} front[{j}]"
        missing = [k for k in FRONT_FIELDS if not isinstance(c, dict) or k not in c]
        if missing:
            raise BundleError(f"{path}: {name} lacks {', '.join(missing)} (export the bundle again)")
        for field, want in (("precision", e["precision"]), ("format", e["format"])):
            if c[field] != want:
                raise BundleError(
                    f"{path}: {name} has {field} {c[field]!r}; it must be the entry's, {want!r} (export the bundle again)"
                )
        if not isinstance(c["key"], str) or not c["key"] or not isinstance(c["answer"], bool):
            raise BundleError(
                f"{path}: {name} has key {c['key']!r} and answer {c['answer']!r}; they must be a non-empty string and "
                "true or false (export the bundle again)"
            )
        rel = c["file"]
        held = isinstance(rel, str) and (rel in files or any(f.startswith(rel + "/") for f in files))
        if not held:
            raise BundleError(
                f"{path}: {name} has file {rel!r}, which is not among the bundle's files (export the bundle again)"
            )
    keys = [c["key"] for c in front]
    answers = [c["key"] for c in front if c["answer"]]
    if len(set(keys)) != len(keys) or answers != [e["key"]]:
        raise BundleError(
            f"{path}: {where} has a front with keys {keys} and answer(s) {answers}; its keys must be distinct and "
            f"exactly one the entry's answer, {e['key']!r} (export the bundle again)"
        )
    lat = [c["predicted_ms"] for c in front]
    if any(not isinstance(v, (int, float)) for v in lat) or lat != sorted(lat):
        raise BundleError(
            f"{path}: {where} has a front not ordered by predicted_ms ({lat}); it must be fastest first "
            "(export the bundle again)"
        )


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


# Which dev examples a front's metrics were scored on: the index's `report` (and an entry's own `report`, where its
# search reported on other examples than the first device's), as search.json's report_dev records them: the dev
# split's size, the seeds and counts that cut it (search_dev, rescore_dev: null when not given) and how many report
# examples that left (null in the numbers an older search did not record).
REPORT_FIELDS: Tuple[Field, ...] = (
    ("dev_examples", "count", True),
    ("search_dev", "count", True),
    ("search_dev_seed", "seed", True),
    ("rescore_dev", "count", True),
    ("rescore_seed", "seed", True),
    ("examples", "count", True),
)


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
    # version 2: the device's front (its configs' metric on the report examples and their latencies)
    ("front_size", "count", True),
    ("front.*.metric_value", "metric", False),
    ("front.*.metric_full", "metric", True),
    ("front.*.metric_search", "metric", True),
    ("front.*.predicted_ms", "latency_ms", False),
    ("front.*.measured_ms", "latency_ms", True),
    ("front.*.measured_raw_ms", "latency_ms", True),
)
NUMBER_FIELDS = (
    NUMBER_FIELDS
    + under("subnet", SUBNET_BOUNDS)
    + under("front.*.subnet", SUBNET_BOUNDS)
    + under("report", REPORT_FIELDS)
)
# The numbers of the index itself (the backbone caps the entries' length; check_time says how they were timed).
INDEX_FIELDS: Tuple[Field, ...] = (
    (("vocab_size", "vocab", True),)
    + under("backbone", SHAPE_BOUNDS)
    + (
        ("check_time.runs", "runs", False),
        ("check_time.warmup", "runs0", False),
        ("check_time.repeats", "runs", False),
        ("check_time.entries", "count0", False),
        ("front.configs", "front", False),  # version 2
        ("text_inputs", "text_inputs", True),  # version 2: 2 for a sentence-pair task (null: not known, read as 1)
    )
    + under("report", REPORT_FIELDS)
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

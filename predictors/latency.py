"""Latency predictors: fit on records, predict milliseconds, save and load as JSON + arrays.

Four kinds share one interface (scikit-learn's contract: `__init__` stores hyper-parameters only,
`fit` returns self, learned attributes end in `_`):
- `lut`: additive per-layer lookup table built from single-layer measurements (the
  `layer-table` sampler): base + sum over kept layers of attention(heads) + ffn(neurons), with an
  optional two-number calibration (a + b * table sum) fitted on whole-model records;
- `layer-regression`: the same additive structure, but every per-layer cost is learned from
  whole-model records by non-negative least squares on relative error, over piecewise-linear
  ("hat") bases at the measured head and FFN widths; across input shapes each basis is scaled by
  1, batch*seq and (attention) batch*seq^2, the way the matmuls scale (FLOPs are spanned by those);
- `gbdt`: gradient-boosted trees on summary features (depth, heads, FFN, FLOPs, batch, seq) of log ms;
- `hybrid`: layer-regression times a boosted-tree correction fitted on its out-of-fold log error.
Every predictor keeps cross-validated relative residuals for split-conformal prediction intervals.
A predictor is tied to one fingerprint and setting (backend, provider, threads, spinning, dtype,
backbone; one batch and sequence length unless fitted across shapes): asking it about another
raises unless forced, in which case it warns.

This module is the kinds table and the reader (`load_predictor`, `find_predictor`); the interface
is in `base.py`, the kinds in `_kinds.py`, the keys of predictor.json in `_predictor_file.py`.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from pathlib import Path

import numpy as np

from dynabert.checks import one_of
from dynabert.io import read_json
from dynabert.subnet import BackboneShape, SubnetConfig

from ._kinds import BoostedTreesPredictor, HybridPredictor, LayerRegressionPredictor, LookupTablePredictor
from ._predictor_file import ARRAY_NAMES, HYPER_KEYS, META_KEYS_LATER, PARAM_KEYS, SHAPE_KEYS, check_keys
from .base import FORMAT, VERSION, FittedOn, LatencyPredictor
from .errors import PredictorError

PREDICTORS: dict[str, type[LatencyPredictor]] = {
    cls.kind: cls for cls in (LookupTablePredictor, LayerRegressionPredictor, BoostedTreesPredictor, HybridPredictor)
}


def make_predictor(kind: str, **kw) -> LatencyPredictor:
    one_of("predictor kind", kind, PREDICTORS, PredictorError)
    return PREDICTORS[kind](**kw)


def load_predictor(directory: str | Path) -> LatencyPredictor:
    """THE reader of a predictor directory (predictor.json + arrays.npz), or of a fit-predictor output
    (its metrics.json names the best kind, loaded from predictors/<kind>/: see `find_predictor`).

    Every key of predictor.json is checked (format and version, kind, hyper-parameters, metadata,
    backbone shape, parameters, the arrays' names, shapes, dtypes and checksum, numbers finite),
    then the predictor must price the full model at a finite, positive latency. Any damage:
    PredictorError, one line naming the file and the key. A version-1 file written before some
    metadata keys existed is read with a warning saying so; another version is refused."""
    d = Path(directory)
    if not (d / "predictor.json").exists() and (d / "metrics.json").exists():
        return find_predictor(d)[0]
    meta_path, arr_path = d / "predictor.json", d / "arrays.npz"
    if not d.exists():
        raise PredictorError(f"predictor directory '{d}' does not exist")
    if not meta_path.is_file():
        raise PredictorError(f"'{d}' is not a predictor directory (no predictor.json)")
    try:
        doc = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PredictorError(f"{meta_path} is truncated or not JSON ({e})") from None
    except OSError as e:
        raise PredictorError(f"cannot read {meta_path}: {e.strerror or e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise PredictorError(
            f"{meta_path} is not a dynasearch latency predictor (format {doc.get('format') if isinstance(doc, dict) else None!r})"
        )
    if isinstance(doc.get("version"), bool) or not isinstance(doc.get("version"), int) or doc["version"] != VERSION:
        raise PredictorError(
            f"{meta_path} has predictor format version {doc.get('version')!r}; this dynasearch reads version {VERSION}"
        )
    where = f"predictor file {meta_path}"
    kind = doc.get("kind")
    if kind not in PREDICTORS:
        raise PredictorError(f"{meta_path} holds an unknown predictor kind {kind!r}; known: {', '.join(PREDICTORS)}")
    for k in ("hyper", "meta", "shape", "params", "arrays"):
        if not isinstance(doc.get(k), dict):
            raise PredictorError(
                f"{where}: key {k} is {'missing' if k not in doc else json.dumps(doc[k])[:40]}; expected an object"
            )
    hyper_keys = set(PREDICTORS[kind](**{}).hyper())
    check_keys(where, "hyper", doc["hyper"], {k: v for k, v in HYPER_KEYS.items() if k in hyper_keys}, unknown_ok=False)
    meta = doc["meta"]
    FittedOn.from_meta(meta, where)  # every key of meta checked
    if meta["kind"] != kind:
        raise PredictorError(f"{where}: key meta.kind is {meta['kind']!r}; expected {kind!r} (the file's kind)")
    if meta["across_shapes"] != doc["hyper"].get("across_shapes", False):
        raise PredictorError(
            f"{where}: key meta.across_shapes is {json.dumps(meta['across_shapes'])}; expected "
            f"{json.dumps(doc['hyper'].get('across_shapes', False))} (as hyper.across_shapes)"
        )
    check_keys(where, "shape", doc["shape"], SHAPE_KEYS, required=list(SHAPE_KEYS)[:5], unknown_ok=False)
    check_keys(where, "params", doc["params"], PARAM_KEYS[kind], required=[k for k in PARAM_KEYS[kind] if k != "floor"])
    declared = doc["arrays"]
    needed = (*ARRAY_NAMES[kind], "conformal_scores")
    missing = [a for a in needed if a not in declared]
    if missing:
        raise PredictorError(
            f"{where}: key arrays.{missing[0]} is missing (a {kind} predictor has arrays {', '.join(needed)})"
        )
    if not isinstance(doc.get("arrays_sha256"), str):
        raise PredictorError(f"{where}: key arrays_sha256 is missing or not a string")
    if not arr_path.is_file():
        raise PredictorError(f"predictor '{d}' lacks arrays.npz")
    blob = arr_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != doc["arrays_sha256"]:
        raise PredictorError(f"{arr_path} is truncated or does not belong to {meta_path} (checksum differs)")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise PredictorError(f"{arr_path} cannot be read: {type(e).__name__}: {e}") from None
    for name in sorted(set(declared) | set(arrays)):
        a, dec = arrays.get(name), declared.get(name)
        if (
            a is None
            or not isinstance(dec, dict)
            or dec.get("shape") != list(a.shape)
            or dec.get("dtype") != str(a.dtype)
        ):
            got = "absent" if a is None else f"shape {list(a.shape)} dtype {a.dtype}"
            raise PredictorError(
                f"{where}: key arrays.{name} is {json.dumps(dec)[:60]}; expected what {arr_path.name} holds ({got})"
            )
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise PredictorError(f"{arr_path}: array {name} holds a NaN or an infinite value")
    later = [k for k in META_KEYS_LATER if k not in meta]
    if later:
        warnings.warn(
            f"predictor {d} was written by an older dynasearch (its metadata lacks {', '.join(later)}): "
            "read as it is; fit it again for what those give (the speed reference, the widths it saw)",
            stacklevel=2,
        )
    try:
        pred = PREDICTORS[kind](**doc["hyper"])
        pred.shape_ = BackboneShape(**doc["shape"])
        pred.meta_ = meta
        pred.conformal_scores_ = arrays.pop("conformal_scores")
        pred._set_params(doc["params"], arrays)
        b0, s0 = meta["shapes"][0]
        full = pred._predict([SubnetConfig.full(pred.shape_)], np.array([float(b0)]), np.array([float(s0)]))
    except PredictorError:
        raise
    except Exception as e:
        raise PredictorError(
            f"predictor '{d}' cannot be read: its arrays do not fit together ({type(e).__name__}: {e})"
        ) from None
    if not (np.ndim(full) == 1 and len(full) == 1 and np.isfinite(full[0]) and full[0] > 0):
        raise PredictorError(
            f"predictor '{d}' is damaged: it prices the full model at {float(np.ravel(full)[0])} ms; "
            "expected a finite, positive latency"
        )
    return pred


FIT_FORMAT = "dynasearch-predictor-fit"
FIT_VERSION = 1


def find_predictor(path: str | Path) -> tuple[LatencyPredictor, Path]:
    """(predictor, its directory) from a predictor directory or a fit-predictor output, whose
    metrics.json (format dynasearch-predictor-fit) names the best kind in predictors/<kind>/.
    PredictorError, one line naming the file and the key, for a damaged or incomplete output; an
    output written before metrics.json carried its format is read with a warning."""
    p = Path(path)
    if not p.exists():
        raise PredictorError(f"predictor directory {p} does not exist")
    if (p / "predictor.json").exists():
        return load_predictor(p), p
    metrics = p / "metrics.json"
    if not metrics.exists():
        raise PredictorError(
            f"{p} is not a dynasearch latency predictor (no predictor.json; a fit-predictor output needs "
            "metrics.json naming the best kind and predictors/<kind>/)"
        )
    doc = read_json(metrics, "predictor metrics file", error=PredictorError)
    if not isinstance(doc, dict):
        raise PredictorError(f"predictor metrics file {metrics} holds {type(doc).__name__}; expected a JSON object")
    if "format" not in doc:
        warnings.warn(
            f"{metrics} was written by an older dynasearch (no format key): read as fit-predictor output "
            f"version {FIT_VERSION}",
            stacklevel=2,
        )
    elif doc["format"] != FIT_FORMAT:
        raise PredictorError(f"{metrics}: key format is {json.dumps(doc['format'])[:40]}; expected {FIT_FORMAT!r}")
    elif doc.get("version") != FIT_VERSION:
        raise PredictorError(
            f"{metrics} has fit-predictor output version {doc.get('version')!r}; this dynasearch reads version {FIT_VERSION}"
        )
    best = doc.get("best")
    kinds_dir = p / "predictors"
    there = (
        sorted(k.name for k in kinds_dir.iterdir() if (k / "predictor.json").is_file()) if kinds_dir.is_dir() else []
    )
    if not isinstance(best, str) or best not in PREDICTORS:
        raise PredictorError(
            f"{metrics}: key best is {json.dumps(best)[:40]}; expected a predictor kind ({', '.join(PREDICTORS)})"
        )
    if not (kinds_dir / best / "predictor.json").is_file():
        raise PredictorError(
            f"{metrics} names the best predictor {best!r}, but {kinds_dir / best / 'predictor.json'} is missing "
            f"(the output is incomplete); run fit-predictor again, or give one that is there: "
            f"{', '.join(str(kinds_dir / k) for k in there) or 'none is'}"
        )
    pred = load_predictor(kinds_dir / best)
    if pred.kind != best:
        raise PredictorError(
            f"{kinds_dir / best / 'predictor.json'} holds a {pred.kind!r} predictor; {metrics} names {best!r}"
        )
    return pred, kinds_dir / best

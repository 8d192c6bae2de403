"""The interface every latency predictor shares (scikit-learn's contract: `__init__` stores
hyper-parameters only, `fit` returns self, learned attributes end in `_`): the records a predictor
sees (`Data`), fitting with cross-validated relative residuals for split-conformal intervals,
prediction with the fingerprint, setting and input-shape checks, saving as predictor.json +
arrays.npz, and the metadata it keeps of what it was fitted on (`meta_`, the saved JSON; read it
typed as `predictor.fitted_on`, a `FittedOn`). The kinds are in `_kinds.py`; the
reader and the kinds table in `latency.py`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import io
import math
import warnings
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from dynabert.io import atomic_dir, write_json
from dynabert.subnet import SubnetConfig

from ._predictor_file import META_KEYS, META_KEYS_LATER, META_KEYS_OPTIONAL, check_keys
from .errors import PredictorError
from .records import LATENCY_COLUMN, TARGET_COLUMNS, check_one_target, ok_records, records_clock, shape_of
from .samplers import is_layer_table_config

FORMAT = "dynasearch-latency-predictor"
VERSION = 1
# Settings a predictor is tied to (asking with other values raises unless forced): the records' target columns.
TARGET_FIELDS = TARGET_COLUMNS


@dataclass(frozen=True)
class AnchorReference:
    """The anchor config's reference median (ms) at one input shape: the scale a predictor's
    speed-corrected latencies are on (see `anchor_references`)."""

    batch: int
    seq_len: int
    key: str
    ms: float


@dataclass(frozen=True)
class WidthsSeen:
    """Sorted distinct per-layer head counts and FFN sizes a predictor was fitted on (`widths_seen`)."""

    heads: tuple[int, ...]
    ffn: tuple[int, ...]


@dataclass(frozen=True)
class FittedOn:
    """What a fitted latency predictor was fitted on, typed: the target (fingerprint and setting),
    the input shapes, the widths its records held and the anchor references. Read from the saved
    metadata (`meta_`, predictor.json's "meta", whose format this does not change) by `from_meta`.

    widths_seen is None and anchor_references empty for a predictor written before they were kept;
    clock is "wall" for one written before it was kept (fitted on wall-clock records, as all were then)."""

    kind: str
    fingerprint: str
    target_id: str
    backend: str
    device: str
    provider: str
    threads: int
    spinning: bool
    dtype: str
    cpu_model: str
    cpu_cores: int
    gpu_name: str
    shape_key: str
    shapes: tuple[tuple[int, int], ...]  # sorted (batch, seq_len) pairs of the fitting records
    across_shapes: bool
    widths_seen: WidthsSeen | None
    anchor_references: tuple[AnchorReference, ...]
    clock: str = "wall"  # what the fitting records timed: wall, or cpu (the timing thread's CPU time)

    @classmethod
    def from_meta(cls, meta: Any, where: str = "predictor metadata") -> FittedOn:
        """The typed view of a predictor's metadata dict. A malformed one raises PredictorError, one
        line naming `where` and the bad key (the checks `load_predictor` applies to predictor.json)."""
        check_keys(
            where, "meta", meta, {**META_KEYS, **META_KEYS_LATER, **META_KEYS_OPTIONAL}, required=list(META_KEYS)
        )
        widths = meta.get("widths_seen")
        return cls(
            kind=meta["kind"],
            fingerprint=meta["fingerprint"],
            target_id=meta["target_id"],
            backend=meta["backend"],
            device=meta["device"],
            provider=meta["provider"],
            threads=int(meta["threads"]),
            spinning=bool(meta["spinning"]),
            dtype=meta["dtype"],
            cpu_model=meta["cpu_model"],
            cpu_cores=int(meta["cpu_cores"]),
            gpu_name=meta["gpu_name"],
            shape_key=meta["shape_key"],
            shapes=tuple((int(b), int(s)) for b, s in meta["shapes"]),
            across_shapes=bool(meta["across_shapes"]),
            widths_seen=None
            if widths is None
            else WidthsSeen(tuple(int(h) for h in widths["heads"]), tuple(int(f) for f in widths["ffn"])),
            anchor_references=tuple(
                AnchorReference(int(a["batch"]), int(a["seq_len"]), str(a["key"]), float(a["ms"]))
                for a in meta.get("anchor_reference") or []
            ),
            clock=str(meta.get("clock", "wall")),
        )

    @property
    def batches(self) -> tuple[int, ...]:
        return tuple(b for b, _ in self.shapes)

    @property
    def seq_lens(self) -> tuple[int, ...]:
        return tuple(s for _, s in self.shapes)

    @property
    def target(self) -> dict[str, Any]:
        """The target fields (TARGET_FIELDS: the records' target columns) and their values."""
        return {f: getattr(self, f) for f in TARGET_FIELDS}

    def anchor_ms(self, batch: int, seq_len: int, key: str) -> float | None:
        """The reference median (ms) of anchor `key` at (batch, seq_len); None when the fitting
        records had none there (no anchor, another shape, or a predictor written before)."""
        for a in self.anchor_references:
            if (a.batch, a.seq_len, a.key) == (batch, seq_len, key):
                return a.ms
        return None


@dataclass
class Data:
    """What a predictor sees of the records: configs, input shapes, speed-corrected median ms."""

    subnets: list[SubnetConfig]
    batch: np.ndarray
    seq: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> Data:
        return Data([self.subnets[i] for i in idx], self.batch[idx], self.seq[idx], self.y[idx])

    @classmethod
    def from_records(cls, df: pd.DataFrame) -> Data:
        return cls(
            [SubnetConfig.from_json(s) for s in df["subnet"]],
            df["batch"].to_numpy(dtype=float),
            df["seq_len"].to_numpy(dtype=float),
            df[LATENCY_COLUMN].to_numpy(dtype=float),
        )


class LatencyPredictor(ABC):
    kind: ClassVar[str] = ""
    supports_shapes: ClassVar[bool] = True

    def __init__(self, across_shapes: bool = False, cv_folds: int = 5, seed: int = 0):
        self.across_shapes = across_shapes
        self.cv_folds = cv_folds
        self.seed = seed
        if across_shapes and not self.supports_shapes:
            raise PredictorError(
                f"predictor {self.kind!r} serves one batch and sequence length; it cannot be fitted across shapes"
            )

    # ---- what subclasses provide
    def hyper(self) -> dict[str, Any]:
        return {"across_shapes": self.across_shapes, "cv_folds": self.cv_folds, "seed": self.seed}

    @abstractmethod
    def min_records(self, data: Data) -> int: ...

    @abstractmethod
    def _fit(self, data: Data) -> None: ...

    @abstractmethod
    def _predict(self, subnets: Sequence[SubnetConfig], batch: np.ndarray, seq: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def _get_params(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...

    @abstractmethod
    def _set_params(self, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None: ...

    def _always_train(self, data: Data) -> np.ndarray:
        """Rows every cross-validation fold trains on and none is scored on: the single-layer
        lookup-table probes. They are not configs anyone deploys, and a fold without the empty one
        can price it at 0 ms (an infinite relative error that says nothing about real configs)."""
        return np.array([is_layer_table_config(s) for s in data.subnets], dtype=bool)

    # ---- fitting
    def fit(self, records: pd.DataFrame, conformal: bool = True) -> LatencyPredictor:
        """Fit on records of one target (status ok rows). conformal=False skips the cross-validation
        that the prediction intervals need (learning curves use that)."""
        df = ok_records(records)
        if df.empty:
            raise PredictorError("no usable records (status ok) to fit a predictor on")
        check_one_target(df, allow_shapes=self.across_shapes)
        self.shape_ = shape_of(df)
        data = Data.from_records(df)
        need = self.min_records(data)
        if len(data) < need:
            raise PredictorError(
                f"too few records to fit predictor {self.kind!r}: {len(data)} given, at least {need} needed"
            )
        self._fit(data)
        self.meta_ = _metadata(df, self.kind, len(data), self.across_shapes)
        self.conformal_scores_ = self._cv_scores(data) if conformal else np.zeros(0)
        return self

    def _cv_scores(self, data: Data) -> np.ndarray:
        """Relative out-of-fold residuals |y / y_hat - 1| (for conformal intervals)."""
        fixed = self._always_train(data)
        free = np.flatnonzero(~fixed)
        k = min(self.cv_folds, len(free))
        if k < 2:
            return np.zeros(0)
        rng = np.random.default_rng(self.seed)
        folds = np.array_split(rng.permutation(free), k)
        scores = []
        for fold in folds:
            train_idx = np.setdiff1d(np.arange(len(data)), fold)
            sub = type(self)(**self.hyper())
            sub.shape_ = self.shape_
            part = data.take(train_idx)
            try:
                sub._fit(part)
            except PredictorError:
                continue  # a fold too small for this kind: skip it
            held = data.take(fold)
            pred = sub._predict(held.subnets, held.batch, held.seq)
            scores.append(np.abs(held.y / pred - 1.0))
        return np.sort(np.concatenate(scores)) if scores else np.zeros(0)

    @property
    def fitted_on(self) -> FittedOn:
        """What this predictor was fitted on, typed (read from `meta_`, the saved metadata)."""
        self._check_fitted()
        return FittedOn.from_meta(self.meta_)

    # ---- prediction
    def _check_fitted(self) -> None:
        if not hasattr(self, "meta_"):
            raise PredictorError(
                f"predictor {self.kind!r} is not fitted; call fit(records) first, or read one with predictors.load_predictor(dir)"
            )

    def check_target(self, target: Mapping[str, Any], force: bool = False) -> None:
        """Refuse (or with force, warn) when `target` (a records row or settings dict) names another
        fingerprint or setting than the one this predictor was fitted for."""
        self._check_fitted()
        diffs = [
            f"{f}: predictor {_plain(self.meta_[f])!r}, asked {_plain(target[f])!r}"
            for f in TARGET_FIELDS
            if f in target and not _same(target[f], self.meta_[f])
        ]
        if diffs:
            msg = "predictor was fitted for another fingerprint or setting (" + "; ".join(diffs) + ")"
            if not force:
                raise PredictorError(
                    msg + "; measure this setting and fit a predictor for it (in Python, force=True predicts anyway)"
                )
            warnings.warn(msg + "; predicting anyway (forced)", stacklevel=2)

    def _check_shapes(self, batch: np.ndarray, seq: np.ndarray, force: bool) -> None:
        trained = {(int(b), int(s)) for b, s in self.meta_["shapes"]}
        asked = {(int(b), int(s)) for b, s in zip(batch, seq)}
        if not self.meta_["across_shapes"]:
            other = sorted(asked - trained)
            if other:
                msg = f"predictor was fitted for (batch, seq_len) {sorted(trained)}; asked {other[:5]}"
                if not force:
                    raise PredictorError(
                        msg + "; fit one across shapes (fit-predictor --across-shapes) or measure and fit "
                        "this shape (in Python, force=True predicts anyway)"
                    )
                warnings.warn(msg + " (forced)", stacklevel=3)
            return
        bs = [b for b, _ in self.meta_["shapes"]]
        ss = [s for _, s in self.meta_["shapes"]]
        outside = [(b, s) for b, s in asked if not (min(bs) <= b <= max(bs) and min(ss) <= s <= max(ss))]
        if outside:
            warnings.warn(
                f"(batch, seq_len) {outside[:5]} outside the fitted ranges batch {min(bs)}-{max(bs)}, "
                f"seq_len {min(ss)}-{max(ss)}: extrapolating",
                stacklevel=3,
            )

    def predict(
        self,
        subnets: Sequence[SubnetConfig],
        batch: int | Sequence[int] | None = None,
        seq_len: int | Sequence[int] | None = None,
        force: bool = False,
    ) -> np.ndarray:
        """Predicted latency in milliseconds, one per sub-network. batch / seq_len default to the
        fitted ones (a predictor fitted on one input shape)."""
        self._check_fitted()
        subnets = list(subnets)
        for s in subnets:
            s.validate(self.shape_)
        b0, s0 = self.meta_["shapes"][0]
        batch_arr = np.broadcast_to(np.asarray(b0 if batch is None else batch, dtype=float), (len(subnets),)).copy()
        seq_arr = np.broadcast_to(np.asarray(s0 if seq_len is None else seq_len, dtype=float), (len(subnets),)).copy()
        self._check_shapes(batch_arr, seq_arr, force)
        return self._predict(subnets, batch_arr, seq_arr)

    def predict_records(self, records: pd.DataFrame, force: bool = False) -> np.ndarray:
        """Predictions for the configs and input shapes of records rows (their settings checked)."""
        self._check_fitted()
        for _, row in records.drop_duplicates("target_id").iterrows():
            self.check_target(row, force)
        return self.predict(
            [SubnetConfig.from_json(s) for s in records["subnet"]],
            records["batch"].to_numpy(),
            records["seq_len"].to_numpy(),
            force=force,
        )

    def conformal_quantile(self, coverage: float) -> float:
        """Relative half-width q of the split-conformal interval y_hat * [1 - q, 1 + q]."""
        self._check_fitted()
        if not 0 < coverage < 1:
            raise PredictorError(f"coverage must be in (0, 1); got {coverage}")
        scores = self.conformal_scores_
        n = len(scores)
        if n == 0:
            raise PredictorError(
                f"predictor {self.kind!r} has no cross-validation residuals (too few whole-model records) for intervals"
            )
        rank = math.ceil((n + 1) * coverage)
        return math.inf if rank > n else float(scores[rank - 1])

    def predict_interval(
        self, subnets: Sequence[SubnetConfig], coverage: float = 0.9, batch=None, seq_len=None, force: bool = False
    ):
        """(prediction, low, high) in ms; the interval covers `coverage` of new measurements if the
        errors are exchangeable with the cross-validation ones (their measured coverage is reported
        by `dynasearch fit-predictor`)."""
        pred = self.predict(subnets, batch, seq_len, force)
        q = self.conformal_quantile(coverage)
        return pred, pred * max(0.0, 1 - q), pred * (1 + q)

    # ---- persistence
    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """directory/predictor.json (metadata, hyper-parameters, small parameters) + arrays.npz
        (read back by `load_predictor`)."""
        self._check_fitted()
        params, arrays = self._get_params()
        arrays = dict(arrays, conformal_scores=np.asarray(self.conformal_scores_, dtype=float))
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        blob = buf.getvalue()
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "kind": self.kind,
            "hyper": self.hyper(),
            "meta": self.meta_,
            "shape": self.shape_.to_dict(),
            "params": params,
            "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
            "arrays_sha256": hashlib.sha256(blob).hexdigest(),
        }
        with atomic_dir(directory, overwrite) as tmp:
            (tmp / "arrays.npz").write_bytes(blob)
            write_json(tmp / "predictor.json", doc)
        return Path(directory)


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones, so messages read 2, not np.int64(2)."""
    return value.item() if isinstance(value, np.generic) else value


def _same(a: Any, b: Any) -> bool:
    """Settings equal as values: 2 == 2.0 == np.int64(2) (a records column read as float), True == 'True'."""
    a, b = _plain(a), _plain(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return str(a).lower() == str(b).lower()
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(a) == float(b)
    return str(a) == str(b)


def _metadata(df: pd.DataFrame, kind: str, n: int, across_shapes: bool) -> dict[str, Any]:
    first = df.iloc[0]
    meta = {
        f: (bool(first[f]) if f == "spinning" else int(first[f]) if f in ("threads", "cpu_cores") else str(first[f]))
        for f in TARGET_FIELDS
    }
    shapes = sorted({(int(b), int(s)) for b, s in zip(df["batch"], df["seq_len"])})
    try:
        version = importlib.metadata.version("dynasearch")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    meta.update(
        kind=kind,
        fingerprint=str(first["fingerprint"]),
        target_id=str(first["target_id"]),
        gpu_driver=str(first["gpu_driver"]),
        torch_version=str(first["torch_version"]),
        onnxruntime_version=str(first["onnxruntime_version"]),
        numpy_version=np.__version__,
        dynasearch_version=version,
        shapes=[list(s) for s in shapes],
        across_shapes=across_shapes,
        n_train=n,
        n_configs=int(df["key"].nunique()),
        latency_column=LATENCY_COLUMN,
        widths_seen=widths_seen(df),
        anchor_reference=anchor_references(df),
        clock=records_clock(df),
        created=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    return meta


def anchor_references(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Per input shape, the anchor config and its reference median (ms) that the fitting records'
    corrected medians are on the scale of: anchor_ms / speed_index of every anchored run; for
    records without an anchor (older ones), the full model's own corrected median when it was
    measured among them (it is the default anchor). A later measurement against the same
    reference (a search's verification) is on the predictor's scale.

    Kept in the metadata as "anchor_reference"; read back as `FittedOn.anchor_ms` (the search's
    `search.verify.anchor_reference` is that for the full model at the verification shape). The
    device runtime's `runtime.schema.anchor_reference` is another thing: the reference a new
    measurement is corrected against, read from a records file's first run."""
    out: dict[tuple[int, int, str], float] = {}
    if "anchor_ms" in df and "speed_index" in df:
        a = pd.to_numeric(df["anchor_ms"], errors="coerce")
        si = pd.to_numeric(df["speed_index"], errors="coerce")
        d = df.assign(_ref=a / si)[(a > 0) & (si > 0)]
        for (b, s, k), g in d.groupby(["batch", "seq_len", "anchor_key"]):
            out[(int(b), int(s), str(k))] = float(g["_ref"].median())
    shape = shape_of(df)
    full = SubnetConfig.full(shape).key
    col = LATENCY_COLUMN if LATENCY_COLUMN in df else "median_ms"
    for (b, s), g in df[df["key"] == full].groupby(["batch", "seq_len"]):
        out.setdefault((int(b), int(s), full), float(pd.to_numeric(g[col], errors="coerce").median()))
    return [{"batch": b, "seq_len": s, "key": k, "ms": v} for (b, s, k), v in sorted(out.items())]


def widths_seen(df: pd.DataFrame) -> dict[str, list[int]]:
    """Sorted distinct per-layer head counts and FFN sizes over the records' configs (whole-model and
    single-layer alike): the widths a predictor was fitted on; others are interpolated."""
    subs = [SubnetConfig.from_json(s) for s in df["subnet"]]
    return {
        "heads": sorted({int(h) for s in subs for h in s.heads}),
        "ffn": sorted({int(f) for s in subs for f in s.ffn}),
    }

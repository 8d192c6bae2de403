"""Measure sub-networks on this machine: extract each one, prepare it on a backend, time it with
the one protocol, append the rows to a records CSV. Re-running skips what is already measured
under the same fingerprint and settings; a config that crashes is recorded as failed."""

from __future__ import annotations

import json
import math
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from dynabert.io import check_writable, remove_stale_temporaries
from dynabert.killpoints import kill_point
from dynabert.subnet import BackboneShape, SubnetConfig, count_flops, count_params
from dynasearch_runtime.clocks import BUSY_RATIO, check_clock
from dynasearch_runtime.driver import Item, measure_items
from dynasearch_runtime.errors import MeasurementError
from dynasearch_runtime.fingerprint import check_seq_lens, machine_info, setting_columns, short_hash
from dynasearch_runtime.protocol import Protocol
from dynasearch_runtime.schema import (
    RECORD_COLUMNS,
    anchor_reference,
    append_rows,
    check_records_path,
    done_keys,
    raw_timings_path,
    row_clocks,
    write_raw_timings,
)

from .backends import BackendSettings, make_backend
from .records import read_records
from .samplers import labels_by_key


def shape_key(shape: BackboneShape) -> str:
    return short_hash(shape.to_dict())


def load_shape(model_dir: str | Path | None) -> BackboneShape:
    """The backbone shape of a model directory from its config.json alone (no weights read), so
    users can measure before training. Falls back to loading the model when the config does not
    say its architecture (old reference checkpoints)."""
    from dynabert.backbone import read_config, resolve_model_dir
    from dynabert.errors import ModelLoadError

    d = resolve_model_dir(model_dir)
    cfg = read_config(d)
    model_type = cfg.get("model_type")
    if model_type in ("bert", "roberta", "xlm-roberta", "camembert", "dynabert"):
        try:
            heads = cfg["num_attention_heads"]
            head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
            ffn = cfg["intermediate_size"]
            if model_type == "dynabert" and _int_list(cfg.get("layer_heads")) and _int_list(cfg.get("layer_ffn")):
                # An export is a backbone of its own: its widest layer, not the source's counts (which
                # exports of older versions carry at the top level).
                heads, ffn = max(cfg["layer_heads"]), max(cfg["layer_ffn"])
            return BackboneShape(
                num_layers=cfg["num_hidden_layers"],
                num_heads=heads,
                head_dim=head_dim,
                hidden_size=cfg["hidden_size"],
                intermediate_size=ffn,
                vocab_size=cfg.get("vocab_size", 30522),
                max_positions=cfg.get("max_position_embeddings", 512),
                type_vocab_size=cfg.get("type_vocab_size", 2),
                num_labels=cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 2,
                flavor=cfg.get("flavor") or ("bert" if model_type == "bert" else "roberta"),
            )
        except KeyError as e:
            raise ModelLoadError(f"{d / 'config.json'} lacks {e.args[0]!r}, needed for the backbone shape") from None
    from dynabert.backbone import load_model
    from dynabert.extract import model_shape

    return model_shape(load_model(d))


def _int_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)


def check_onnx_cache(path: str | Path | None) -> None:
    """Refuse, before anything is measured or written, an ONNX cache that is not a directory or
    cannot be created or written (it is created on first use)."""
    import os

    if path is None:
        return
    p = Path(path)
    if not str(path):
        raise MeasurementError("--onnx-cache is empty; give a directory for the exported ONNX files")
    if p.exists() and not p.is_dir():
        raise MeasurementError(
            f"ONNX cache '{p}' exists and is not a directory; give a directory for the exported ONNX files"
        )
    probe = p if p.exists() else p.resolve().parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise MeasurementError(f"ONNX cache '{p}' cannot be created: '{probe}' is a file, not a directory")
    try:
        check_writable(probe)
    except OSError as e:
        raise MeasurementError(
            f"ONNX cache '{p}' cannot be {'written' if p.exists() else 'created'}: {e.strerror or e} (in '{probe}')"
        ) from None
    if not os.access(probe, os.W_OK):
        raise MeasurementError(f"ONNX cache '{p}' cannot be written (no write permission on '{probe}')")


def static_row(
    shape: BackboneShape, subnet: SubnetConfig, sampler: str, columns: dict[str, Any], run_id: str
) -> dict[str, Any]:
    return dict(
        columns,
        run_id=run_id,
        sampler=sampler,
        key=subnet.key,
        subnet=subnet.to_json(),
        depth=subnet.depth,
        heads_sum=sum(subnet.heads),
        ffn_sum=sum(subnet.ffn),
        params=count_params(shape, subnet)["total"],
        flops=count_flops(shape, subnet, columns["batch"], columns["seq_len"]),
        shape=json.dumps(shape.to_dict(), sort_keys=True),
    )


def resolve_anchor(shape: BackboneShape, anchor: SubnetConfig | str | None) -> SubnetConfig | None:
    """The anchor config: "full" (the whole backbone), a SubnetConfig, or None (no anchor)."""
    if anchor is None:
        return None
    if isinstance(anchor, str):
        if anchor != "full":
            raise MeasurementError(f"anchor must be 'full', a SubnetConfig or None; got {anchor!r}")
        return SubnetConfig.full(shape)
    if not isinstance(anchor, SubnetConfig):
        raise MeasurementError(f"anchor must be 'full', a SubnetConfig or None; got {type(anchor).__name__}")
    return anchor.validate(shape)


def measure(
    shape: BackboneShape,
    subnets: Sequence[SubnetConfig],
    settings: BackendSettings | Sequence[BackendSettings],
    records_path: str | Path,
    protocol: Protocol = Protocol(),
    *,
    model: Any = None,
    sampler: str | Sequence[str] = "file",
    anchor: SubnetConfig | str | None = "full",
    reference_ms: float | None = None,
    onnx_cache: str | Path | None = None,
    resume: bool = True,
    retry_failed: bool = False,
    progress: bool = True,
    warn_busy: bool = True,
) -> pd.DataFrame:
    """Measure `subnets` under each settings (e.g. several batch sizes) and append to `records_path`.

    model: a super-network to extract from; None builds a random-weight one of `shape` once (latency
    does not depend on weights). sampler: one label for all, or one per sub-network (so configs of
    several samplers are interleaved in one run and see the same machine). anchor: a config timed
    in every round of every chunk ("full", the default: the whole backbone; None: none); the run's
    rounds are speed-corrected through it and its median against the first run's (the reference
    stored in the records) is the run's speed index. The raw timings go to
    `<records stem>.raw/<run_id>-<settings_id>.csv` (`read_raw_timings`). reference_ms: the anchor's
    reference median to use instead of the records' first run (e.g. the one a predictor was fitted
    against, so a verification run's speed index and corrected medians are on the predictor's scale).

    Returns the rows this call wrote (records format: raw `median_ms`, `corrected_median_ms`,
    `speed_index`, `speed_spread`, `anchor_key`, `anchor_ms`, `p90_ms`, ...); its
    `attrs["already_measured"]` counts the configs x settings skipped as already measured.

    protocol.clock "cpu" (single-thread CPU settings only, else MeasurementError before any work):
    the medians are the timing thread's CPU time, each row also has its wall median and its busy
    rounds (`busy_rounds`, `busy_share`), and one warning (`busy_warning`) says so when more than
    a third of a setting's rounds were busy (unless `warn_busy` is False)."""
    from tqdm import tqdm

    from dynabert.extract import extract_subnet, random_like

    settings_list = [settings] if isinstance(settings, BackendSettings) else list(settings)
    if not settings_list:
        raise MeasurementError("no settings to measure under")
    for st in settings_list:  # --clock cpu with 2 threads, spinning or a GPU: refuse before any work
        check_clock(protocol.clock, st.threads, st.spinning, st.device)
    if retry_failed and not resume:  # an option that would change nothing: refused, saying what would count
        raise MeasurementError(
            "--retry-failed measures again the configs recorded as failed, and --no-resume measures every config "
            "again anyway: drop one of them"
        )
    subnets = [s.validate(shape) for s in subnets]
    label_of = labels_by_key(subnets, sampler)
    if len(label_of) != len(subnets):
        subnets = list({s.key: s for s in subnets}.values())
    anchor_cfg = resolve_anchor(shape, anchor)
    check_seq_lens([st.seq_len for st in settings_list], shape.to_dict())
    records_path = str(records_path)
    check_records_path(records_path)  # a directory, a device, /proc, a read-only folder: refuse before any timing
    check_onnx_cache(onnx_cache)
    if Path(records_path).exists():
        # The one records reader: another schema, a cut or damaged row, bad cells: refuse before measuring
        # anything (appending would keep the damage and break the next fit).
        read_records(records_path, allow_empty=True, shape=None)
    remove_stale_temporaries(records_path)  # killed runs' leftovers beside it (the runtime's writes do not look)
    run_id = uuid.uuid4().hex[:12]
    skey = shape_key(shape)
    written: list[dict] = []
    skipped = 0
    full = None
    for st in settings_list:
        backend = make_backend(st, onnx_cache)
        try:
            backend.configure()
            machine = machine_info(with_torch=True)
            columns = setting_columns(
                machine,
                st.backend,
                st.device,
                st.provider,
                st.threads,
                st.spinning,
                st.dtype,
                st.batch,
                st.seq_len,
                skey,
            )
            done = done_keys(records_path, columns["settings_id"], retry_failed) if resume else set()
            todo = [s for s in subnets if s.key not in done]
            skipped += len(subnets) - len(todo)
            other = (
                row_clocks(records_path, columns["settings_id"]) - {protocol.clock}
                if len(todo) < len(subnets)
                else set()
            )
            if other:  # resume keeps them: the clock is how a latency is timed, not a setting (not in settings_id)
                warnings.warn(
                    f"{len(subnets) - len(todo)} config(s) of threads {st.threads} batch {st.batch} seq {st.seq_len} were "
                    f"already measured in {records_path} with the {'/'.join(sorted(other))} clock and are kept as they are "
                    f"(resume skips them); to time them with the {protocol.clock} clock, measure into another --out",
                    stacklevel=2,
                )
            if not todo:
                continue
            if full is None:
                full = model if model is not None else random_like(shape)

            def prepare_fn(subnet: SubnetConfig, backend=backend, st=st, full=full):
                def prepare():
                    small = extract_subnet(full, subnet)
                    # Every extracted model reads the same (unsliced) word-embedding rows: share the
                    # tensor instead of one 47 MB copy per model (MiniLM), so a whole setting's configs
                    # fit in memory at once and are interleaved together. Timing is unchanged. Only where
                    # the backend converts nothing (Module.to would convert the shared tensor in place).
                    if st.device == "cpu" and st.dtype == "float32":
                        small.embeddings.word_embeddings.weight = full.embeddings.word_embeddings.weight
                    return backend.prepare(small, subnet.key)

                return prepare

            items = [Item(s.key, static_row(shape, s, label_of[s.key], columns, run_id), prepare_fn(s)) for s in todo]
            anchor_item = None
            if anchor_cfg is not None:
                anchor_item = Item(
                    anchor_cfg.key, static_row(shape, anchor_cfg, "anchor", columns, run_id), prepare_fn(anchor_cfg)
                )
            reference = (
                reference_ms
                if reference_ms is not None
                else (
                    anchor_reference(records_path, columns["settings_id"], anchor_cfg.key)
                    if anchor_cfg is not None
                    else None
                )
            )
            raw_path = raw_timings_path(records_path, run_id, columns["settings_id"])
            desc = f"{st.backend}/{st.device} t{st.threads} b{st.batch} s{st.seq_len}"
            with tqdm(total=len(items), desc=desc, unit="config", disable=not progress, leave=False) as bar:

                def write_rows(rows, path=records_path) -> None:
                    append_rows(path, rows)
                    kill_point("measure-chunk-written")  # test-only: a chunk of records is on disk

                written += measure_items(
                    items,
                    protocol,
                    write_rows,
                    bar.update,
                    anchor=anchor_item,
                    reference_ms=reference,
                    on_raw=lambda t, p=raw_path: write_raw_timings(p, t),
                )
        finally:
            backend.close()
    if not written:
        out = pd.DataFrame(columns=list(RECORD_COLUMNS))
    else:
        all_rows = read_records(records_path)
        out = all_rows[all_rows["run_id"] == run_id].reset_index(drop=True)
    out.attrs["already_measured"] = skipped
    warning = busy_warning(out) if warn_busy else None  # verification says it its own way (wall time judged)
    if warning:
        warnings.warn(warning, stacklevel=2)
    return out


# With the cpu clock, a run whose configs were busy (wall / CPU time above BUSY_RATIO) in more than
# this share of their rounds ran on a machine whose wall-clock latencies were not the models' own.
BUSY_WARN_SHARE = 1 / 3


def busy_warning(rows: pd.DataFrame) -> str | None:
    """One line when, in some setting (settings_id) of these records rows, the configs' mean busy
    share exceeds BUSY_WARN_SHARE (rows of the cpu clock only: the others have no busy share), or None."""
    if not len(rows) or "busy_share" not in rows:
        return None
    share = pd.to_numeric(rows["busy_share"], errors="coerce")
    ok = rows[(rows["status"] == "ok") & share.notna()].assign(_share=share)
    if ok.empty:
        return None
    by = ok.groupby("settings_id", sort=False)
    shares = by["_share"].mean()
    busy = shares[shares > BUSY_WARN_SHARE]
    if busy.empty:
        return None
    sid = busy.idxmax()
    g = ok[ok["settings_id"] == sid]
    first = g.iloc[0]
    wall = pd.to_numeric(g["wall_median_ms"], errors="coerce") / pd.to_numeric(g["median_ms"], errors="coerce")
    more = f" (and {len(busy) - 1} more setting(s))" if len(busy) > 1 else ""
    return (
        f"the machine was busy in {busy[sid]:.0%} of the rounds of threads {first['threads']} batch {first['batch']} "
        f"seq {first['seq_len']}{more}: wall time above {BUSY_RATIO} x the timing thread's CPU time (median wall / CPU "
        f"{wall.median():.2f}); the records hold the CPU-clock medians, wall-clock timings on this machine now are "
        "not the models' latency"
    )


# A run whose speed index is further than this from 1 ran on a machine noticeably faster or slower
# than the reference run's: worth a warning, as its raw latencies are not comparable.
SPEED_WARN = 0.05


def speed_index_warning(speed_index: float, label: str) -> str | None:
    """The one-line warning for a run whose speed index (anchor now against the reference run's) is
    beyond SPEED_WARN, or None; `label` names the settings ('threads 1 batch 1 seq 128:')."""
    if not math.isfinite(speed_index) or abs(speed_index - 1) <= SPEED_WARN:
        return None
    return (
        f"warning: {label} this machine ran {abs(speed_index - 1):.1%} {'slower' if speed_index > 1 else 'faster'} "
        f"than when the reference run was measured; corrected latencies are scaled back to the reference"
    )

"""The kit's runner: reads kit.json, times every models/<key>.onnx with onnxruntime under the same
protocol as `dynasearch measure` (the kit's anchor in every round), appends dynasearch records and
keeps the raw timings beside them. The kit's runner.py calls `main(kit folder)`.

Part of the device runtime (standard library, numpy, onnxruntime; see `dynasearch_runtime`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import uuid
from typing import Tuple

from . import bounds
from .driver import Item, measure_items
from .errors import MeasurementError
from .field_bounds import SHAPE_BOUNDS, Field, first_violation, under
from .fingerprint import (
    CUDA_PROVIDERS,
    check_ort_provider,
    check_seq_lens,
    machine_info,
    max_seq_len,
    ort_feeds,
    ort_run_once,
    ort_session,
    setting_columns,
    threads_warning,
)
from .protocol import PROTOCOL_FIELDS, Protocol
from .schema import (
    anchor_reference,
    append_rows,
    check_records_path,
    done_keys,
    raw_timings_path,
    read_rows,
    write_raw_timings,
)


def _prepare(
    path: str, provider: str, threads: int, spinning: bool, inputs: list, batch: int, seq_len: int, vocab: int
):
    def prepare():
        sess = ort_session(path, provider, threads, spinning)
        return ort_run_once(sess, ort_feeds(inputs, batch, seq_len, vocab))

    return prepare


def _speed_line(rows: list, reference: float | None) -> str:
    ok = [r for r in rows if r["status"] == "ok"]
    si = float(ok[0]["speed_index"]) if ok and ok[0]["speed_index"] != "" else float("nan")
    if si != si:
        return "  no anchor timed: no speed index"
    line = f"  speed index {si:.3f} (anchor {ok[0]['anchor_key']}: {float(ok[0]['anchor_ms']):.3f} ms" + (
        f", reference {reference:.3f} ms)" if reference else "; this run is the reference)"
    )
    if abs(si - 1) > 0.05:
        line += f"\n  warning: this machine ran {abs(si - 1):.1%} {'slower' if si > 1 else 'faster'} than when the reference was measured"
    return line


KIT_VERSION = 2  # kit.json's format (`dynasearch kit` writes it; this runner reads only it)
_CONFIG_FIELDS: Tuple[Field, ...] = (
    ("depth", "depth", False),
    ("heads_sum", "count0", False),
    ("ffn_sum", "count0", False),
    ("params", "params", False),
    ("flops.*", "flops", False),
)
# Every number of kit.json by its kind in the bounds table (`field_bounds.Field`); the settings' seq_len is
# also capped by the backbone's positions; Protocol also checks how the protocol's numbers relate.
KIT_FIELDS: Tuple[Field, ...] = (
    (
        ("threads.*", "threads", False),
        ("batch.*", "batch", False),
        ("seq_len.*", "seq_len", False),
        ("vocab_size", "vocab", False),
    )
    + tuple((f"configs.*.{p}", kind, nullable) for p, kind, nullable in _CONFIG_FIELDS)
    + tuple((f"anchor.{p}", kind, nullable) for p, kind, nullable in _CONFIG_FIELDS)
    + under("protocol", PROTOCOL_FIELDS)
)
# kit.json's shape is the backbone's, as a JSON text (the records' shape cell)
KIT_SHAPE_FIELDS = SHAPE_BOUNDS


def read_kit(kit_dir: str) -> dict:
    """kit.json, checked: MeasurementError (one line) for a missing, cut or foreign file."""
    path = os.path.join(kit_dir, "kit.json")
    try:
        with open(path, encoding="utf-8") as f:
            kit = json.load(f)
    except (OSError, ValueError) as e:
        raise MeasurementError(f"cannot read the kit file '{path}': {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(kit, dict) or kit.get("kit_version") != KIT_VERSION:
        version = kit.get("kit_version") if isinstance(kit, dict) else None
        raise MeasurementError(
            f"kit file '{path}' has kit_version {version!r}; this runner reads version {KIT_VERSION} "
            "(write the kit again with `dynasearch kit`)"
        )
    missing = [
        k
        for k in (
            "threads",
            "batch",
            "seq_len",
            "provider",
            "spinning",
            "protocol",
            "configs",
            "shape",
            "shape_key",
            "vocab_size",
        )
        if k not in kit
    ]
    if missing:
        raise MeasurementError(f"kit file '{path}' lacks key {missing[0]!r}; write the kit again with `dynasearch kit`")
    again = "write the kit again with `dynasearch kit`"
    for key in ("threads", "batch", "seq_len", "configs"):
        if not isinstance(kit[key], list) or not kit[key]:
            raise MeasurementError(
                f"kit file '{path}' has {key} {kit[key]!r:.60}; it must be a non-empty list ({again})"
            )
    try:
        shape = json.loads(kit["shape"]) if isinstance(kit["shape"], str) else None
    except ValueError:
        shape = None
    if not isinstance(shape, dict):
        raise MeasurementError(
            f"kit file '{path}' has shape {str(kit['shape'])[:60]!r}; it must be the backbone shape as JSON text "
            f"({again})"
        )
    bad = first_violation(shape, KIT_SHAPE_FIELDS)
    if bad:
        raise MeasurementError(f"kit file '{path}' has shape.{bad[0]} {bad[1]!r}; it must be {bad[2]} ({again})")
    bad = first_violation(kit, KIT_FIELDS, {"seq_len": (max_seq_len(shape), "the backbone's positions")})
    if bad:
        raise MeasurementError(f"kit file '{path}' has {bad[0]} {bad[1]!r}; it must be {bad[2]} ({again})")
    try:
        Protocol.from_dict(kit["protocol"])
    except MeasurementError as e:
        raise MeasurementError(f"kit file '{path}': {e} ({again})") from None
    return kit


def main(kit_dir: str, argv: list | None = None) -> int:
    """Run the kit in kit_dir with these arguments (default: sys.argv); the exit status."""
    try:
        kit = read_kit(kit_dir)
    except MeasurementError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ap = argparse.ArgumentParser(
        description="Time this kit's ONNX models with onnxruntime (needs only Python, numpy, onnxruntime) "
        "and append dynasearch latency records; feed them to `dynasearch fit-predictor`."
    )
    ap.add_argument(
        "--out",
        default=os.path.join(kit_dir, "records.csv"),
        help="records CSV (appended; default: records.csv in the kit)",
    )
    ap.add_argument(
        "--threads", type=int, nargs="+", default=kit["threads"], help=f"intra-op threads (default {kit['threads']})"
    )
    ap.add_argument("--batch", type=int, nargs="+", default=kit["batch"], help=f"batch sizes (default {kit['batch']})")
    ap.add_argument(
        "--seq-len", type=int, nargs="+", default=kit["seq_len"], help=f"sequence lengths (default {kit['seq_len']})"
    )
    ap.add_argument(
        "--provider", default=kit["provider"], help=f"onnxruntime execution provider (default {kit['provider']})"
    )
    ap.add_argument(
        "--spinning",
        choices=["on", "off"],
        default="on" if kit["spinning"] else "off",
        help="onnxruntime intra-op thread spinning (off is the stable setting on few cores)",
    )
    ap.add_argument("--limit", type=int, default=None, help="measure only the first N configs (a quick trial)")
    ap.add_argument("--no-resume", action="store_true", help="measure again what the records already hold")
    ap.add_argument("--retry-failed", action="store_true", help="measure again configs recorded as failed")
    args = ap.parse_args(argv)
    n_ok = n_failed = n_done = 0
    try:
        for name in ("threads", "batch", "seq_len"):  # the kind of each option is its own name
            for v in getattr(args, name):
                bounds.check(name, v, f"--{name.replace('_', '-')}", MeasurementError)
        check_seq_lens(args.seq_len, json.loads(kit["shape"]))
        check_records_path(args.out)
        if os.path.exists(args.out):
            read_rows(args.out)  # another schema: refuse before timing anything
        check_ort_provider(args.provider)
        warning = threads_warning(args.threads)
        if warning:
            print(warning, file=sys.stderr, flush=True)
        protocol = Protocol.from_dict(kit["protocol"])
        machine = machine_info(with_torch=False)
        device = "cuda" if args.provider in CUDA_PROVIDERS else "cpu"
        spinning = args.spinning == "on"
        configs = kit["configs"][: args.limit] if args.limit else kit["configs"]
        anchor_cfg = kit.get("anchor")
        run_id = uuid.uuid4().hex[:12]
        for threads, batch, seq_len in itertools.product(args.threads, args.batch, args.seq_len):
            cols = setting_columns(
                machine,
                "onnxruntime",
                device,
                args.provider,
                threads,
                spinning,
                "float32",
                batch,
                seq_len,
                kit["shape_key"],
            )
            done = set() if args.no_resume else done_keys(args.out, cols["settings_id"], args.retry_failed)

            def item(c, cols=cols, threads=threads, batch=batch, seq_len=seq_len):
                row = dict(
                    cols,
                    run_id=run_id,
                    sampler=c["sampler"],
                    key=c["key"],
                    subnet=c["subnet"],
                    depth=c["depth"],
                    heads_sum=c["heads_sum"],
                    ffn_sum=c["ffn_sum"],
                    params=c["params"],
                    flops=c["flops"].get(f"{batch}x{seq_len}", ""),
                    shape=kit["shape"],
                )
                path = os.path.join(kit_dir, "models", c["key"] + ".onnx")
                return Item(
                    c["key"],
                    row,
                    _prepare(path, args.provider, threads, spinning, c["inputs"], batch, seq_len, kit["vocab_size"]),
                )

            items = [item(c) for c in configs if c["key"] not in done]
            n_done += len(configs) - len(items)
            total, count = len(items), [0]
            print(
                f"threads {threads} batch {batch} seq {seq_len}: {total} to measure, {len(configs) - total} already measured in {args.out}",
                flush=True,
            )
            if not items:
                continue
            anchor = item(anchor_cfg) if anchor_cfg else None
            reference = anchor_reference(args.out, cols["settings_id"], anchor.key) if anchor else None
            raw_path = raw_timings_path(args.out, run_id, cols["settings_id"])

            def progress(n: int, total=total, count=count, threads=threads, batch=batch, seq_len=seq_len) -> None:
                count[0] += n
                print(f"threads {threads} batch {batch} seq {seq_len}: {count[0]}/{total} configs", flush=True)

            rows = measure_items(
                items,
                protocol,
                lambda rows: append_rows(args.out, rows),
                progress,
                anchor=anchor,
                reference_ms=reference,
                on_raw=lambda t, p=raw_path: write_raw_timings(p, t),
            )
            n_ok += sum(r["status"] == "ok" for r in rows)
            n_failed += sum(r["status"] != "ok" for r in rows)
            print(_speed_line(rows, reference), flush=True)
            for r in [r for r in rows if r["status"] != "ok"][:5]:
                print(f"  failed {r['key']}: {r['error']}", flush=True)
    except MeasurementError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished chunks are saved, run again to resume", file=sys.stderr)
        return 130
    if n_failed and not n_ok:
        print(f"error: none of the {n_failed} configs could be measured (see the failures above)", file=sys.stderr)
        return 1
    print(
        f"measured {n_ok + n_failed} config x setting rows ({n_ok} ok, {n_failed} failed), {n_done} already measured, into {args.out}"
    )
    return 0

"""dynasearch measure [MODEL_DIR] --out RECORDS.csv: time sub-networks on this machine."""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys

from .common import (
    add_config_args,
    add_model_arg,
    add_protocol_args,
    bounded,
    check_config_args,
    configs_from_args,
    print_warnings,
    protocol_from_args,
)


def register(sub) -> None:
    from predictors import schema_markdown  # predictors (pandas): not on the query path

    p = sub.add_parser(
        "measure",
        help="measure latency of extracted sub-networks on this machine (torch or onnxruntime) into a records CSV",
        description="Times extracted sub-networks (random weights of the backbone's shape: only the shape "
        "matters) with one protocol: warm-up until stable, interleaved rounds in random order, stop when "
        "the confidence interval of the median is within --rel-ci or at a cap. An anchor (the full model) is timed "
        "in every round; each round's speed factor is fitted from all configs timed in it, and every config gets its "
        "raw and its speed-corrected median; the run's speed index is the anchor against the first run's. Raw timings "
        "are kept in RECORDS.raw/. Appends to the records CSV; a re-run skips configs already measured under the same "
        "fingerprint and settings.",
        epilog="records columns:\n" + schema_markdown().replace("%", "%%"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arg(p)
    p.add_argument("--out", required=True, metavar="RECORDS.csv", help="records file (created or appended)")
    g = p.add_argument_group("where and how it runs")
    g.add_argument("--backend", default="onnxruntime", help="onnxruntime (default) or torch")
    g.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    g.add_argument("--provider", default="", help="onnxruntime execution provider (default: from --device)")
    g.add_argument(
        "--threads",
        type=bounded("threads"),
        nargs="+",
        default=[1],
        help="intra-op threads, one or more settings (default 1)",
    )
    g.add_argument(
        "--spinning",
        choices=["on", "off"],
        default="off",
        help="onnxruntime thread spinning (default off: on few shared cores it ruins timings)",
    )
    g.add_argument(
        "--dtype",
        default="float32",
        help="float32 (default); torch also float16, bfloat16; onnxruntime also int8 (the export quantised, dynamic)",
    )
    g.add_argument("--batch", type=bounded("batch"), nargs="+", default=[1], help="batch sizes (default 1)")
    g.add_argument(
        "--seq-len", type=bounded("seq_len"), nargs="+", default=[128], help="sequence lengths (default 128)"
    )
    add_config_args(p)
    add_protocol_args(p)
    p.add_argument(
        "--onnx-cache", metavar="DIR", help="keep exported ONNX files here for later runs (default: temporary)"
    )
    p.add_argument("--no-resume", action="store_true", help="measure again configs the records already hold")
    p.add_argument("--retry-failed", action="store_true", help="measure again configs recorded as failed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    with print_warnings():  # an older records format is one 'warning: ...' line
        return _run(args)


def _run(args) -> int:
    from predictors import (  # predictors (pandas): not on the query path
        BackendSettings,
        MeasurementError,
        check_onnx_cache,
        check_records_path,
        load_shape,
        make_backend,
        measure,
        read_records,
        speed_index_warning,
        threads_warning,
    )

    check_config_args(args)  # --sampler/--n that choose nothing: refused before any work
    check_records_path(args.out)  # a directory, a device or an unwritable place: refuse before any work
    check_onnx_cache(args.onnx_cache)  # a file, an unwritable place: refuse before a config fails on it
    if args.onnx_cache is not None and args.backend == "torch":  # a cache that would stay empty
        raise MeasurementError(
            f"--onnx-cache {args.onnx_cache} keeps exported ONNX files, and the torch backend exports none: "
            "measure with --backend onnxruntime, or drop --onnx-cache"
        )
    if os.path.exists(args.out):
        read_records(args.out, allow_empty=True)  # damaged records: refuse before loading anything
    settings = [
        BackendSettings(args.backend, args.device, t, args.spinning == "on", args.dtype, b, s, args.provider)
        for t, b, s in itertools.product(args.threads, args.batch, args.seq_len)
    ]
    make_backend(settings[0]).close()  # unknown provider, CUDA without a GPU: fail before any work
    warning = threads_warning(args.threads)
    if warning:
        print(warning, file=sys.stderr)
    protocol = protocol_from_args(args)
    shape = load_shape(args.model_dir)
    subnets, sampler = configs_from_args(args, shape)
    rows = measure(
        shape,
        subnets,
        settings,
        args.out,
        protocol,
        sampler=sampler,
        onnx_cache=args.onnx_cache,
        resume=not args.no_resume,
        retry_failed=args.retry_failed,
        progress=not args.no_progress,
    )
    skipped = rows.attrs.get("already_measured", 0)
    n_ok = int((rows["status"] == "ok").sum()) if len(rows) else 0
    n_failed = len(rows) - n_ok
    if not len(rows):
        print(
            f"nothing to measure: {skipped} config x setting rows already measured in {args.out} (--no-resume measures them again)"
        )
        return 0
    print(
        f"measured {len(rows)} config x setting rows ({n_ok} ok, {n_failed} failed) into {args.out}"
        + (f"; {skipped} already measured" if skipped else "")
    )
    if n_ok:
        ok = rows[rows["status"] == "ok"]
        print(
            f"  median latency {ok['median_ms'].min():.3f}-{ok['median_ms'].max():.3f} ms raw, "
            f"{ok['corrected_median_ms'].min():.3f}-{ok['corrected_median_ms'].max():.3f} ms speed-corrected, "
            f"median CV {ok['cv'].median():.3%}, converged {ok['converged'].mean():.0%}, "
            f"{ok['measure_s'].mean() + ok['prepare_s'].mean():.2f} s per config"
        )
        for _sid, g in ok.groupby("settings_id", sort=False):
            first = g.iloc[0]
            si, spread = float(first["speed_index"]), float(first["speed_spread"])
            label = f"  threads {first['threads']} batch {first['batch']} seq {first['seq_len']}:"
            if not math.isfinite(si):
                print(f"{label} no anchor timed, so no speed index (round speed spread {spread:.3f})")
                continue
            ref = float(first["anchor_ms"]) / si
            print(
                f"{label} speed index {si:.3f} (anchor {first['anchor_key']} {float(first['anchor_ms']):.3f} ms, "
                f"reference {ref:.3f} ms); speed spread over the run's rounds {spread:.3f}"
            )
            warning = speed_index_warning(si, label.strip())
            if warning:
                print(warning, file=sys.stderr)
    if n_failed:
        for _, r in rows[rows["status"] != "ok"].head(5).iterrows():
            print(f"  failed {r['key']}: {r['error']}")
    if not n_ok:
        print(f"error: none of the {n_failed} configs could be measured (see the failures above)", file=sys.stderr)
        return 1
    return 0

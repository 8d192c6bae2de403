# <in-package>
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import uuid

from ._core import (
    CUDA_PROVIDERS, Item, MeasurementError, Protocol, append_rows, check_ort_provider, done_keys, machine_info,
    measure_items, ort_feeds, ort_run_once, ort_session, setting_columns,
)
# </in-package>
# ------------------------------------------------------------------------------- kit runner
# The part of runner.py below the shared protocol: reads kit.json, times every models/<key>.onnx
# with onnxruntime under the same protocol as `dynasearch measure`, appends dynasearch records.
import argparse  # noqa: E402,F811
import itertools  # noqa: E402,F811
import uuid  # noqa: E402,F811


def _prepare(path: str, provider: str, threads: int, spinning: bool, inputs: list, batch: int, seq_len: int, vocab: int):
    def prepare():
        sess = ort_session(path, provider, threads, spinning)
        return ort_run_once(sess, ort_feeds(inputs, batch, seq_len, vocab))

    return prepare


def runner_main(kit_dir: str, argv: list | None = None) -> int:
    with open(os.path.join(kit_dir, "kit.json"), encoding="utf-8") as f:
        kit = json.load(f)
    ap = argparse.ArgumentParser(
        description="Time this kit's ONNX models with onnxruntime (needs only Python, numpy, onnxruntime) "
        "and append dynasearch latency records; feed them to `dynasearch fit-predictor`."
    )
    ap.add_argument("--out", default=os.path.join(kit_dir, "records.csv"), help="records CSV (appended; default: records.csv in the kit)")
    ap.add_argument("--threads", type=int, nargs="+", default=kit["threads"], help=f"intra-op threads (default {kit['threads']})")
    ap.add_argument("--batch", type=int, nargs="+", default=kit["batch"], help=f"batch sizes (default {kit['batch']})")
    ap.add_argument("--seq-len", type=int, nargs="+", default=kit["seq_len"], help=f"sequence lengths (default {kit['seq_len']})")
    ap.add_argument("--provider", default=kit["provider"], help=f"onnxruntime execution provider (default {kit['provider']})")
    ap.add_argument("--spinning", choices=["on", "off"], default="on" if kit["spinning"] else "off",
                    help="onnxruntime intra-op thread spinning (off is the stable setting on few cores)")
    ap.add_argument("--limit", type=int, default=None, help="measure only the first N configs (a quick trial)")
    ap.add_argument("--no-resume", action="store_true", help="measure again what the records already hold")
    ap.add_argument("--retry-failed", action="store_true", help="measure again configs recorded as failed")
    args = ap.parse_args(argv)
    try:
        for name in ("threads", "batch", "seq_len"):
            bad = [v for v in getattr(args, name) if v < 1]
            if bad:
                raise MeasurementError(f"--{name.replace('_', '-')} must be positive integers; got {bad}")
        check_ort_provider(args.provider)
        protocol = Protocol.from_dict(kit["protocol"])
        machine = machine_info(with_torch=False)
        device = "cuda" if args.provider in CUDA_PROVIDERS else "cpu"
        spinning = args.spinning == "on"
        configs = kit["configs"][: args.limit] if args.limit else kit["configs"]
        run_id = uuid.uuid4().hex[:12]
        for threads, batch, seq_len in itertools.product(args.threads, args.batch, args.seq_len):
            cols = setting_columns(machine, "onnxruntime", device, args.provider, threads, spinning, "float32", batch, seq_len, kit["shape_key"])
            done = set() if args.no_resume else done_keys(args.out, cols["settings_id"], args.retry_failed)
            items = []
            for c in configs:
                if c["key"] in done:
                    continue
                row = dict(
                    cols, run_id=run_id, sampler=c["sampler"], key=c["key"], subnet=c["subnet"], depth=c["depth"],
                    heads_sum=c["heads_sum"], ffn_sum=c["ffn_sum"], params=c["params"],
                    flops=c["flops"].get(f"{batch}x{seq_len}", ""), shape=kit["shape"],
                )
                path = os.path.join(kit_dir, "models", c["key"] + ".onnx")
                items.append(Item(c["key"], row, _prepare(path, args.provider, threads, spinning, c["inputs"], batch, seq_len, kit["vocab_size"])))
            total, count = len(items), [0]

            def progress(n: int, total=total, count=count, threads=threads, batch=batch, seq_len=seq_len) -> None:
                count[0] += n
                print(f"threads {threads} batch {batch} seq {seq_len}: {count[0]}/{total} configs", flush=True)

            print(f"threads {threads} batch {batch} seq {seq_len}: {total} to measure, {len(done)} already in {args.out}", flush=True)
            measure_items(items, protocol, lambda rows: append_rows(args.out, rows), progress)
    except MeasurementError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished chunks are saved, run again to resume", file=sys.stderr)
        return 130
    return 0

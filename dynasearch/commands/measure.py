"""dynasearch measure [MODEL_DIR] --out RECORDS.csv: time sub-networks on this machine."""

from __future__ import annotations

import argparse
import os

from .common import add_model_arg, positive_int


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number; got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number; got {text}")
    return v


def add_config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("which sub-networks")
    g.add_argument(
        "--sampler",
        default="uniform",
        help="grid (the paper's 12), uniform (per-layer choices), flops (even cover of the FLOP range), "
        "layer-table (single-layer configs for the lookup-table predictor); several separated by commas "
        "are measured in one run, e.g. layer-table,uniform; default uniform",
    )
    g.add_argument("--n", type=positive_int, default=50, help="configs to sample (uniform, flops; default 50)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    g.add_argument(
        "--subnets", metavar="FILE.json", help="measure these instead: a JSON list of {layers, heads, ffn} objects"
    )


def add_protocol_args(p: argparse.ArgumentParser) -> None:
    from predictors.runtime.protocol import Protocol

    d = Protocol()
    g = p.add_argument_group("timing protocol")
    g.add_argument(
        "--rel-ci",
        type=positive_float,
        default=d.rel_ci,
        help=f"stop when the 95%% CI of the median is within this fraction (default {d.rel_ci})",
    )
    g.add_argument(
        "--min-runs", type=positive_int, default=d.min_runs, help=f"timed runs at least (default {d.min_runs})"
    )
    g.add_argument(
        "--min-visits",
        type=positive_int,
        default=d.min_visits,
        help=f"rounds a config's timed runs must span before it may stop early (default {d.min_visits})",
    )
    g.add_argument(
        "--runs-per-visit",
        type=positive_int,
        default=d.runs_per_visit,
        help=f"timed runs each time a config's turn comes (default {d.runs_per_visit})",
    )
    g.add_argument(
        "--max-runs", type=positive_int, default=d.max_runs, help=f"timed runs at most (default {d.max_runs})"
    )
    g.add_argument(
        "--max-seconds",
        type=positive_float,
        default=d.max_seconds,
        help=f"timed seconds per config at most (default {d.max_seconds})",
    )
    g.add_argument(
        "--chunk-size",
        type=positive_int,
        default=d.chunk_size,
        help=f"configs interleaved at once (default {d.chunk_size})",
    )


def protocol_from_args(args):
    from predictors.runtime.protocol import Protocol

    return Protocol(
        rel_ci=args.rel_ci,
        min_runs=args.min_runs,
        min_visits=args.min_visits,
        runs_per_visit=args.runs_per_visit,
        max_runs=args.max_runs,
        max_seconds=args.max_seconds,
        chunk_size=args.chunk_size,
        seed=args.seed,
    )


def configs_from_args(args, shape) -> tuple[list, list[str]]:
    """(subnets, one sampler label each) from --subnets FILE or --sampler/--n/--seed; --sampler may
    name several samplers separated by commas (e.g. layer-table,uniform), measured in one run."""
    from dynabert.errors import InvalidSubnetError
    from dynabert.io import read_json
    from dynabert.space import SearchSpace
    from dynabert.subnet import SubnetConfig
    from predictors.samplers import sample_configs

    if args.subnets:
        # The one JSON reader: unreadable, a directory, not UTF-8, truncated -> one line naming the file.
        data = read_json(args.subnets, "subnet file", error=InvalidSubnetError, kind=object)
        items = data if isinstance(data, list) else [data]
        if not items:
            raise InvalidSubnetError(f"subnet file {args.subnets} holds an empty list; give at least one sub-network")
        try:
            subnets = [SubnetConfig.from_dict(d).validate(shape) for d in items]
        except InvalidSubnetError as e:
            raise InvalidSubnetError(f"{args.subnets}: {e}") from None
        return subnets, ["file"] * len(subnets)
    first = args.batch[0] if isinstance(args.batch, list) else args.batch
    seq = args.seq_len[0] if isinstance(args.seq_len, list) else args.seq_len
    subnets, labels, seen = [], [], set()
    for name in sampler_names(args.sampler):
        for s in sample_configs(name, SearchSpace.default(shape), args.n, args.seed, first, seq):
            if s.key not in seen:  # a config two samplers drew is measured once, under the first one's label
                seen.add(s.key)
                subnets.append(s)
                labels.append(name)
    return subnets, labels


def sampler_names(text: str) -> list[str]:
    """'layer-table,uniform' -> ['layer-table', 'uniform']; unknown or empty names: MeasurementError."""
    from predictors.runtime.errors import MeasurementError
    from predictors.samplers import SAMPLERS

    names = [n.strip() for n in str(text).split(",")]
    bad = [n for n in names if n not in SAMPLERS]
    if bad:
        raise MeasurementError(
            f"unknown sampler {', '.join(repr(n) for n in bad)} in --sampler {text!r}; allowed: "
            f"{', '.join(SAMPLERS)} (several separated by commas)"
        )
    return names


def register(sub) -> None:
    from predictors.records import schema_markdown

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
        type=positive_int,
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
    g.add_argument("--dtype", default="float32", help="float32 (default); torch also float16, bfloat16")
    g.add_argument("--batch", type=positive_int, nargs="+", default=[1], help="batch sizes (default 1)")
    g.add_argument("--seq-len", type=positive_int, nargs="+", default=[128], help="sequence lengths (default 128)")
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
    from .common import print_warnings

    with print_warnings():  # an older records format is one 'warning: ...' line
        return _run(args)


def _run(args) -> int:
    import itertools
    import math
    import sys

    from predictors.backends import BackendSettings, make_backend
    from predictors.measure import check_onnx_cache, load_shape, measure
    from predictors.records import read_records
    from predictors.runtime.fingerprint import threads_warning
    from predictors.runtime.schema import check_records_path

    if not args.subnets:
        sampler_names(args.sampler)
    check_records_path(args.out)  # a directory, a device or an unwritable place: refuse before any work
    check_onnx_cache(args.onnx_cache)  # a file, an unwritable place: refuse before a config fails on it
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
            if abs(si - 1) > 0.05:
                print(
                    f"warning: {label.strip()} this machine ran {abs(si - 1):.1%} {'slower' if si > 1 else 'faster'} than when "
                    f"the reference run was measured; corrected latencies are scaled back to the reference",
                    file=sys.stderr,
                )
    if n_failed:
        for _, r in rows[rows["status"] != "ok"].head(5).iterrows():
            print(f"  failed {r['key']}: {r['error']}")
    if not n_ok:
        print(f"error: none of the {n_failed} configs could be measured (see the failures above)", file=sys.stderr)
        return 1
    return 0

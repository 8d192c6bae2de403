"""dynasearch fit-predictor RECORDS.csv [...] --out DIR: fit latency predictors and report held-out error."""

from __future__ import annotations

from dynabert.io import check_output_dir

from .common import bounded, print_warnings


def register(sub) -> None:
    p = sub.add_parser(
        "fit-predictor",
        help="fit latency predictors on records; print and save held-out MAPE, RMSE, +-5/10%%, Kendall tau, Spearman",
        description="Splits the records into fitting and held-out configs (and held-out input shapes with "
        "--across-shapes), fits each predictor kind on the fitting part, and writes DIR/metrics.csv, metrics.json, "
        "predictions.csv, learning_curve.csv, plots and DIR/predictors/<kind>/ (JSON + arrays).",
    )
    p.add_argument(
        "records", nargs="+", metavar="RECORDS.csv", help="records from `dynasearch measure` or a kit's runner"
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (must not exist unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    p.add_argument(
        "--kind", default="all", help="comma-separated: lut, layer-regression, gbdt, hybrid, or all (default)"
    )
    p.add_argument("--target", metavar="TARGET_ID", help="use only records of this target_id (fingerprint + settings)")
    p.add_argument("--batch", type=bounded("batch"), help="use only records of this batch size")
    p.add_argument("--seq-len", type=bounded("seq_len"), help="use only records of this sequence length")
    p.add_argument(
        "--across-shapes", action="store_true", help="one predictor over several batch sizes and sequence lengths"
    )
    p.add_argument(
        "--test-fraction", type=bounded("test_fraction"), default=0.3, help="share of configs held out (default 0.3)"
    )
    p.add_argument("--max-train", type=bounded("count"), help="use at most this many records for fitting")
    p.add_argument("--seed", type=bounded("seed"), default=0, help="split seed (default 0)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(func=run)


def run(args) -> int:
    with print_warnings():  # an older records format is one 'warning: ...' line
        return _run(args)


def _run(args) -> int:
    from predictors import (  # predictors (pandas): not on the query path
        fit_and_evaluate,
        format_table,
        predictor_kinds,
        read_records,
        select_records,
    )

    check_output_dir(args.out, args.overwrite)
    kinds = predictor_kinds(args.kind, args.across_shapes)
    df = select_records(read_records(args.records), args.target, args.batch, args.seq_len)
    report = fit_and_evaluate(
        df,
        kinds,
        args.out,
        test_fraction=args.test_fraction,
        seed=args.seed,
        max_train=args.max_train,
        across_shapes=args.across_shapes,
        overwrite=args.overwrite,
        plots=not args.no_plots,
    )
    print(
        f"{report['backend']} {report['provider'] or report['device']}, threads {report['threads']}, "
        f"spinning {'on' if report['spinning'] else 'off'}, clock {report['clock']}; shapes fitted {report['shapes_train'][:6]}"
        f"{' ...' if len(report['shapes_train']) > 6 else ''}, held out {report['shapes_test'][:6]}"
    )
    si = report["speed_index"]
    print(
        f"fitting on {report['latency_column']} (speed-corrected medians; raw median_ms kept in the records)"
        + (f"; runs' speed index {si['min']:.3f}-{si['max']:.3f}" if si["min"] is not None else "")
        + (
            f"; {si['runs_uncorrected']} of {si['runs']} run(s) uncorrected (no anchor or older records)"
            if si["runs_uncorrected"]
            else ""
        )
    )
    print(f"fitted on {report['n_train']} records, evaluated on {report['n_test']} held-out records:")
    print(format_table(report["results"]))
    print(
        f"best: {report['best']}; saved to {report['out_dir']} (predictors/<kind>/, metrics.csv, learning_curve.csv, plots)"
    )
    return 0

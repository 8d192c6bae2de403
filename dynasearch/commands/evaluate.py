"""dynasearch evaluate RUN --task ... --data-dir ... [--grid | --subnet FILE | --width W --depth D]"""

from __future__ import annotations

from .common import add_subnet_args, add_task_args, bounded, task_from_args


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score sub-networks of a trained run on a dev set (CSV table + width x depth heatmap)",
        description="Writes OUT/<stem>.csv (key, width, depth, layers, heads, ffn, params, encoder_params, "
        "metrics in percent, seconds, examples) and OUT/<stem>.png (heatmap of the first metric). "
        "RUN is a training run (its latest finished stage is used, or --stage) or a model directory.",
    )
    p.add_argument("run", metavar="RUN", help="run directory or model directory")
    add_task_args(p)
    p.add_argument("--stage", help="which finished stage of RUN to evaluate (default: the latest)")
    p.add_argument(
        "--grid", action="store_true", help="all paper grid points (the default without --subnet/--width/--depth)"
    )
    add_subnet_args(p, required=False)
    p.add_argument(
        "--max-seq-length", type=bounded("max_seq_length"), default=None, help="default: the run's, else 128"
    )
    p.add_argument("--batch-size", type=bounded("batch"), default=128)
    p.add_argument("--out", metavar="DIR", help="output folder (default RUN/eval)")
    p.add_argument(
        "--dev-subset",
        type=bounded("count"),
        default=None,
        metavar="N",
        help="score a seeded subset of N dev examples (the one `search --rescore-dev N` uses; default: all)",
    )
    p.add_argument("--bf16", action="store_true", help="bfloat16 matrix products: faster on CPUs with AVX512-BF16/AMX")
    p.set_defaults(func=run, _parser=p)


def run(args) -> int:
    from pathlib import Path

    from dynabert.evaluate import EvalInputs, evaluate_run
    from dynabert.io import check_output_dir
    from dynabert.runs import run_model_dir, run_task

    if args.out:  # a file, /proc, a read-only folder: refuse before scoring (its tables are replaced)
        check_output_dir(args.out, overwrite=True)
    if args.train_file is not None:  # evaluate reads dev only: the option would change nothing
        args._parser.error("--train-file is not read: evaluate scores the dev split (--dev-file picks its file)")
    if args.grid and (args.subnet is not None or args.width is not None or args.depth is not None):
        args._parser.error("--grid scores every grid point; --subnet/--width/--depth pick one: give one of them")
    if not args.task and (args.text_col or args.label_col or args.text_pair_col or args.regression):
        args._parser.error("--text-col/--text-pair-col/--label-col/--regression need --task csv")
    task = task_from_args(args, args._parser.error) if args.task else run_task(args.run)
    if task is None:
        args._parser.error("--task is needed: RUN is not a training run that records its task")
    subnet = None
    grid = args.grid or (args.subnet is None and args.width is None and args.depth is None)
    if not grid:
        from dynabert.backbone import load_model
        from dynabert.extract import model_shape

        from .common import subnet_from_args

        shape = model_shape(load_model(run_model_dir(args.run, args.stage)))
        subnet = subnet_from_args(args, shape, args._parser.error)
    inputs = EvalInputs(
        args.run,
        task,
        args.data_dir,
        args.dev_file,
        args.stage,
        args.max_seq_length,
        args.batch_size,
        subnet,
        Path(args.out) if args.out else None,
        args.bf16,
        args.dev_subset,
    )
    table, csv_path, png_path = evaluate_run(inputs)
    metric = task.metrics[0]
    cols = ["width", "depth", "params", *[m for m in task.metrics], "seconds"]
    print(table[[c for c in cols if c in table.columns]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {csv_path}" + (f" and {png_path}" if png_path.is_file() else "") + f" (metric {metric})")
    return 0

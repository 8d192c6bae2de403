"""dynasearch loadtest URL --bundle BUNDLE: an open-loop load test of a dynasearch server on this machine."""

from __future__ import annotations

from .common import bounded


def register(sub) -> None:
    p = sub.add_parser(
        "loadtest",
        help="open-loop Poisson load on a `dynasearch serve` server (loopback), with the bundle's report examples",
        description="Sends the bundle's held-out report examples (labelled) in one seeded order at Poisson arrivals "
        "following --schedule, measures each latency from its intended send time, and reports SLO attainment, "
        "p50/p95/p99, goodput, served and effective accuracy, shed requests and sub-network switches.",
    )
    p.add_argument("url", metavar="URL", help="the server, e.g. http://127.0.0.1:8000 (this machine only)")
    p.add_argument("--bundle", required=True, help="the bundle the server serves (its report examples)")
    p.add_argument("--data-dir", default=None, help="the task's data folder (default: the one the search recorded)")
    p.add_argument(
        "--schedule", default="20:30", help="RATE:SECONDS phases, e.g. 20:30 (constant) or 10:20,60:20,10:20 (a step)"
    )
    p.add_argument("--texts", type=bounded("texts"), default=1, help="texts per request (default 1)")
    p.add_argument("--seed", type=bounded("seed"), default=0, help="arrivals and example order (default 0)")
    p.add_argument("--name", default="dynabert", help="model name (default dynabert)")
    p.add_argument("--out", default=None, metavar="FILE.json", help="write the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import os

    from dynabert.io import write_text
    from dynasearch.loadtest import LoadtestConfig, LoadtestError, format_summary, loadtest, parse_schedule

    cfg = LoadtestConfig(
        args.url, args.bundle, parse_schedule(args.schedule), args.data_dir, args.name, args.texts, args.seed
    )
    if args.out and os.path.isdir(args.out):  # found failing after the whole run, as an internal error
        raise LoadtestError(
            f"--out {args.out} is a folder; give the summary's file, e.g. {os.path.join(args.out, 'summary.json')}"
        )
    summary = loadtest(cfg, progress=print)
    print(format_summary(summary))
    if args.out:
        write_text(args.out, json.dumps(summary, indent=1) + "\n")
    return 0

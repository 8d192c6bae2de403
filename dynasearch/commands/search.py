"""dynasearch search RUN --predictor P --out RESULTS [--target-latency 12ms] [--trials 200] ..."""

from __future__ import annotations

from .common import add_space_args, bounded, space_spec_from_args


def register(sub) -> None:
    from search.config import DEFAULT_SAMPLER, OPTUNA_SAMPLERS

    p = sub.add_parser(
        "search",
        help="multi-objective search (metric vs latency) over the grid and per-layer sub-networks; verified answers",
        description="Searches the per-layer space (heads, FFN neurons, layer kept or dropped, per layer) of a trained "
        "DynaBERT model with Optuna, maximising the task metric of the active sub-network on dev and minimising the "
        "latency a fitted predictor gives; the paper's 12 grid points are tried first. With --target-latency the best "
        "feasible configs are measured as extracted models on this machine and the first that meets the target is the "
        "answer (exit status 1 when none does). Re-running the same command resumes the study. Results: "
        "RESULTS/{search.json,trials.csv,front.csv,space.json,measured.csv,front.png,hypervolume.png,shapes.png}.",
    )
    p.add_argument(
        "run", metavar="RUN", help="a run directory of `dynasearch train` (its latest stage) or a model directory"
    )
    p.add_argument(
        "--predictor",
        required=True,
        action="append",
        metavar="DIR|NAME=DIR",
        help="fitted predictor (fit-predictor OUT, or OUT/predictors/KIND); several devices: NAME=DIR per device "
        "(NAME:int8=DIR for its int8 predictor), one study per device over one accuracy cache",
    )
    p.add_argument(
        "--out", required=True, metavar="RESULTS", help="results directory (created; holds the SQLite study by default)"
    )
    p.add_argument("--task", default=None, help="task name (default: the run's); needed for a plain model directory")
    p.add_argument("--data-dir", default=None, help="task data directory (default: the run's)")
    p.add_argument("--dev-file", default=None, help="dev file (default: DIR/dev.*)")
    p.add_argument("--stage", default=None, help="a finished stage of RUN (default: its latest)")
    p.add_argument(
        "--target-latency",
        default=None,
        metavar="LAT",
        help="latency target with a unit, e.g. 12ms, 0.5s, 800us; several devices: NAME=LAT,OTHER=LAT",
    )
    p.add_argument(
        "--percentile", default="p50", choices=("p50", "p90"), help="which measured latency must meet the target"
    )
    p.add_argument(
        "--trials",
        type=bounded("count"),
        default=200,
        help="the study's total number of trials, repeated proposals included (default 200)",
    )
    p.add_argument(
        "--evaluations",
        type=bounded("count"),
        default=None,
        metavar="N",
        help="stop once N distinct configs have been evaluated (stopped early or not), whatever --trials says",
    )
    p.add_argument(
        "--sampler", default=DEFAULT_SAMPLER, help=f"one of {', '.join(OPTUNA_SAMPLERS)} (default {DEFAULT_SAMPLER})"
    )
    p.add_argument("--seed", type=bounded("seed"), default=0)
    g = p.add_argument_group("search space")
    add_space_args(g)
    g.add_argument("--no-drop", action="store_true", help="keep every layer (search widths only; = --drop-rule none)")
    g.add_argument(
        "--allow-unmeasured-widths", action="store_true", help="search widths the predictor never measured (warns)"
    )
    e = p.add_argument_group("evaluation and latency")
    e.add_argument(
        "--search-dev",
        type=bounded("count"),
        default=None,
        metavar="N",
        help="rank configs on a seeded subset of N dev examples and report the front on the REST of dev (examples the "
        "ranking never saw); default: rank and report on the whole split",
    )
    e.add_argument(
        "--racing",
        action="store_true",
        help="score a proposal on a quarter, then half of the ranking examples and stop it when it is clearly below the "
        "front at its latency (accuracy only; see docs/search.md)",
    )
    e.add_argument(
        "--rescore-dev",
        type=bounded("count"),
        default=None,
        metavar="N",
        help="report the front and grid on a seeded subset of N of the report examples (default: all of them)",
    )
    e.add_argument(
        "--search-dev-seed",
        type=bounded("seed"),
        default=None,  # None: not given (seed 0), so one given without --search-dev can be refused
        help="which seeded subset --search-dev takes (default 0)",
    )
    e.add_argument(
        "--max-seq-length",
        type=bounded("max_seq_length"),
        default=None,
        help="evaluation length (default: the run's, else 128)",
    )
    e.add_argument("--bf16", action="store_true", help="bfloat16 matrix products when scoring (faster on recent CPUs)")
    e.add_argument("--batch", type=bounded("batch"), default=None, help="latency batch (default: the predictor's)")
    e.add_argument(
        "--seq-len", type=bounded("seq_len"), default=None, help="latency sequence length (default: the predictor's)"
    )
    e.add_argument(
        "--allow-untrained", action="store_true", help="search a checkpoint whose sub-networks were not trained (warns)"
    )
    s = p.add_argument_group("study and verification")
    s.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="Optuna storage URL (default sqlite:///RESULTS/study.db; "
        "postgresql+psycopg://user@host/db to share one study between workers)",
    )
    s.add_argument("--study", default="dynasearch", help="study name (default 'dynasearch')")
    s.add_argument(
        "--no-verify",
        action="store_true",
        help="do not measure; the answer is a prediction (for another device's predictor)",
    )
    s.add_argument("--raw", action="store_true", help="judge the target on raw, not speed-corrected, measured latency")
    s.add_argument(
        "--max-candidates",
        type=bounded("count"),
        default=None,  # None: not given (10), so one that caps nothing can be refused
        help="measure at most this many candidates (default 10)",
    )
    s.add_argument(
        "--heartbeat",
        type=bounded("heartbeat_s"),
        default=30,
        help="seconds between trial heartbeats (a dead worker's trial is retried)",
    )
    s.add_argument(
        "--grace-period",
        type=bounded("heartbeat_s"),
        default=None,
        help="seconds without a heartbeat before a trial counts as dead and is retried (default 3 x --heartbeat)",
    )
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run, _parser=p)


def run(args) -> int:
    from search.config import SearchConfig
    from search.errors import SearchError
    from search.space import SpaceOptions
    from search.study import run_search
    from search.units import parse_latency

    from .common import print_warnings

    named = [v for v in args.predictor if "=" in v]
    if named and len(named) != len(args.predictor):
        raise SearchError("give every --predictor as NAME=DIR when naming devices (or one plain --predictor DIR)")
    if not named and len(args.predictor) > 1:
        raise SearchError("several --predictor options need device names: --predictor cpu=DIR --predictor gpu=DIR")
    target = parse_latency(args.target_latency) if args.target_latency is not None and not named else None
    if args.max_candidates is not None and (args.no_verify or args.target_latency is None):
        why = (
            "--no-verify measures none: drop one of them"
            if args.no_verify
            else "without --target-latency nothing is verified: give --target-latency LAT, or drop --max-candidates"
        )
        raise SearchError(f"--max-candidates caps the candidates verification measures, and {why}")
    capped = {} if args.max_candidates is None else {"max_candidates": args.max_candidates}
    cfg = SearchConfig(
        run=args.run,
        predictor=args.predictor[0].partition("=")[2] if named else args.predictor[0],
        out=args.out,
        task=args.task,
        data_dir=args.data_dir,
        dev_file=args.dev_file,
        stage=args.stage,
        target_ms=target,
        percentile=args.percentile,
        trials=args.trials,
        sampler=args.sampler,
        seed=args.seed,
        space=space_spec_from_args(args, SpaceOptions, args.no_drop, SearchError),
        search_dev=args.search_dev,
        search_dev_seed=args.search_dev_seed,
        rescore_dev=args.rescore_dev,
        racing=args.racing,
        evaluations=args.evaluations,
        batch=args.batch,
        seq_len=args.seq_len,
        max_seq_length=args.max_seq_length,
        storage=args.storage,
        study=args.study,
        verify=not args.no_verify,
        raw=args.raw,
        **capped,
        allow_unmeasured_widths=args.allow_unmeasured_widths,
        allow_untrained=args.allow_untrained,
        heartbeat_interval=args.heartbeat,
        grace_period=args.grace_period,
        bf16=args.bf16,
        progress=not args.quiet,
    )
    if named:
        from search.devices import devices_from_options, run_devices

        devices = devices_from_options(args.predictor, args.target_latency)
        with print_warnings():
            index = run_devices(cfg, devices)
        return report_devices(index)
    with print_warnings():
        out = run_search(cfg)
    return report(out)


def report_devices(index: dict) -> int:
    from search.results import describe_answer

    print(
        f"search: {len(index['devices'])} device(s), {index['distinct_configs_evaluated']} distinct configs evaluated in all"
    )
    missed = False
    for d in index["devices"]:
        where = (
            "verified on this machine"
            if d["verified_here"]
            else ("not verified here" if d["target_ms"] else "no target")
        )
        print(
            f"device {d['label']} ({d['evaluations_new']} new evaluations, warm start {d['warm_started_with']}): {where}"
        )
        if d["answer"] is not None:
            print(describe_answer(d["answer"]))
        if d["message"]:
            print(f"  {d['message']}")
        if d["how_to_verify"] and d["target_ms"]:
            print(f"  verify: {d['how_to_verify']}")
        missed = missed or not d["met"]
    return 1 if missed else 0


def report(out) -> int:
    from search.results import describe_answer

    s, t = out.meta["summary"], out.meta["timing"]
    print(
        f"search: {s['trials']} trials, {s['distinct_configs']} distinct configs ({s['grid_points']} grid points), "
        f"front of {s['front_size']}; {s['evaluations_logged']} evaluations, {s['repeat_evaluations']} repeated"
    )
    print(
        f"  ranking: {s['configs_proposed']} configs proposed, {s['configs_evaluated']} evaluated"
        + (f" ({s['stopped_early']} stopped early by racing)" if s.get("racing") else "")
        + f", {s['examples_scored_ranking']} examples scored; ranked on {s['rank_examples']} dev examples, front "
        f"reported on {s['report_examples']}"
        + (" held out from the ranking" if s.get("report_held_out") else " (the same ones)")
        + ("; stopped by --evaluations" if s.get("budget_stopped") else "")
    )
    print(
        f"  time: {t.get('wall_s', 0.0):.1f} s in all; evaluation {t['evaluation_s']:.1f} s, prediction {t['prediction_s']:.1f} s, "
        f"sampler+storage {t['sampler_and_storage_s']:.1f} s, measurement {t['measurement_s']:.1f} s"
    )
    print(f"  results: {out.results_dir}/ (trials.csv, front.csv, front.png, hypervolume.png, shapes.png, search.json)")
    if out.answer is not None:
        print("answer:" + (" (verified on this machine)" if out.answer.get("verified") else ""))
        print(describe_answer(out.answer))
    if out.message:
        print(out.message)
    return 0 if out.met else 1

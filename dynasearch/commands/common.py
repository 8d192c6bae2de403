"""Argument helpers shared by sub-commands (parsing only)."""

from __future__ import annotations

import argparse
import contextlib
import math


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
    from dynabert.subnet import SubnetConfig

    if args.subnet is not None:
        if args.width is not None or args.depth is not None:
            parser_error("give either --subnet or --width/--depth, not both")
        return SubnetConfig.load(args.subnet).validate(shape), None
    if args.width is None and args.depth is None:
        parser_error("a sub-network is needed: --width W --depth D, or --subnet FILE.json")
    w = 1.0 if args.width is None else args.width
    d = 1.0 if args.depth is None else args.depth
    return SubnetConfig.from_grid(shape, w, d).validate(shape), (w, d)


@contextlib.contextmanager
def print_warnings():
    """Warnings raised by the library appear as one 'warning: ...' line each on stderr."""
    import sys
    import warnings

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

"""`dynasearch` console script: parses arguments and calls the library, nothing more.

Each sub-command lives in `search/commands/<name>.py` with `register(subparsers)`; heavy
libraries are imported inside the handlers so `dynasearch --help` stays fast.
Every DynasearchError becomes one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from dynabert.errors import DynasearchError

# Order is the order shown by --help. Add a module here to add a sub-command.
COMMANDS = (
    "info",
    "export",
    "train",
    "evaluate",
    "measure",
    "kit",
    "fit_predictor",
    "search",
    "query",
    "demo",
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; `only` registers just that sub-command (its module alone is imported, so a
    fast command such as `query` does not pay for the others' imports)."""
    parser = argparse.ArgumentParser(
        prog="dynasearch",
        description="Hardware-aware sub-network search for adaptive-size (DynaBERT) BERT/RoBERTa models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS if only is None else (only,):
        importlib.import_module(f"search.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Offline by design: never reach a model hub, whatever a config file says.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    words = sys.argv[1:] if argv is None else argv
    first = next((w for w in words if not w.startswith("-")), None)
    only = first.replace("-", "_") if first and first.replace("-", "_") in COMMANDS and "-h" not in words[:1] else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DynasearchError as e:
        print(f"dynasearch {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dynasearch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

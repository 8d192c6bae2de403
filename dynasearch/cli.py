"""`dynasearch` console script: parses arguments and calls the library, nothing more.

Each sub-command lives in `dynasearch/commands/<name>.py` with `register(subparsers)`; heavy
libraries are imported inside the handlers so `dynasearch --help` stays fast.
Every DynasearchError becomes one line on stderr and exit status 2; any other exception one line
naming a log file that holds its traceback, and exit status 3.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys

from dynabert.errors import DynasearchError
from dynasearch_runtime.bounds import glue_negative_values

# Exit statuses, one rule for every command (README "Exit statuses"): 0 done; 1 ran but found no
# answer (no configuration meets the target); 2 bad input (one line naming the bad value); 3 an
# internal error (one line naming the log file with its traceback); 130 interrupted; 141 the
# output pipe closed (`| head`).
EXIT_NO_ANSWER, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_PIPE = 1, 2, 3, 141
RAISE_ENV = "DYNASEARCH_RAISE_INTERNAL"  # set (tests): internal errors propagate instead of exit 3

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
    "serve",
    "loadtest",
    "demo",
)


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are ONE line, as every other error (`--help` shows the usage)."""

    commands: argparse._SubParsersAction | None = None  # the top parser's sub-commands (build_parser)
    words: list[str] | None = None  # what this parser was last given (parse_known_args)

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201 - argparse's signature
        self.words = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str):  # noqa: ANN201 - argparse's signature; never returns
        # argparse checks required options before it reports unknown words: `train --ouut R` would say
        # "--out is required" about a typo. An unknown word is named first, as the likelier mistake.
        if message.startswith("the following arguments are required") and self.words is not None:
            extras = self._unrecognized(self.words)
            if extras:
                message = f"unrecognized arguments: {' '.join(extras)}"
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _unrecognized(self, words: list[str]) -> list[str]:
        """The words this parser takes no option for, found with every argument made optional."""
        required = [(a, a.required) for a in self._actions]
        for a, _ in required:
            a.required = False
        try:
            return self.parse_known_args(words)[1]
        finally:
            for a, r in required:
                a.required = r

    def parse_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201 - argparse's signature
        # argparse reports words no parser took from the top parser ('dynasearch: error: ...'); the
        # sub-command's parser reports them instead, so the line names the command and its --help.
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            sub = self.commands.choices.get(getattr(ns, "command", None)) if self.commands else None
            (sub or self).error(f"unrecognized arguments: {' '.join(extras)}")
        return ns


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; `only` registers just that sub-command (its module alone is imported, so a
    fast command such as `query` does not pay for the others' imports)."""
    parser = _Parser(
        prog="dynasearch",
        description="Hardware-aware sub-network search for adaptive-size (DynaBERT) BERT/RoBERTa models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.commands = sub
    for name in COMMANDS if only is None else (only,):
        importlib.import_module(f"dynasearch.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Offline by design: never reach a model hub, whatever a config file says.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    words = glue_negative_values(sys.argv[1:] if argv is None else argv)
    first = next((w for w in words if not w.startswith("-")), None)
    only = first.replace("-", "_") if first and first.replace("-", "_") in COMMANDS and "-h" not in words[:1] else None
    parser = build_parser(only)
    args = parser.parse_args(words)
    args._words = words  # the command line as typed: a command may ask which options it named (given_dests)
    try:
        return int(args.func(args) or 0)
    except DynasearchError as e:
        print(f"dynasearch {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"dynasearch {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dynasearch info | head`: the reader left; say nothing, as other Unix tools
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return EXIT_PIPE
    except Exception as e:
        if os.environ.get(RAISE_ENV):  # the test suite: a bug shows its traceback in the failing test
            raise
        log = _crash_log(args.command, words)
        first = (str(e).strip().splitlines() or [""])[0][:200]
        print(
            f"dynasearch {args.command}: internal error ({type(e).__name__}: {first}); the traceback is in {log}; "
            "please report it",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _crash_log(command: str, words: list[str]) -> str:
    """Write the current exception's traceback to a new file; its path (or '(unwritable)')."""
    import tempfile
    import time
    import traceback

    folder = os.environ.get("DYNASEARCH_LOG_DIR") or os.path.join(tempfile.gettempdir(), "dynasearch-logs")
    try:
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"crash-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{command}.log")
        with open(path, "w", encoding="utf-8") as f:
            f.write(f"dynasearch {' '.join(words)}\n\n{traceback.format_exc()}")
        return path
    except OSError:
        return "(no log: the log folder cannot be written)"


if __name__ == "__main__":
    sys.exit(main())

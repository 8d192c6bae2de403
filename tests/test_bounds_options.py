"""Every numeric command-line option takes its limits from the bounds table (dynasearch_runtime.bounds).

Two tests: (1) every option of every sub-command that parses its value (argparse `type=`) is a
bounds parser (`bounded`, `bounded_list`, train's `_stage_values`) naming a kind of the table, except
the few that parse words; a new numeric option that checks its value by hand, or not at all, fails
here; (2) for every such option, values just outside its kind's range (and of the wrong type) are
refused by the parser: exit 2, ONE line naming the sub-command, the option and the rule.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from dynasearch import cli
from dynasearch_runtime import bounds

# Options whose `type=` parses words, not numbers (each checked by its own code against its own list).
WORD_OPTIONS = {("train", "--stages")}


def _options() -> list[tuple[str, str, argparse.Action]]:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = []
    for command, sp in sub.choices.items():
        for action in sp._actions:
            if action.type is not None:
                out.append((command, action.option_strings[0] if action.option_strings else action.dest, action))
    return out


OPTIONS = _options()
BOUNDED = [(c, o, a) for c, o, a in OPTIONS if (c, o) not in WORD_OPTIONS]


def test_every_numeric_option_takes_its_limits_from_the_bounds_table():
    unbounded = [f"{c} {o}" for c, o, a in BOUNDED if getattr(a.type, "bound_kind", None) not in bounds.BOUNDS]
    assert not unbounded, f"options that parse a value without the bounds table: {unbounded}"
    assert len(BOUNDED) > 80  # the table really was walked (every sub-command's options)


def _bad_values(action: argparse.Action) -> list[str]:
    kind = action.type.bound_kind
    values = [str(v) for v in bounds.outside(kind)]
    if action.type.__name__.startswith("STAGE="):  # --stage-lr teacher=VALUE
        return [f"teacher={v}" for v in values]
    return values


@pytest.mark.parametrize("command,option,action", BOUNDED, ids=[f"{c}{o}" for c, o, _ in BOUNDED])
def test_out_of_range_values_are_refused_in_one_line(command, option, action, capsys):
    kind = action.type.bound_kind
    for value in _bad_values(action):
        with pytest.raises(SystemExit) as exc:
            cli.main([command, f"{option}={value}"])  # = : argparse reads "-inf" alone as an option
        err = capsys.readouterr().err
        assert exc.value.code == 2, (value, err)
        lines = err.strip("\n").split("\n")
        assert len(lines) == 1, err
        assert lines[0].startswith(f"dynasearch {command}: error: argument {option}"), err
        assert bounds.describe(kind) in lines[0], (value, err)


def test_docs_show_the_bounds_table():
    """docs/errors.md shows the table as it is (dynasearch_runtime.bounds.markdown_table)."""
    docs = (Path(__file__).resolve().parent.parent / "docs" / "errors.md").read_text(encoding="utf-8")
    assert bounds.markdown_table() in docs, "docs/errors.md: paste dynasearch_runtime.bounds.markdown_table() again"

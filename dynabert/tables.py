"""Markdown tables, one home: a header row, the `|---|` rule and one line per row."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]], fmt: Callable[[Any], str] = str) -> str:
    """The table as Markdown lines joined by newlines (no trailing newline); cells through `fmt`."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def frame_table(df: Any, fmt: Callable[[Any], str] = str) -> str:
    """markdown_table of a pandas DataFrame: its columns as the header, its rows without the index."""
    return markdown_table(list(df.columns), df.itertuples(index=False), fmt)

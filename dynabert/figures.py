"""Figure set-up and saving, one home: a display-less pyplot and an atomic PNG write.

matplotlib is imported on first use only (it is slow to import and not needed on the --help path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display on servers; the backend must precede pyplot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: float | None = None) -> None:
    """Write `fig` as a PNG at `path` atomically (io.atomic_file) and close it."""
    from .io import atomic_file

    with atomic_file(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    pyplot().close(fig)

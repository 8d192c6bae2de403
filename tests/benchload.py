"""bench/ scripts loaded by path for their tests (bench/ is not a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench(name: str, as_name: str | None = None) -> ModuleType:
    """bench/NAME.py executed as a module named `as_name` (default NAME)."""
    spec = importlib.util.spec_from_file_location(as_name or name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod

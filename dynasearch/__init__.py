"""dynasearch: the application (the `dynasearch` console script, the demo pipeline and its report).

The libraries it calls: `dynabert` (model, training, export), `predictors` (latency), `search`
(the search and its results). Dependencies point one way: dynabert <- predictors <- search <- dynasearch.

    run_demo, DemoConfig   the whole product on the embedded default (`dynasearch demo`)
    main                   the console script (`dynasearch ...`, `python -m dynasearch ...`)
Names are imported lazily (PEP 562): `dynasearch --help` and `query` must not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"DemoConfig": "demo", "run_demo": "demo", "write_report": "report", "main": "cli"}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'dynasearch' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

"""search: hardware-aware sub-network search, Pareto fronts, verified answers, export from results.

What users call (the CLI and the notebooks call the same):
    SearchConfig, SpaceOptions, run_search   run (or resume) a search; results in a directory
    query, load_results, describe_answer     answer a target from a results directory (no torch)
    export_from_results                      deploy a chosen config (ONNX, Hugging Face, manifest;
                                             a sub-network alone: dynabert.export_subnet)
    pareto_mask, hypervolume_2d              the front and its hypervolume
Names are imported lazily (PEP 562): `dynasearch query` must answer without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "SearchConfig": "config",
    "SearchOutcome": "study",
    "Search": "study",
    "run_search": "study",
    "OPTUNA_SAMPLERS": "config",
    "DEFAULT_SAMPLER": "config",
    "SpaceOptions": "space",
    "query": "results",
    "load_results": "results",
    "describe_answer": "results",
    "TRIAL_COLUMNS": "results",
    "export_from_results": "deploy",
    "pareto_mask": "pareto",
    "hypervolume_2d": "pareto",
    "SearchError": "errors",
    "ResultsError": "errors",
    "parse_latency": "units",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'search' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

"""predictors: measuring latency on target hardware and predicting it.

One timing protocol for every backend (`dynasearch_runtime.protocol`: the device runtime, a package of its
own that the kit ships as is), backends that only prepare and run a model (`backends`), config samplers, the
records table, the measurement kit for other devices, latency predictors (lookup table, layer
regression, boosted trees, hybrid) and their evaluation.
Dependencies point one way: dynasearch_runtime <- dynabert <- predictors <- search (the runtime
needs only the standard library, numpy and onnxruntime; `dynabert.errors` builds on its error root).

Names are imported lazily (PEP 562), as in `dynabert`: `import dynasearch_runtime.errors` (which
`dynabert.errors` does) must not pull in pandas or the rest of this package.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_LAZY = {
    "Protocol": "dynasearch_runtime.protocol",
    "check_clock": "dynasearch_runtime.clocks",
    "MeasurementError": "dynasearch_runtime.errors",
    "threads_warning": "dynasearch_runtime.fingerprint",
    "RECORD_COLUMNS": "dynasearch_runtime.schema",
    "RECORD_FIELDS": "dynasearch_runtime.schema",
    "SCHEMA": "dynasearch_runtime.schema",
    "check_records_path": "dynasearch_runtime.schema",
    "raw_timings_path": "dynasearch_runtime.schema",
    "read_raw_timings": "dynasearch_runtime.schema",
    "BACKENDS": "backends",
    "BackendSettings": "backends",
    "make_backend": "backends",
    "AnchorReference": "base",
    "FittedOn": "base",
    "LatencyPredictor": "base",
    "WidthsSeen": "base",
    "PredictorError": "errors",
    "RecordsError": "errors",
    "fit_and_evaluate": "evaluate",
    "format_table": "evaluate",
    "metrics": "evaluate",
    "predictor_kinds": "evaluate",
    "split_holdout": "evaluate",
    "write_kit": "kit",
    "PREDICTORS": "latency",
    "find_predictor": "latency",
    "load_predictor": "latency",
    "make_predictor": "latency",
    "check_onnx_cache": "measure",
    "load_shape": "measure",
    "measure": "measure",
    "speed_index_warning": "measure",
    "LATENCY_COLUMN": "records",
    "read_records": "records",
    "repeatability": "records",
    "schema_markdown": "records",
    "select_records": "records",
    "CONFIG_SAMPLERS": "samplers",
    "flop_covering_configs": "samplers",
    "grid_configs": "samplers",
    "layer_table_configs": "samplers",
    "read_subnet_file": "samplers",
    "sample_configs": "samplers",
    "sampler_names": "samplers",
    "select_configs": "samplers",
    "uniform_configs": "samplers",
    "VERIFY_COLUMNS": "verify",
    "check_this_machine": "verify",
    "machine_matches": "verify",
    "predictor_settings": "verify",
    "this_machine_target": "verify",
    "verify_latency": "verify",
}

__all__ = sorted(_LAZY)


class _Package(types.ModuleType):
    """`predictors.measure` is the function, as it was when this file imported it eagerly: the
    import system sets a package's attribute to a submodule it loads, which would hide the
    function of the same name once anything imports the submodule `predictors.measure`."""

    def __setattr__(self, name: str, value: Any) -> None:
        if not (name in _LAZY and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        mod = _LAZY[name]  # the device runtime is a package of its own; the rest are our modules
        value = getattr(
            importlib.import_module(mod if mod.startswith("dynasearch_runtime") else f".{mod}", __name__), name
        )
        globals()[name] = value  # the next access skips this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

"""dynabert: the adaptive BERT/RoBERTa model, sub-network descriptions and training.

Names are imported lazily (PEP 562): `import dynabert.subnet` or `from dynabert.errors import ...`
must not pull in torch, so light commands (`dynasearch query`, `--help`) start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "default_backbone_dir": "backbone",
    "load_model": "backbone",
    "DataError": "errors",
    "DynasearchError": "errors",
    "ExportError": "errors",
    "InvalidSubnetError": "errors",
    "ModelLoadError": "errors",
    "OutputExistsError": "errors",
    "DevSet": "evaluate",
    "EvalInputs": "evaluate",
    "evaluate_run": "evaluate",
    "evaluate_subnets": "evaluate",
    "load_dev_set": "evaluate",
    "score_subnet": "evaluate",
    "export_subnet": "export",
    "extract_subnet": "extract",
    "model_shape": "extract",
    "random_like": "extract",
    "DynaBertConfig": "modeling",
    "DynaBertForSequenceClassification": "modeling",
    "SearchSpace": "space",
    "PAPER_DEPTHS": "subnet",
    "PAPER_WIDTHS": "subnet",
    "BackboneShape": "subnet",
    "SubnetConfig": "subnet",
    "count_flops": "subnet",
    "count_params": "subnet",
    "grid_table": "subnet",
    "paper_grid": "subnet",
    "TaskSpec": "tasks",
    "csv_task": "tasks",
    "get_task": "tasks",
    "load_task": "tasks",
    "RunInfo": "runs",
    "RunInputs": "runs",
    "is_dynabert_trained": "runs",
    "model_digest": "runs",
    "resolve_run": "runs",
    "run_model_dir": "runs",
    "run_task": "runs",
    "train": "train",
    "TrainConfig": "train_config",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'dynabert' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

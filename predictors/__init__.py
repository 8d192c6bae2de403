"""predictors: measuring latency on target hardware and predicting it.

One timing protocol for every backend (`_core`), backends that only prepare and run a model
(`backends`), config samplers, the records table, the measurement kit for other devices, latency
predictors (lookup table, layer regression, boosted trees, hybrid) and their evaluation.
Dependencies point one way: dynabert <- predictors <- search.
"""

from ._core import Protocol
from ._schema import RECORD_COLUMNS, RECORD_FIELDS, SCHEMA, raw_timings_path, read_raw_timings
from .backends import BACKENDS, BackendSettings, make_backend
from .base import LatencyPredictor
from .errors import MeasurementError, PredictorError, RecordsError
from .evaluate import fit_and_evaluate, metrics, split_holdout
from .kit import runner_source, write_kit
from .latency import PREDICTORS, find_predictor, load_predictor, make_predictor
from .measure import load_shape, measure
from .records import LATENCY_COLUMN, read_records, repeatability
from .samplers import (
    SAMPLERS,
    flop_covering_configs,
    grid_configs,
    layer_table_configs,
    sample_configs,
    uniform_configs,
)
from .verify import (
    VERIFY_COLUMNS,
    check_this_machine,
    machine_matches,
    predictor_settings,
    this_machine_target,
    verify_latency,
)

__all__ = [
    "BACKENDS",
    "BackendSettings",
    "LATENCY_COLUMN",
    "VERIFY_COLUMNS",
    "check_this_machine",
    "machine_matches",
    "predictor_settings",
    "raw_timings_path",
    "read_raw_timings",
    "this_machine_target",
    "verify_latency",
    "LatencyPredictor",
    "MeasurementError",
    "PREDICTORS",
    "PredictorError",
    "Protocol",
    "RECORD_COLUMNS",
    "RECORD_FIELDS",
    "RecordsError",
    "SAMPLERS",
    "SCHEMA",
    "find_predictor",
    "fit_and_evaluate",
    "flop_covering_configs",
    "grid_configs",
    "layer_table_configs",
    "load_predictor",
    "load_shape",
    "make_backend",
    "make_predictor",
    "measure",
    "metrics",
    "read_records",
    "repeatability",
    "runner_source",
    "sample_configs",
    "split_holdout",
    "uniform_configs",
    "write_kit",
]

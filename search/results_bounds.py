"""Which kind of the bounds table (`dynasearch_runtime.bounds`) every number of a results directory is:
search.json's (`SEARCH_BOUNDS`), a trials.csv / front.csv column's (`TRIAL_BOUNDS`) and a multi-device
search's devices.json's (`DEVICES_BOUNDS`). `results.read_results` and `devices.read_devices` check each
against its kind's range; tests/test_bounds.py enumerates these maps and fails when a number a search writes
has none."""

from __future__ import annotations

from dynasearch_runtime.field_bounds import SHAPE_BOUNDS, SUBNET_BOUNDS, Field, under

# An answer (search.json's answer, and each device's in devices.json): what the search chose and how it was judged.
ANSWER_BOUNDS: tuple[Field, ...] = (
    ("metric_full", "metric", True),
    ("metric_search", "metric", True),
    ("predicted_ms", "latency_ms", True),
    ("measured_ms", "latency_ms", True),
    ("measured_raw_ms", "latency_ms", True),
    ("target_ms", "latency_ms", True),
    ("depth", "depth", False),
    # a verified answer's verification (search.verify.Measured.answer_fields)
    ("speed_index", "ratio", True),
    ("busy_share", "share", True),
    ("undisturbed_runs", "runs0", True),
    ("timed_runs", "runs0", True),
) + under("subnet", SUBNET_BOUNDS)

# Which dev examples the front's metric_full was scored on (search.json's report_dev, study.report_dev; a bundle's
# devices.json copies it as its `report`).
REPORT_DEV_BOUNDS: tuple[Field, ...] = (
    ("dev_examples", "count", False),
    ("search_dev", "count", True),
    ("search_dev_seed", "seed", False),
    ("rescore_dev", "count", True),
    ("rescore_seed", "seed", False),
    ("examples", "count", False),
)

_SUMMARY_COUNTS = (
    "distinct_configs",
    "search_front_size",
    "configs_proposed",
    "configs_evaluated",
    "rank_examples",
    "report_examples",
)
_SUMMARY_COUNTS0 = (
    "examples_scored_ranking",
    "stopped_early",
    "grid_points",
    "cache_hits",
    "skipped_trials",
    "failed_trials",
    "running_trials",
    "evaluations_logged",
    "distinct_evaluated",
    "repeat_evaluations",
)
_TIMINGS = ("evaluation_s", "prediction_s", "measurement_s", "optimize_s", "sampler_and_storage_s", "wall_s")

# Every number of search.json (path, kind, null allowed); study.latency.seq_len is also capped by the
# searched backbone's positions (study.space.shape).
SEARCH_BOUNDS: tuple[Field, ...] = (
    (
        ("study.latency.batch", "batch", False),
        ("study.latency.seq_len", "seq_len", False),
        ("study.target_ms", "latency_ms", True),
        ("study.max_seq_length", "max_seq_length", True),
        ("study.seed", "seed", False),
        ("study.space.head_choices.*", "heads", False),
        ("study.space.ffn_choices.*", "ffn", False),
        ("study.space.min_layers", "layers", False),
    )
    + under("study.space.shape", SHAPE_BOUNDS)
    + (("summary.trials", "count", False), ("summary.front_size", "count", False))
    + tuple((f"summary.{k}", "count", False) for k in _SUMMARY_COUNTS)
    + tuple((f"summary.{k}", "count0", False) for k in _SUMMARY_COUNTS0)
    + (
        ("summary.hypervolume", "hypervolume", False),
        ("summary.hypervolume_reference.metric", "metric", False),
        ("summary.hypervolume_reference.latency_ms", "latency_ms", False),
    )
    + tuple((f"timing.{k}", "elapsed_s", False) for k in _TIMINGS)
    + (("timing.evaluations_this_run", "count0", False), ("timing.cache_hits_this_run", "count0", False))
    + (
        ("fingerprint.cpu_cores", "cpu_cores", True),
        ("fingerprint.threads", "threads", True),
        ("fingerprint.batch", "batch", True),
        ("fingerprint.seq_len", "seq_len", True),
    )
    + under("answer", ANSWER_BOUNDS)
    + under("report_dev", REPORT_DEV_BOUNDS)
)

# RESULTS/devices.json of a multi-device search (search.devices.read_devices): each device's setting, target
# and answer, and what its study cost.
DEVICES_BOUNDS: tuple[Field, ...] = (
    ("devices.*.setting.cpu_cores", "cpu_cores", True),
    ("devices.*.setting.threads", "threads", True),
    ("devices.*.setting.batch", "batch", True),
    ("devices.*.setting.seq_len", "seq_len", True),
    ("devices.*.target_ms", "latency_ms", True),
    ("devices.*.evaluations_new", "count0", False),
    ("devices.*.evaluation_calls", "count0", False),
    ("devices.*.warm_started_with", "count0", False),
    ("devices.*.distinct_configs", "count", False),
    ("distinct_configs_evaluated", "count0", False),
) + under("devices.*.answer", ANSWER_BOUNDS)

# The number columns of trials.csv and front.csv (an empty cell is allowed where results.py says so).
TRIAL_BOUNDS: dict[str, str] = {
    "trial": "count0",
    "depth": "depth",
    "width": "share",
    "ffn_width": "share",
    "metric_search": "metric",
    "metric_full": "metric",
    "predicted_ms": "latency_ms",
    "measured_ms": "latency_ms",
    "measured_raw_ms": "latency_ms",
    "duplicate_of": "count0",
}
GRID_KIND = "fraction"  # the W and D of a grid cell 'WxD'

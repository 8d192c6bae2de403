"""Errors of the latency tools; each derives from DynasearchError, so the CLI exits with status 2.
MeasurementError, which the device runtime raises too, lives in `dynasearch_runtime.errors`."""

from dynabert.errors import DynasearchError


class RecordsError(DynasearchError, ValueError):
    """A records table cannot be used: another schema, mixed settings, bad latencies, too few rows."""


class PredictorError(DynasearchError, ValueError):
    """A predictor cannot be fitted, loaded or asked: unfitted, truncated file, unknown version,
    another fingerprint or setting without force."""


__all__ = ["PredictorError", "RecordsError"]

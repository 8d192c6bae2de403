"""Errors of the latency tools; each derives from DynasearchError, so the CLI exits with status 2."""

from dynabert.errors import DynasearchError

from ._core import MeasurementError


class RecordsError(DynasearchError, ValueError):
    """A records table cannot be used: another schema, mixed settings, bad latencies, too few rows."""


class PredictorError(DynasearchError, ValueError):
    """A predictor cannot be fitted, loaded or asked: unfitted, truncated file, unknown version,
    another fingerprint or setting without force."""


__all__ = ["MeasurementError", "PredictorError", "RecordsError"]

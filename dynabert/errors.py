"""One exception hierarchy for every user-facing error. The CLI prints the message and exits 2.

The root, DynasearchError, is defined in the device runtime (`dynasearch_runtime.errors`, standard
library only) so the kit's runner, which has no dynabert, raises the same MeasurementError."""

from dynasearch_runtime.errors import DynasearchError


class InvalidSubnetError(DynasearchError, ValueError):
    """A sub-network description does not fit the rules or the backbone."""


class ModelLoadError(DynasearchError):
    """A model directory or checkpoint cannot be read."""


class ExportError(DynasearchError):
    """An export failed its checks; nothing was left behind."""


class DataError(DynasearchError, ValueError):
    """A data file or dataset option is wrong."""


class OutputExistsError(DynasearchError):
    """The output path exists and --overwrite was not given, or it is not writable."""

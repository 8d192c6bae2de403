"""The root of every user-facing error, and the runtime's own.

`DynasearchError` lives here, in the device runtime, because the kit's runner must raise the same
class the library raises while importing nothing of the library: `dynabert.errors` (the model's
errors, and the home every other package imports the root from) builds on this class, so the CLI's
one `except DynasearchError` turns a MeasurementError into one line and exit status 2, and the
kit's runner does the same with its own `except MeasurementError`.
"""


class DynasearchError(Exception):
    """Base class: the message names the bad value and what is allowed."""


class MeasurementError(DynasearchError):
    """A measurement cannot be set up: unknown backend or provider, CUDA without a GPU, bad protocol
    values, a records file of another schema, an output that cannot be written."""


class BundleError(DynasearchError):
    """A deployment bundle cannot be used: a file changed or missing, an unknown device, no entry
    this machine can run, a torch entry without torch (see `bundle`)."""

"""Errors of the search; each derives from DynasearchError, so the CLI exits with status 2."""

from dynabert.errors import DynasearchError


class SearchError(DynasearchError, ValueError):
    """A search cannot run or be answered: bad option, mismatched study, predictor or results."""


class ResultsError(SearchError):
    """A results directory is missing, corrupted or not a dynasearch search's."""


class NoAnswerError(SearchError):
    """The command ran but no config meets the target: `query` and `export --results` exit 1 on it
    (1 = ran but found no answer; 2 = bad input), as `search` does. `fastest` describes the front's
    fastest config (key, shape, latency, metric) where one exists, for a caller that words the
    sentence itself (a device's answer over its precisions names each precision's fastest once)."""

    def __init__(self, message: str, fastest: str | None = None) -> None:
        super().__init__(message)
        self.fastest = fastest


__all__ = ["NoAnswerError", "ResultsError", "SearchError"]

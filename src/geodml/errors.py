"""The error classes users see. Each message names the place that is wrong."""

from __future__ import annotations


class GeodmlError(Exception):
    """Base class of every error geodml raises on purpose."""


class DataFormatError(GeodmlError):
    """Malformed input data, located by file, line and the offending text.

    ``line`` is 1-based; ``text`` is the offending token or line (truncated for display).
    """

    def __init__(self, path: str, line: int | None, problem: str, text: str | None = None):
        self.path = str(path)
        self.line = line
        self.problem = problem
        self.text = text
        where = self.path if line is None else f"{self.path}:{line}"
        shown = "" if text is None else f": {_truncate(text)!r}"
        super().__init__(f"{where}: {problem}{shown}")


class ConfigError(GeodmlError):
    """An invalid configuration value, located by file and field."""


def _truncate(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class DataError(GeodmlError):
    """Data that parsed but cannot be used: NaN values, labels outside a loss's set,
    a dimension that does not match the model. The message names the dataset."""


class ParamError(ConfigError, ValueError):
    """A method's or a site procedure's parameter that its schema refuses
    (:mod:`geodml.params`). The message names the owner and the field. A
    ``ValueError`` too, so that a site answers it as INVALID_ARGUMENT naming itself
    and the procedure, as it does any procedure's refusal."""

"""One parameter schema for both halves: a method's ``--param`` settings and a site
procedure's LocalSolve parameters are declared once, as a :class:`Schema`, and read
by :meth:`Schema.read` wherever they arrive.

A :class:`Param` is a default, a kind, bounds and a one-line doc:

* ``int``: a JSON integer (``true``/``false`` are not integers) with
  ``lo <= v <= hi``;
* ``float``: a finite JSON number (integers are fine) in the bounds, read as a float;
* ``bool``: ``true`` or ``false`` (``0``/``1`` are not booleans);
* ``floats``: a non-empty list of such numbers, each in the bounds, read as a tuple;
* ``choice``: one of the strings ``choices``.

``lo`` or ``hi`` ``None`` leaves that side open to any value; ``lo_open`` excludes
``lo`` itself (``> 0`` rather than ``>= 0``). A missing name, or a ``null`` value,
reads as the default; a default of ``None`` means "not given" and the owner decides
(FedAvg tunes its step size when ``eta0`` is not given).

:meth:`Schema.read` refuses unknown names (listing the known ones), values of the
wrong kind and values out of bounds with a :class:`~geodml.errors.ParamError` (a
``ConfigError``, and a ``ValueError`` so that a site answers it as
INVALID_ARGUMENT) naming the owner and the field:

    fadl-subspace parameter inner_iterations must be an integer in [1, 1000], got 0

Where a coordinator forwards a parameter to a site procedure, the method's schema
holds the procedure's own :class:`Param` (or the same one with the method's default,
:meth:`Param.with_default`), so both halves check it by one declaration
(:mod:`geodml.job.procedure_params`). This module imports neither
``geodml.site`` nor ``geodml.federation``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from geodml.errors import ParamError

Kind = Literal["int", "float", "bool", "floats", "choice"]
KINDS: tuple[str, ...] = ("int", "float", "bool", "floats", "choice")
_SHOWN = 80  # characters of a refused value shown in the message


def _text(x: float) -> str:
    """A bound as written in messages: integers in full, floats in ``%g``."""
    return str(x) if isinstance(x, int) else f"{x:g}"


def _number(v: object) -> float | None:
    """``v`` as a finite float, or None when it is no number (booleans are not)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return None
    try:
        x = float(v)
    except OverflowError:  # an integer beyond the float range
        return None
    return x if math.isfinite(x) else None


@dataclass(frozen=True)
class Param:
    """One parameter: its default, kind, bounds ``lo``/``hi`` and one-line doc."""

    default: object
    kind: Kind
    lo: float | None = None
    hi: float | None = None
    doc: str = ""
    lo_open: bool = False  # lo itself is refused
    choices: tuple[str, ...] = ()  # kind "choice" only

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Param kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if bool(self.choices) != (self.kind == "choice"):
            raise ValueError("Param choices go with kind 'choice' (and it needs them)")
        if self.default is not None and self._value(self.default) is None:
            raise ValueError(f"Param default {self.default!r} is not {self.expects()}")

    def with_default(self, default: object, doc: str | None = None) -> Param:
        """The same kind and bounds with another default (a method forwarding this
        procedure parameter under its own default)."""
        return replace(self, default=default, doc=self.doc if doc is None else doc)

    def bounds(self) -> str:
        """The bounds in interval notation, ``[1, 1000]``, ``(0, 1e+06]``, ``>= 0``."""
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            return f"{'(' if self.lo_open else '['}{_text(lo)}, {_text(hi)}]"
        if lo is not None:
            return f"{'>' if self.lo_open else '>='} {_text(lo)}"
        return "" if hi is None else f"<= {_text(hi)}"

    def expects(self) -> str:
        """What a value must be, e.g. ``an integer in [1, 1000]``."""
        where = self.bounds()
        inside = f" in {where}" if where.startswith(("[", "(")) else f" {where}" if where else ""
        if self.kind == "int":
            return f"an integer{inside}"
        if self.kind == "float":
            return f"a number{inside}"
        if self.kind == "floats":
            return "a non-empty list of numbers" + (f", each{inside}" if inside else "")
        if self.kind == "bool":
            return "true or false"
        return f"one of {', '.join(self.choices)}"

    def _within(self, x: float) -> bool:
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return self.hi is None or x <= self.hi

    def _value(self, v: object) -> object | None:
        """``v`` read as this kind, or None when it is not a valid value."""
        if self.kind == "bool":
            return v if isinstance(v, bool) else None
        if self.kind == "choice":
            return v if isinstance(v, str) and v in self.choices else None
        if self.kind == "int":
            ok = isinstance(v, numbers.Integral) and not isinstance(v, bool)
            return int(v) if ok and self._within(int(v)) else None
        if self.kind == "float":
            x = _number(v)
            return x if x is not None and self._within(x) else None
        if isinstance(v, str | bytes) or not isinstance(v, Sequence) or not v:
            return None
        xs = tuple(_number(x) for x in v)
        return xs if all(x is not None and self._within(x) for x in xs) else None

    def read(self, owner: str, name: str, value: object) -> object:
        """``value`` as this kind (the default when it is None), or a ParamError."""
        if value is None:
            return self.default
        out = self._value(value)
        if out is None:
            shown = repr(value)
            if len(shown) > _SHOWN:
                shown = shown[: _SHOWN - 3] + "..."
            raise ParamError(f"{owner} parameter {name} must be {self.expects()}, got {shown}")
        return out

    def describe(self, name: str) -> str:
        """One line for docs and ``--help``: name, default, what it must be, doc."""
        default = "unset" if self.default is None else (
            ",".join(_text(x) for x in self.default) if self.kind == "floats"
            else str(self.default).lower() if self.kind == "bool" else _text(self.default)
            if isinstance(self.default, int | float) else str(self.default))
        return f"{name} = {default} ({self.expects()}): {self.doc}"


class Schema(Mapping[str, Param]):
    """Parameters by name; :meth:`read` checks a dict of them."""

    def __init__(self, params: Mapping[str, Param] | None = None, **more: Param):
        self._params: dict[str, Param] = {**(params or {}), **more}

    def __getitem__(self, name: str) -> Param:
        return self._params[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)

    def __repr__(self) -> str:
        return f"Schema({', '.join(self._params)})"

    def read(self, owner: str, params: Mapping[str, object] | None) -> dict[str, object]:
        """Every parameter of the schema, from ``params`` or its default.

        Raises :class:`~geodml.errors.ParamError` naming ``owner`` (a method or a site
        procedure) for unknown names, wrong kinds and values out of bounds."""
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise ParamError(f"{owner} parameters must be an object of name: value, "
                             f"got {type(params).__name__}")
        unknown = sorted(str(k) for k in params if k not in self._params)
        if unknown:
            raise ParamError(f"unknown {owner} parameters {unknown}; known: "
                             f"{sorted(self._params)}")
        return {name: p.read(owner, name, params.get(name))
                for name, p in self._params.items()}

    def defaults(self) -> dict[str, object]:
        """Every parameter's default."""
        return {name: p.default for name, p in self._params.items()}

    def with_defaults(self, **defaults: object) -> Schema:
        """The same parameters with some defaults changed (a method's variant)."""
        unknown = sorted(set(defaults) - set(self._params))
        if unknown:
            raise ValueError(f"no parameters {unknown} to give a default")
        return Schema({name: p.with_default(defaults[name]) if name in defaults else p
                       for name, p in self._params.items()})

    def describe(self) -> list[str]:
        """One line per parameter (:meth:`Param.describe`), in declaration order."""
        return [p.describe(name) for name, p in self._params.items()] or ["(no parameters)"]

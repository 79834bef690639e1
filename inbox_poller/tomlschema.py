"""Typed TOML tables: frozen dataclasses filled from a parsed document, every problem listed.

A table is a frozen, keyword-only dataclass that subclasses :class:`Table`. Each field's
annotation says what its key takes: ``str`` (stripped), ``int``, ``float``, ``bool``, a
``Literal`` of choices, ``tuple[T, ...]``, ``dict[str, T]``, another table, or ``T | None``;
wrapped in ``Annotated`` with :class:`Limit` (bounds, length, pattern), :class:`Before`
(turn the TOML value into the field's form first), :class:`After` (a rule on the typed
value, which may also normalise it) and :data:`STRICT` (a ``bool`` that takes only
``true``/``false``). A table's :meth:`Table.precheck` sees its raw keys (rules between keys,
reported beside the keys' own problems) and :meth:`Table.check` its typed self once every
key is valid. Defaults are trusted as written; only what the file says is checked.

:meth:`Table.parse` walks the whole document and raises :class:`TableError` with every
problem it found, each at its key path (``("imap", "port")``, ``("export", 0, "cron")``),
so that a file with several mistakes is fixed in one round.

Why not pydantic, which this replaced: importing it and building the configuration's models
cost every command and the daemon 0.2 s and 15 MiB (issue 13 asks 0.15 s to a command's
first work and 40 MiB for an idle daemon; bench/README.md), and msgspec, light enough, stops
at the first error. The rules here are the few the configuration uses; their messages keep
pydantic's wording, which the documentation and users already know.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Self

Location = tuple[str | int, ...]
"""Where a value is: its keys from the top, with the index of an array item."""


class Problem(NamedTuple):
    """One thing wrong with the document."""

    loc: Location
    message: str
    kind: Literal["value", "unknown", "missing"] = "value"
    value: object = None
    """What was found there (the raw TOML value), for ``value`` and ``unknown`` problems."""
    known: tuple[str, ...] = ()
    """The keys the enclosing table takes, for ``unknown`` problems (to suggest one)."""
    table: bool = False
    """Whether a ``missing`` key holds a table (a section) rather than a value."""


class TableError(ValueError):
    """The document does not fit its tables; :attr:`problems` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(
            "; ".join(f"{'.'.join(map(str, p.loc)) or 'top'}: {p.message}" for p in problems)
        )
        self.problems = tuple(problems)


@dataclass(frozen=True)
class Limit:
    """Bounds on a number, or a minimum length and a pattern for a string."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    min_length: int | None = None
    pattern: str | None = None

    def problem(self, value: object) -> str | None:
        """Say how *value* (already of the field's type) breaks the limit; None if it does not."""
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.gt is not None and not value > self.gt:
                return f"Input should be greater than {self.gt}"
            if self.ge is not None and not value >= self.ge:
                return f"Input should be greater than or equal to {self.ge}"
            if self.lt is not None and not value < self.lt:
                return f"Input should be less than {self.lt}"
            if self.le is not None and not value <= self.le:
                return f"Input should be less than or equal to {self.le}"
        if isinstance(value, str):
            if self.min_length is not None and len(value) < self.min_length:
                unit = "character" if self.min_length == 1 else "characters"
                return f"String should have at least {self.min_length} {unit}"
            if self.pattern is not None and not re.search(self.pattern, value):
                return f"String should match pattern '{self.pattern}'"
        return None


@dataclass(frozen=True)
class Before:
    """Turn the raw value into the field's form before its type is checked; raise
    ``ValueError`` saying what is expected."""

    convert: Callable[[Any], object]


@dataclass(frozen=True)
class After:
    """A rule on the typed value: return it (or its normal form), or raise ``ValueError``."""

    check: Callable[[Any], object]


class _Strict:
    def __repr__(self) -> str:
        return "STRICT"


STRICT = _Strict()
"""Marks a ``bool`` that takes only ``true`` and ``false`` (not 0, 1 or "yes")."""

_INVALID: Any = object()
"""What a converter returns after it recorded a problem."""

_Convert = Callable[[object, Location, list[Problem]], object]


class Table:
    """Base of a frozen, keyword-only dataclass read from one TOML table."""

    @classmethod
    def precheck(cls, raw: Mapping[str, object]) -> str | None:
        """Say what is wrong between the raw keys (reported beside their own problems)."""
        return None

    def check(self) -> None:
        """Raise ``ValueError`` if the keys, each valid, do not fit together."""

    @classmethod
    def parse(cls, raw: object) -> Self:
        """Return the table *raw* (a parsed TOML table) describes; raise
        :class:`TableError` listing every problem."""
        problems: list[Problem] = []
        table = _build(cls, raw, (), problems)
        if problems:
            raise TableError(problems)
        return typing.cast(Self, table)

    @classmethod
    def key_names(cls) -> tuple[str, ...]:
        """The keys this table takes, in order."""
        return tuple(_fields(cls))

    @classmethod
    def table_at(cls, key: str) -> type[Table] | None:
        """The table *key* holds (itself, or the items of its array), or None for a value."""
        found = _fields(cls).get(key)
        return found.table if found is not None else None


def dump(value: object) -> Any:
    """Return *value* (a table, or anything in one) as plain TOML-like data: tables as
    dicts in field order, tuples as lists."""
    if isinstance(value, Table):
        return {
            field.name: dump(getattr(value, field.name))
            for field in dataclasses.fields(typing.cast(Any, value))
        }
    if isinstance(value, tuple | list):
        return [dump(item) for item in value]
    if isinstance(value, dict):
        return {key: dump(item) for key, item in value.items()}
    return value


class _Field(NamedTuple):
    convert: _Convert
    required: bool
    table: type[Table] | None


_FIELDS: dict[type[Table], dict[str, _Field]] = {}


def _fields(cls: type[Table]) -> dict[str, _Field]:
    found = _FIELDS.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls, include_extras=True)
        found = {
            field.name: _Field(
                _converter(hints[field.name]),
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING,
                _table_in(hints[field.name]),
            )
            for field in dataclasses.fields(typing.cast(Any, cls))
        }
        _FIELDS[cls] = found
    return found


def _table_in(hint: object) -> type[Table] | None:
    if isinstance(hint, type) and issubclass(hint, Table):
        return hint
    for arg in typing.get_args(hint):
        if (found := _table_in(arg)) is not None:
            return found
    return None


def _build(cls: type[Table], raw: object, loc: Location, problems: list[Problem]) -> object:
    if isinstance(raw, cls):
        return raw  # a default, or a table built already
    if not isinstance(raw, Mapping):
        problems.append(Problem(loc, "Input should be a table", value=raw))
        return _INVALID
    fields = _fields(cls)
    found: list[Problem] = []
    values: dict[str, object] = {}
    for key, value in raw.items():
        field = fields.get(key)
        if field is None:
            found.append(Problem((*loc, key), "unknown key", "unknown", value, tuple(fields)))
            continue
        converted = field.convert(value, (*loc, key), found)
        if converted is not _INVALID:
            values[key] = converted
    for name, field in fields.items():
        if field.required and name not in raw:
            found.append(Problem((*loc, name), "missing", "missing", table=field.table is not None))
    between = cls.precheck(raw)
    if between is not None:
        found.append(Problem(loc, between, value=raw))
    if found:
        problems.extend(found)
        return _INVALID
    table = cls(**values)
    try:
        table.check()
    except ValueError as exc:
        problems.append(Problem(loc, str(exc), value=raw))
        return _INVALID
    return table


def _converter(hint: object) -> _Convert:
    """Return the function that checks and converts a value for the annotation *hint*."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        base, *extras = typing.get_args(hint)
        return _annotated(STRICT if STRICT in extras else base, extras)
    if origin is typing.Union or origin is types.UnionType:
        return _union(typing.get_args(hint))
    if origin is Literal:
        return _choice(typing.get_args(hint))
    if origin is tuple:
        item, rest = typing.get_args(hint)
        assert rest is Ellipsis, f"only tuple[T, ...] is supported, not {hint!r}"
        return _array(_converter(item))
    if origin is dict:
        return _mapping(_converter(typing.get_args(hint)[1]))
    if isinstance(hint, type) and issubclass(hint, Table):
        table = hint
        return lambda value, loc, problems: _build(table, value, loc, problems)
    scalar = _SCALARS.get(hint)
    assert scalar is not None, f"unsupported annotation {hint!r}"
    return scalar


def _annotated(base: object, extras: list[object]) -> _Convert:
    inner = _strict_bool if base is STRICT else _converter(base)
    befores = [extra.convert for extra in extras if isinstance(extra, Before)]
    limits = [extra for extra in extras if isinstance(extra, Limit)]
    afters = [extra.check for extra in extras if isinstance(extra, After)]

    def steps(
        each: list[Callable[[Any], object]],
        value: object,
        raw: object,
        loc: Location,
        problems: list[Problem],
    ) -> object:
        try:
            for step in each:
                value = step(value)
        except ValueError as exc:
            problems.append(Problem(loc, str(exc), value=raw))
            return _INVALID
        return value

    def convert(raw: object, loc: Location, problems: list[Problem]) -> object:
        value = steps(befores, raw, raw, loc, problems)
        if value is not _INVALID:
            value = inner(value, loc, problems)
        if value is _INVALID or value is None:
            return value
        for limit in limits:
            problem = limit.problem(value)
            if problem is not None:
                problems.append(Problem(loc, problem, value=raw))
                return _INVALID
        return steps(afters, value, raw, loc, problems)

    return convert


def _union(members: tuple[object, ...]) -> _Convert:
    optional = type(None) in members
    converters = [_converter(member) for member in members if member is not type(None)]

    def convert(value: object, loc: Location, problems: list[Problem]) -> object:
        if value is None and optional:
            return None
        first: list[Problem] = []
        for converter in converters:
            tried: list[Problem] = []
            result = converter(value, loc, tried)
            if result is not _INVALID:
                return result
            first = first or tried
        problems.extend(first)
        return _INVALID

    return convert


def _choice(choices: tuple[object, ...]) -> _Convert:
    shown = [repr(choice) for choice in choices]
    words = shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"

    def convert(value: object, loc: Location, problems: list[Problem]) -> object:
        if isinstance(value, str) and value in choices:
            return value
        problems.append(Problem(loc, f"Input should be {words}", value=value))
        return _INVALID

    return convert


def _array(item: _Convert) -> _Convert:
    def convert(value: object, loc: Location, problems: list[Problem]) -> object:
        if not isinstance(value, list | tuple):
            problems.append(Problem(loc, "Input should be a valid tuple", value=value))
            return _INVALID
        found: list[Problem] = []
        items = tuple(item(each, (*loc, index), found) for index, each in enumerate(value))
        problems.extend(found)
        return _INVALID if found else items

    return convert


def _mapping(item: _Convert) -> _Convert:
    def convert(value: object, loc: Location, problems: list[Problem]) -> object:
        if not isinstance(value, Mapping):
            problems.append(Problem(loc, "Input should be a valid dictionary", value=value))
            return _INVALID
        found: list[Problem] = []
        items = {str(key): item(each, (*loc, str(key)), found) for key, each in value.items()}
        problems.extend(found)
        return _INVALID if found else items

    return convert


def _scalar(check: Callable[[object], object], expected: str) -> _Convert:
    def convert(value: object, loc: Location, problems: list[Problem]) -> object:
        try:
            return check(value)
        except (TypeError, ValueError):
            problems.append(Problem(loc, f"Input should be {expected}", value=value))
            return _INVALID

    return convert


def _as_str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return value.strip()


def _as_int(value: object) -> int:
    # as pydantic's lax mode: an integral float or a string of digits is taken too
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise TypeError(value)


def _as_float(value: object) -> float:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise TypeError(value)


_TRUE = frozenset({"true", "yes", "on", "1", "t", "y"})
_FALSE = frozenset({"false", "no", "off", "0", "f", "n"})


def _as_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise TypeError(value)


def _only_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(value)
    return value


_SCALARS: dict[object, _Convert] = {
    str: _scalar(_as_str, "a valid string"),
    int: _scalar(_as_int, "a valid integer"),
    float: _scalar(_as_float, "a valid number"),
    bool: _scalar(_as_bool, "a valid boolean"),
}
_strict_bool = _scalar(_only_bool, "a valid boolean")

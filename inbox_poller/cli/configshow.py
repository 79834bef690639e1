"""``inbox-poller config show``: the effective configuration written back as TOML.

The output is itself a valid configuration: loading it gives the same effective
configuration (keys whose value is unset are left out, as TOML has no null).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _string(value: str) -> str:
    """Return *value* as a TOML basic string (control characters escaped)."""
    out = ['"']
    for char in value:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _key(name: str) -> str:
    """Return *name* as a TOML key: bare when it may be, else quoted."""
    bare = name and all(char.isascii() and (char.isalnum() or char in "_-") for char in name)
    return name if bare else _string(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, Mapping):  # a table inside a section ([metrics] labels)
        pairs = (f"{_key(str(key))} = {_value(item)}" for key, item in value.items())
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _body(table: Mapping[str, Any]) -> list[str]:
    return [f"{key} = {_value(value)}" for key, value in table.items() if value is not None]


def render_toml(data: Mapping[str, Any], header: Sequence[str] = ()) -> str:
    """Return *data* (section -> keys, or a list of tables) as TOML, *header* as comments."""
    lines = [f"# {line}" for line in header]
    tables = {name: value for name, value in data.items() if _is_table(value)}
    scalars = {name: value for name, value in data.items() if name not in tables and value != []}
    lines += _body(scalars)
    for name, section in tables.items():
        if isinstance(section, Mapping):
            lines += ["", f"[{name}]", *_body(section)]
        else:
            for table in section:
                lines += ["", f"[[{name}]]", *_body(table)]
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table(value: Any) -> bool:
    """A section (``[name]``) or an array of tables (``[[name]]``); empty lists are values."""
    if isinstance(value, Mapping):
        return True
    return isinstance(value, list) and bool(value) and all(isinstance(t, Mapping) for t in value)

"""Schedules, times and exports for the schedule tests; tables validated as the program does."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from inbox_poller.config import load_config
from inbox_poller.models import Export, ExportRequest, ExportState
from inbox_poller.schedules.table import INTERVAL_EPOCH, ExportSchedule
from tests.samples import MINIMAL


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def make_schedule(**fields: Any) -> ExportSchedule:
    """Return the daily 03:00 schedule "daily" of stat 4711, with *fields* changed (None drops)."""
    raw: dict[str, Any] = {"name": "daily", "stat": "4711", "cron": "0 3 * * *"}
    raw.update(fields)
    return ExportSchedule.parse({k: v for k, v in raw.items() if v is not None})


def make_export(
    export_id: int,
    request: ExportRequest,
    state: ExportState = ExportState.SUBMITTED,
    *,
    created: datetime = INTERVAL_EPOCH,
    reason: str | None = None,
) -> Export:
    return Export(export_id, request, state, created, created, reason=reason)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | date):
        return value.isoformat() if isinstance(value, date) else repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for what the tests write
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _toml_table(header: str, table: Mapping[str, object]) -> str:
    lines = [header, *(f"{key} = {_toml_value(value)}" for key, value in table.items())]
    return "\n".join(lines) + "\n"


def write_config(tmp_path: Path, export_toml: str) -> Path:
    """Write a valid configuration with *export_toml* appended; return its path."""
    path = tmp_path / "config.toml"
    path.write_text(MINIMAL + "\n" + export_toml, encoding="utf-8")
    return path


def load_schedules(
    tmp_path: Path, tables: Sequence[Mapping[str, object]] | Mapping[str, object]
) -> tuple[ExportSchedule, ...]:
    """Validate *tables* the way the program does: written to a config file, then loaded.

    A sequence becomes ``[[export]]`` tables; a single mapping becomes one ``[export]``
    table, the mistake the config model explains. Raises ``ConfigError`` naming the key.
    """
    if isinstance(tables, Mapping):
        text = _toml_table("[export]", tables)
    else:
        text = "\n".join(_toml_table("[[export]]", table) for table in tables)
    return load_config(write_config(tmp_path, text)).schedules

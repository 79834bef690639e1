"""The ``[[export]]`` tables, validated through the config file as the program does it
(docs/schedules.md §1)."""

from __future__ import annotations

import re
from dataclasses import FrozenInstanceError, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from inbox_poller.config import load_config
from inbox_poller.errors import ConfigError
from inbox_poller.schedules.table import ExportSchedules
from inbox_poller.tomlschema import Table, TableError
from tests.schedules.samples import load_schedules, write_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "schedules.md"

INVALID: list[tuple[dict[str, Any], str, str]] = [
    ({"cron": "0 25 * * *"}, "export.0.cron", "not a valid crontab expression"),
    ({"cron": "0 3 * *"}, "export.0.cron", "expected 5 crontab fields"),
    ({"cron": "@daily"}, "export.0.cron", "expected 5 crontab fields"),
    ({"cron": "0 3 * * 1"}, "export.0.cron", "weekday field with names"),
    ({"cron": "0 3 * * */2"}, "export.0.cron", "weekday field with names"),
    ({"cron": "0 0 30 2 *"}, "export.0.cron", "never fires"),
    ({"every": "6h"}, "export.0", "exactly one of cron"),
    ({"cron": None}, "export.0", "exactly one of cron"),
    ({"cron": None, "every": "59s"}, "export.0.every", "from 60s to 366d"),
    ({"cron": None, "every": "367d"}, "export.0.every", "from 60s to 366d"),
    ({"cron": None, "every": "6 hours"}, "export.0.every", "a number and a unit"),
    ({"cron": None, "every": "1h30m"}, "export.0.every", "a number and a unit"),
    ({"window": "yesterday"}, "export.0.window", 'expected "previous-day"'),
    ({"window": "last-days"}, "export.0.window", 'expected "previous-day"'),
    ({"window": "last-0-days"}, "export.0.window", "from 1 to 366"),
    ({"window": "last-367-days"}, "export.0.window", "from 1 to 366"),
    ({"window": "fixed"}, "export.0", "needs start and end"),
    ({"window": "fixed", "start": "20260101"}, "export.0", "needs start and end"),
    ({"window": "fixed", "start": "20260201", "end": "20260201"}, "export.0", "end must be after"),
    ({"window": "fixed", "start": "20260201", "end": "20260101"}, "export.0", "end must be after"),
    ({"start": "20260101", "end": "20260201"}, "export.0", "only used with window"),
    ({"window": "fixed", "start": "20260230", "end": "20260301"}, "export.0.start", "real cal"),
    ({"window": "fixed", "start": "2026-01-01", "end": "20260301"}, "export.0.start", "YYYYMMDD"),
    ({"stat": "abc"}, "export.0.stat", "is not a stat ID"),
    ({"stat": ""}, "export.0.stat", "is not a stat ID"),
    ({"stat": True}, "export.0.stat", "is not a stat ID"),
    ({"stat": 12.5}, "export.0.stat", "is not a stat ID"),
    ({"stat": []}, "export.0.stat", "non-empty list"),
    ({"stat": ["4711", "x"]}, "export.0.stat", "'x' is not a stat ID"),
    ({"stat": ["4711", 4711]}, "export.0.stat", "listed twice"),
    # stat is no longer required on its own (issue 12: sends, or another method's keys)
    ({"stat": None}, "export.0", "give stat (a stat ID or a list of them) or sends"),
    ({"name": "Daily"}, "export.0.name", "a-z, 0-9"),
    ({"name": ""}, "export.0.name", "a-z, 0-9"),
    ({"enabled": True}, "export.0.enabled", "unknown key"),
]


@pytest.mark.parametrize(("fields", "key", "message"), INVALID)
def test_invalid_tables_name_the_key(
    tmp_path: Path, fields: dict[str, Any], key: str, message: str
) -> None:
    raw: dict[str, Any] = {"name": "daily", "stat": "4711", "cron": "0 3 * * *"}
    raw.update(fields)
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(ConfigError) as caught:
        load_schedules(tmp_path, [raw])
    assert caught.value.key == key
    assert message in str(caught.value)


def test_the_index_of_the_bad_table_is_named(tmp_path: Path) -> None:
    good = {"name": "a", "stat": "1", "cron": "0 3 * * *"}
    with pytest.raises(ConfigError, match=r"export\.1\.cron: not a valid crontab"):
        load_schedules(tmp_path, [good, {"name": "b", "stat": "1", "cron": "0 3 32 * *"}])


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    table = {"name": "same", "stat": "1", "cron": "0 3 * * *"}
    with pytest.raises(ConfigError, match="'same' is used more than once") as caught:
        load_schedules(tmp_path, [table, {**table, "stat": "2"}])
    assert caught.value.key == "export"


def test_a_single_table_instead_of_an_array_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[\[export\]\] table \(double brackets\)"):
        load_schedules(tmp_path, {"name": "a", "stat": "1", "cron": "0 3 * * *"})


def test_values_are_normalised(tmp_path: Path) -> None:
    (first, second) = load_schedules(
        tmp_path,
        [
            {"name": "a", "stat": 4711, "cron": " 0   3 * *  mon-fri "},
            {
                "name": "b",
                "stat": [" 1 ", 2],
                "every": "90m",
                "window": "fixed",
                "start": date(2026, 1, 1),
                "end": 20260401,
            },
        ],
    )
    assert first.stat == ("4711",)
    assert first.cron == "0 3 * * mon-fri"
    assert first.window == "previous-day"  # the default
    assert (first.every, first.every_s, first.window_days) == (None, None, 1)
    assert second.stat == ("1", "2")
    assert (second.every_s, second.start, second.end) == (5400, "20260101", "20260401")
    assert second.window_days is None
    with pytest.raises(FrozenInstanceError):
        first.name = "other"  # type: ignore[misc]


def test_a_schedule_is_a_field_of_a_config_model_with_indexed_errors() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Holder(Table):
        export: ExportSchedules = ()

    assert Holder().export == ()
    holder = Holder.parse({"export": [{"name": "a", "stat": "1", "every": "1d"}]})
    assert holder.export[0].every_s == 86400
    with pytest.raises(TableError) as caught:
        Holder.parse({"export": [{"name": "a", "stat": "1", "cron": "x 3 * * *"}]})
    assert caught.value.problems[0].loc == ("export", 0, "cron")


def test_the_documented_example_is_valid(tmp_path: Path) -> None:
    block = re.search(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert block is not None
    schedules = load_config(write_config(tmp_path, block[1])).schedules
    assert [s.name for s in schedules] == [
        "daily-contacts",
        "weekly-campaigns",
        "full-snapshot",
        "q1-2026",
    ]
    assert schedules[1].describe() == (
        "export weekly-campaigns: stat 4712,4713, cron '30 4 * * mon' UTC, window last-7-days"
    )

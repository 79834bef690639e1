"""Typed TOML tables: what each annotation takes, every problem listed at its key path."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import FrozenInstanceError, dataclass, field
from typing import Annotated, Literal

import pytest

from inbox_poller.tomlschema import STRICT, After, Before, Limit, Problem, Table, TableError, dump


def _even(value: int) -> int:
    if value % 2:
        raise ValueError("expected an even number")
    return value


def _words(value: object) -> object:
    return value.split() if isinstance(value, str) else value


@dataclass(frozen=True, kw_only=True)
class Inner(Table):
    name: Annotated[str, Limit(min_length=1)]
    size: Annotated[int, Limit(ge=1, le=10)] = 1


@dataclass(frozen=True, kw_only=True)
class Outer(Table):
    title: Annotated[str, Limit(pattern=r"^[a-z]+\Z")]
    count: int = 0
    ratio: Annotated[float, Limit(gt=0)] = 1.0
    flag: bool = False
    strict: Annotated[bool, STRICT] = True
    mode: Literal["fast", "slow"] = "fast"
    even: Annotated[int | None, After(_even)] = None
    tags: Annotated[tuple[str, ...], Before(_words)] = ()
    labels: dict[str, str] = field(default_factory=dict)
    inner: Inner = Inner(name="default")
    items: tuple[Inner, ...] = ()
    either: str | tuple[str, ...] | None = None

    @classmethod
    def precheck(cls, raw: Mapping[str, object]) -> str | None:
        return "count and even exclude each other" if "count" in raw and "even" in raw else None

    def check(self) -> None:
        if self.mode == "slow" and self.count > 5:
            raise ValueError("slow mode takes a count of at most 5")


def _problems(raw: object) -> list[tuple[str, str, str]]:
    with pytest.raises(TableError) as caught:
        Outer.parse(raw)
    return sorted((".".join(map(str, p.loc)), p.kind, p.message) for p in caught.value.problems)


def test_a_valid_table_takes_its_values_and_defaults() -> None:
    outer = Outer.parse(
        {
            "title": "  abc ",
            "count": 3,
            "ratio": 2,
            "flag": "yes",
            "tags": "a b",
            "labels": {"k": "v"},
            "inner": {"name": "x", "size": 10},
            "items": [{"name": "p"}, {"name": "q", "size": 2}],
            "either": ["one", "two"],
        }
    )
    assert outer.title == "abc"  # strings are stripped
    assert (outer.count, outer.ratio, outer.flag, outer.strict) == (3, 2.0, True, True)
    assert outer.tags == ("a", "b")
    assert outer.inner == Inner(name="x", size=10)
    assert outer.items == (Inner(name="p"), Inner(name="q", size=2))
    assert outer.either == ("one", "two")
    assert Outer.parse({"title": "x", "either": "one"}).either == "one"
    with pytest.raises(FrozenInstanceError):
        outer.count = 4  # type: ignore[misc]


def test_every_problem_is_listed_at_its_key_path() -> None:
    assert _problems(
        {
            "title": "ABC",
            "count": "many",
            "ratio": 0,
            "flag": "perhaps",
            "strict": 1,
            "mode": "medium",
            "even": 3,
            "labels": {"k": 5},
            "inner": {"size": 11, "colour": "red"},
            "items": [{"name": "ok"}, {"name": ""}],
            "either": 5,
            "extra": True,
        }
    ) == sorted(
        [
            ("", "value", "count and even exclude each other"),
            ("count", "value", "Input should be a valid integer"),
            ("either", "value", "Input should be a valid string"),
            ("even", "value", "expected an even number"),
            ("extra", "unknown", "unknown key"),
            ("flag", "value", "Input should be a valid boolean"),
            ("inner.colour", "unknown", "unknown key"),
            ("inner.name", "missing", "missing"),
            ("inner.size", "value", "Input should be less than or equal to 10"),
            ("items.1.name", "value", "String should have at least 1 character"),
            ("labels.k", "value", "Input should be a valid string"),
            ("mode", "value", "Input should be 'fast' or 'slow'"),
            ("ratio", "value", "Input should be greater than 0"),
            ("strict", "value", "Input should be a valid boolean"),
            ("title", "value", "String should match pattern '^[a-z]+\\Z'"),
        ]
    )


def test_a_problem_carries_what_a_message_needs() -> None:
    with pytest.raises(TableError) as caught:
        Outer.parse({"title": "x", "inner": {"nme": "y"}, "count": 1.5})
    problems = {p.loc: p for p in caught.value.problems}
    assert problems[("inner", "nme")] == Problem(
        ("inner", "nme"), "unknown key", "unknown", "y", ("name", "size")
    )
    assert problems[("inner", "name")].table is False
    assert problems[("count",)].value == 1.5
    with pytest.raises(TableError) as caught:
        Outer.parse({})
    assert [(p.loc, p.kind) for p in caught.value.problems] == [(("title",), "missing")]


def test_the_table_rule_runs_only_when_every_key_is_valid() -> None:
    assert _problems({"title": "x", "mode": "slow", "count": 6}) == [
        ("", "value", "slow mode takes a count of at most 5")
    ]
    # a key's own problem first: the rule between keys is not run on a half-valid table
    assert _problems({"title": "x", "mode": "slow", "count": 6, "ratio": -1}) == [
        ("ratio", "value", "Input should be greater than 0")
    ]


def test_lax_numbers_and_booleans_as_toml_users_write_them() -> None:
    outer = Outer.parse({"title": "x", "count": "7", "ratio": "0.5", "flag": 1})
    assert (outer.count, outer.ratio, outer.flag) == (7, 0.5, True)
    assert Outer.parse({"title": "x", "count": 4.0}).count == 4
    for not_an_int in (True, 4.5, [4]):
        assert ("count", "value", "Input should be a valid integer") in _problems(
            {"title": "x", "count": not_an_int}
        )


def test_not_a_table_where_one_is_expected() -> None:
    assert _problems({"title": "x", "inner": "name"}) == [
        ("inner", "value", "Input should be a table")
    ]
    assert _problems({"title": "x", "items": {"name": "y"}}) == [
        ("items", "value", "Input should be a valid tuple")
    ]
    with pytest.raises(TableError, match="top: Input should be a table"):
        Outer.parse(["title"])


def test_the_keys_the_tables_take_and_what_they_hold() -> None:
    assert Inner.key_names() == ("name", "size")
    assert Outer.table_at("inner") is Inner
    assert Outer.table_at("items") is Inner
    assert Outer.table_at("title") is None
    assert Outer.table_at("nothing") is None


def test_dump_gives_plain_data_in_field_order() -> None:
    outer = Outer.parse({"title": "x", "items": [{"name": "p"}], "tags": "a"})
    data = dump(outer)
    assert list(data) == list(Outer.key_names())
    assert data["items"] == [{"name": "p", "size": 1}]
    assert data["tags"] == ["a"]
    assert data["inner"] == {"name": "default", "size": 1}

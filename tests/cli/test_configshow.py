"""TOML written back by ``config show``: valid, and read back to the same values."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from inbox_poller.cli.configshow import render_toml


@pytest.mark.parametrize(
    "data",
    [
        {"a": {"s": 'quote " backslash \\ tab \t nl \n del \x7f é 😀', "n": 3, "f": 0.5}},
        {"a": {"b": True, "l": ["x", "y"], "empty": []}, "export": [{"name": "n", "stat": ["1"]}]},
        {"export": [], "a": {}},
    ],
)
def test_rendered_toml_reads_back_to_the_same_values(data: dict[str, Any]) -> None:
    text = render_toml(data, ["a header", "second line"])
    assert text.startswith("# a header\n# second line\n")
    read = tomllib.loads(text)
    expected = {k: v for k, v in data.items() if v != []}
    assert read == expected


def test_unset_values_are_left_out() -> None:
    assert render_toml({"imap": {"port": None, "host": "h"}}) == '[imap]\nhost = "h"\n'

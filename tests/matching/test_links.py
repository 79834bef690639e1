"""Links: bare URLs and their labels, normalisation, and unwrapping of tracking redirects."""

from __future__ import annotations

import base64

import pytest

from inbox_poller.matching.links import (
    find_bare_urls,
    labelled_bare_urls,
    unwrap_redirect,
    url_scheme,
    without_broken_copies,
)
from inbox_poller.models import Link

# --- bare URLs in text --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "urls"),
    [
        ("Get it at https://a.mypinpointe.com/f.json.", ["https://a.mypinpointe.com/f.json"]),
        ("(see https://a.mypinpointe.com/f)", ["https://a.mypinpointe.com/f"]),
        ("https://a.mypinpointe.com/wiki/A_(b)!", ["https://a.mypinpointe.com/wiki/A_(b)"]),
        ("<https://a.mypinpointe.com/x?y=1&z=2>,", ["https://a.mypinpointe.com/x?y=1&z=2"]),
        ('"https://a.mypinpointe.com/q"', ["https://a.mypinpointe.com/q"]),
        ("'https://a.mypinpointe.com/q';", ["https://a.mypinpointe.com/q"]),
        ("HTTPS://A.MYPINPOINTE.COM/Path", ["https://a.mypinpointe.com/Path"]),
        ("ダウンロード：https://a.mypinpointe.com/f。次", ["https://a.mypinpointe.com/f"]),
        ("[x](https://a.mypinpointe.com/f)", ["https://a.mypinpointe.com/f"]),
        ("a https://a.mypinpointe.com/f?sig=ab== b", ["https://a.mypinpointe.com/f?sig=ab=="]),
        ("a\u00a0https://a.mypinpointe.com/f\u200bb", ["https://a.mypinpointe.com/f"]),
        ("ftp://a.example/f mailto:x@y.z www.example.com", []),
        (
            "twice https://a.mypinpointe.com/f https://a.mypinpointe.com/f",
            ["https://a.mypinpointe.com/f"],
        ),
    ],
)
def test_bare_urls(text: str, urls: list[str]) -> None:
    assert find_bare_urls(text) == urls


def test_urls_in_running_text_are_labelled_by_the_words_before_them() -> None:
    text = (
        "Hello\nDownload your file here:\nhttps://a.mypinpointe.com/x\n\n"
        "Unsubscribe: https://a.mypinpointe.com/u (help: https://a.mypinpointe.com/h)\n"
        "Thanks.\nhttps://a.mypinpointe.com/z"
    )
    assert labelled_bare_urls(text) == [
        ("https://a.mypinpointe.com/x", "Download your file here:"),
        ("https://a.mypinpointe.com/u", "Unsubscribe:"),
        ("https://a.mypinpointe.com/h", "(help:"),
        ("https://a.mypinpointe.com/z", ""),
    ]


@pytest.mark.parametrize(
    ("url", "scheme"),
    [("HTTPS://a.example/", "https"), ("mailto:x@y.z", "mailto"), ("files/x.json", ""), ("", "")],
)
def test_url_scheme(url: str, scheme: str) -> None:
    assert url_scheme(url) == scheme


# --- tracking redirects -------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "targets"),
    [
        (
            "https://t.mypinpointe.com/link.php?M=1&url=https%3A%2F%2Fa.mypinpointe.com%2Ff%3Fx%3D1",
            ["https://a.mypinpointe.com/f?x=1"],
        ),
        (
            "https://t.example/r?u=https%253A%252F%252Fa.mypinpointe.com%252Ff",
            ["https://a.mypinpointe.com/f"],
        ),
        (
            "https://www.google.com/url?q=https://a.mypinpointe.com/f&sa=D",
            ["https://a.mypinpointe.com/f"],
        ),
        (
            "https://t.example/c?upn="
            + base64.urlsafe_b64encode(b"https://a.mypinpointe.com/f").decode().rstrip("="),
            ["https://a.mypinpointe.com/f"],
        ),
        (
            "https://urldefense.proofpoint.com/v2/url?u=https-3A__a.mypinpointe.com_f-2Dx.json&d=D",
            ["https://a.mypinpointe.com/f-x.json"],
        ),
        (
            "https://urldefense.com/v3/__https://a.mypinpointe.com/f.json__;!!abc$",
            ["https://a.mypinpointe.com/f.json"],
        ),
        (
            "https://t.example/r/https%3A%2F%2Fa.mypinpointe.com%2Ff",
            ["https://a.mypinpointe.com/f"],
        ),
        (
            "https://t.example/r#u=https%3A%2F%2Fa.mypinpointe.com%2Ff",
            ["https://a.mypinpointe.com/f"],
        ),
        ("https://a.mypinpointe.com/f?sig=aHR0cHM6Ly9ub3Q&x=1", []),
        ("https://a.mypinpointe.com/f?next=/home", []),
        ("mailto:x@example.org?body=https://a.mypinpointe.com/f", ["https://a.mypinpointe.com/f"]),
    ],
)
def test_tracking_redirects_are_unwrapped(url: str, targets: list[str]) -> None:
    assert unwrap_redirect(url) == targets


# --- text copies cut at a line end ------------------------------------------------------


def test_a_cut_text_copy_goes_with_the_targets_unwrapped_only_from_it() -> None:
    whole = "https://t.mypinpointe.com/r?u=https%3A%2F%2Fa.mypinpointe.com%2Ff.json&x=1"
    cut = whole[:60]
    cut_target = "https://a.mypinpointe.com/f"
    links = [
        Link(cut, "", "text"),
        Link(cut_target, "", "unwrapped", via=cut),
        Link(cut_target + "?next=1", "", "unwrapped", via=cut_target),
        Link(whole, "Download", "href"),
        Link("https://a.mypinpointe.com/f.json", "Download", "unwrapped", via=whole),
    ]
    assert without_broken_copies(links) == (links[3], links[4])


def test_a_target_stays_while_its_wrapper_url_is_still_linked() -> None:
    whole = "https://t.mypinpointe.com/r?u=https%3A%2F%2Fa.mypinpointe.com%2Ff.json&x=1"
    target = "https://a.mypinpointe.com/f.json"
    links = [
        Link(whole[:60], "", "text"),
        Link(target, "", "unwrapped", via=whole[:60]),
        Link(target + "#x", "", "unwrapped", via=target),
        Link(whole, "Download", "href"),
        Link(target, "Download", "unwrapped", via=whole),
    ]
    assert without_broken_copies(links) == (links[2], links[3], links[4])


def test_targets_of_a_kept_link_stay_whatever_their_order() -> None:
    wrapper = "https://t.mypinpointe.com/r?u=https%3A%2F%2Fa.mypinpointe.com%2Ff.json"
    links = [Link("https://a.mypinpointe.com/f.json", "", "unwrapped", via=wrapper), Link(wrapper)]
    assert without_broken_copies(links) == tuple(links)

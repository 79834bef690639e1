"""Link verdicts and the choice of the download link (docs/matching.md §3 and §4)."""

from __future__ import annotations

import pytest

from inbox_poller.matching.verdicts import choose_download_link, judge_links
from inbox_poller.models import Link, LinkVerdict
from inbox_poller.urlpolicy import HostRule, parse_host_rule

RULES: tuple[HostRule, ...] = (parse_host_rule(".mypinpointe.com"),)
FILE = "https://exports.mypinpointe.com/files/482913075/data.json.gz?sig=abc"

# --- link verdicts ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "text", "kept", "reason"),
    [
        (FILE, "Download", True, "allowed host"),
        ("https://na01.mypinpointe.com/x", "", True, "allowed host"),
        ("mailto:help@pinpointe.com", "Help", False, "mailto"),
        ("javascript:alert(1)", "Download", False, "javascript"),
        ("data:text/html,hi", "", False, "data"),
        ("tel:+15555550100", "", False, "tel"),
        ("files/x.json", "", False, "not an absolute"),
        ("http://exports.mypinpointe.com/f.json", "", False, "not https"),
        ("https://evil.example/f.json", "", False, "not in download.allowed_hosts"),
        ("https://evilmypinpointe.com/f.json", "", False, "not in download.allowed_hosts"),
        ("https://mypinpointe.com.evil.example/f", "", False, "not in download.allowed_hosts"),
        ("https://na01.mypinpointe.com@evil.example/", "", False, "user info"),
        ("https://203.0.113.7/f.json", "", False, "IP address"),
        ("https://[2001:db8::1]/f.json", "", False, "IP address"),
        ("https://exports.mypinpointe.com:8443/f.json", "", False, "not in download.allowed_hosts"),
        ("https://na01.mypinpointe.com/unsubscribe.php?M=1", "", False, "unsubscribe"),
        ("https://na01.mypinpointe.com/x?M=1", "Unsubscribe", False, "unsubscribe"),
        ("https://na01.mypinpointe.com/x", "Opt out of these mails", False, "unsubscribe"),
        ("https://na01.mypinpointe.com/preferences.php", "", False, "preferences"),
        ("https://na01.mypinpointe.com/x", "Manage your subscription", False, "preferences"),
        ("https://na01.mypinpointe.com/help/exports", "", False, "help"),
        ("https://na01.mypinpointe.com/x", "Need help?", False, "help"),
        ("https://na01.mypinpointe.com/support/", "", False, "support"),
        ("https://na01.mypinpointe.com/x", "Contact us", False, "support"),
        ("https://na01.mypinpointe.com/privacy", "", False, "privacy"),
        ("https://na01.mypinpointe.com/x", "Terms of service", False, "terms"),
        ("https://na01.mypinpointe.com/display.php?M=1", "", False, "view-in-browser"),
        (
            "https://na01.mypinpointe.com/x",
            "View this email in your browser",
            False,
            "view-in-browser",
        ),
        ("https://na01.mypinpointe.com/x", "Follow us on LinkedIn", False, "social"),
        ("https://na01.mypinpointe.com/images/logo.png", "", False, "logo"),
        ("https://www.mypinpointe.com/", "Pinpointe", False, "home page"),
        ("https://na01.mypinpointe.com/x", "Company logo", False, "logo"),
        ("https://app.mypinpointe.com/login.php", "", False, "login"),
        # words that look auxiliary but are not
        ("https://na01.mypinpointe.com/support-exports/1.json", "", True, "allowed host"),
        ("https://na01.mypinpointe.com/x", "Log in to download your export", True, "allowed host"),
        ("https://na01.mypinpointe.com/?token=abc", "", True, "allowed host"),
    ],
)
def test_link_verdicts(url: str, text: str, kept: bool, reason: str) -> None:
    (verdict,) = judge_links([Link(url, text, "href")], RULES)
    assert (verdict.kept, verdict.url) == (kept, url)
    assert reason in verdict.reason


@pytest.mark.parametrize(
    ("label", "kept", "reason"),
    [
        ("Unsubscribe:", False, "unsubscribe link"),
        ("Need help? See", False, "help link"),
        ("View this email online:", False, "view-in-browser link"),
        ("Sign in to get your file:", True, "allowed host"),
        ("Follow the link:", True, "allowed host"),
        ("Help with your download:", True, "allowed host"),
    ],
)
def test_words_before_a_url_in_running_text(label: str, kept: bool, reason: str) -> None:
    (verdict,) = judge_links([Link("https://na01.mypinpointe.com/x", label, "text")], RULES)
    assert (verdict.kept, verdict.reason) == (kept, reason)


def test_one_verdict_per_distinct_url_in_order() -> None:
    links = [Link(FILE, "Download", "href"), Link("mailto:x@y.z"), Link(FILE, "", "text")]
    assert [v.url for v in judge_links(links, RULES)] == [FILE, "mailto:x@y.z"]


def test_a_tracking_wrapper_gives_way_to_its_target() -> None:
    wrapper = "https://na01.mypinpointe.com/link.php?url=x"
    links = [Link(wrapper, "Download", "href"), Link(FILE, "Download", "unwrapped", wrapper)]
    verdicts = judge_links(links, RULES)
    assert verdicts[0] == LinkVerdict(
        wrapper, False, "tracking redirect; its target is judged instead"
    )
    assert verdicts[1] == LinkVerdict(FILE, True, "allowed host")


def test_the_target_of_an_unsubscribe_link_is_refused_too() -> None:
    wrapper = "https://na01.mypinpointe.com/unsubscribe.php?redirect=x"
    home = "https://www.mypinpointe.com/thanks"
    verdicts = judge_links([Link(wrapper, "", "href"), Link(home, "", "unwrapped", wrapper)], RULES)
    assert [(v.kept, v.reason) for v in verdicts] == [
        (False, "unsubscribe link"),
        (False, "unsubscribe link"),
    ]


def test_a_target_also_linked_directly_is_not_tainted_by_an_auxiliary_wrapper() -> None:
    wrapper = "https://na01.mypinpointe.com/unsubscribe.php?redirect=x"
    links = [
        Link(FILE, "Download", "href"),
        Link(wrapper, "", "href"),
        Link(FILE, "", "unwrapped", wrapper),
    ]
    assert judge_links(links, RULES)[0].kept


def test_via_ties_a_target_to_its_wrapper_wherever_it_stands() -> None:
    wrapper = "https://na01.mypinpointe.com/link.php?url=x"
    other = "https://na01.mypinpointe.com/d/Qk7x"
    links = [Link(FILE, "Download", "unwrapped", wrapper), Link(other), Link(wrapper, "Download")]
    assert [(v.url, v.kept) for v in judge_links(links, RULES)] == [
        (FILE, True),
        (other, True),
        (wrapper, False),
    ]


def test_an_unwrapped_link_without_via_belongs_to_no_wrapper() -> None:
    wrapper = "https://na01.mypinpointe.com/link.php?url=x"
    links = [Link(wrapper, "Download", "href"), Link(FILE, "Download", "unwrapped")]
    assert [v.kept for v in judge_links(links, RULES)] == [True, True]


def test_every_redirect_in_a_chain_gives_way_to_its_target() -> None:
    safe = "https://eur01.safelinks.protection.outlook.com/?url=x"
    tracker = "https://na01.mypinpointe.com/link.php?M=1&url=y"
    links = [
        Link(safe, "Download", "href"),
        Link(tracker, "Download", "unwrapped", safe),
        Link(FILE, "Download", "unwrapped", tracker),
    ]
    verdicts = judge_links(links, RULES)
    assert [v.reason for v in verdicts[1:]] == [
        "tracking redirect; its target is judged instead",
        "allowed host",
    ]
    assert choose_download_link(verdicts, None) == (FILE, "the only acceptable link")


def test_a_purpose_is_inherited_down_a_chain_of_redirects() -> None:
    unsubscribe = "https://na01.mypinpointe.com/unsubscribe.php?r=x"
    tracker = "https://na01.mypinpointe.com/link.php?url=y"
    links = [
        Link(unsubscribe, "", "href"),
        Link(tracker, "", "unwrapped", unsubscribe),
        Link(FILE, "", "unwrapped", tracker),
    ]
    assert [v.reason for v in judge_links(links, RULES)] == ["unsubscribe link"] * 3


def test_a_cycle_of_via_links_ends() -> None:
    a, b = "https://na01.mypinpointe.com/a", "https://na01.mypinpointe.com/b"
    links = [Link(a, "", "unwrapped", b), Link(b, "", "unwrapped", a)]
    assert [v.reason for v in judge_links(links, RULES)] == [
        "tracking redirect; its target is judged instead"
    ] * 2


# --- the download link --------------------------------------------------------------


def _kept(*urls: str) -> list[LinkVerdict]:
    return [LinkVerdict(url, True, "allowed host") for url in urls]


@pytest.mark.parametrize(
    ("verdicts", "job_id", "url", "reason"),
    [
        ([], None, None, "no acceptable download link"),
        ([LinkVerdict(FILE, False, "not https")], "482913075", None, "no acceptable"),
        (_kept(FILE), None, FILE, "the only acceptable link"),
        (
            _kept("https://a.mypinpointe.com/d/111111", "https://a.mypinpointe.com/d/222222"),
            "222222",
            "https://a.mypinpointe.com/d/222222",
            "names job 222222",
        ),
        (
            _kept("https://a.mypinpointe.com/d?j=111", "https://a.mypinpointe.com/d%3Fj%3D222"),
            "222",
            "https://a.mypinpointe.com/d%3Fj%3D222",
            "names job 222",
        ),
        (
            _kept("https://a.mypinpointe.com/d/2222225", "https://a.mypinpointe.com/d/x222222"),
            "222222",
            None,
            "2 acceptable links and none singled out",
        ),
        (
            _kept("https://a.mypinpointe.com/account", "https://a.mypinpointe.com/f/data.json.gz"),
            None,
            "https://a.mypinpointe.com/f/data.json.gz",
            "to a file",
        ),
        (
            _kept("https://a.mypinpointe.com/link.php?M=1&L=2", "https://a.mypinpointe.com/d/Qk7x"),
            None,
            "https://a.mypinpointe.com/d/Qk7x",
            "not a click tracker",
        ),
        (
            _kept("https://a.mypinpointe.com/r/1", "https://a.mypinpointe.com/ls/click?x=2"),
            None,
            None,
            "2 acceptable links and none singled out",
        ),
        (
            _kept("https://a.mypinpointe.com/a.json", "https://a.mypinpointe.com/b.json"),
            None,
            None,
            "2 acceptable links and none singled out",
        ),
        (
            _kept(
                "https://a.mypinpointe.com/1",
                "https://a.mypinpointe.com/2",
                "https://a.mypinpointe.com/3",
            ),
            "9",
            None,
            "3 acceptable links",
        ),
    ],
)
def test_choose_download_link(
    verdicts: list[LinkVerdict], job_id: str | None, url: str | None, reason: str
) -> None:
    chosen, why = choose_download_link(verdicts, job_id)
    assert chosen == url
    assert reason in why

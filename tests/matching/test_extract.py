"""The extractor: every part, encoding and charset read; links and job IDs found; never a crash."""

from __future__ import annotations

import base64
import json
import random
import time
from pathlib import Path

import pytest

from inbox_poller.errors import ExtractError
from inbox_poller.matching.charsets import text_codec
from inbox_poller.matching.extract import extract
from inbox_poller.matching.links import MAX_LINKS, join_angle_urls, unwrap_redirect
from inbox_poller.matching.markup import MAX_OPEN_LINKS, read_markup
from inbox_poller.models import Notification
from tests import costly_mails

EML_DIR = Path(__file__).parents[1] / "data" / "eml"
JOB = "482913075"
DL = (
    f"https://exports.mypinpointe.com/files/{JOB}/contact-data.json.gz"
    "?expires=1767225600&sig=Zm9vYmFyYmF6"
)


def _mail(
    body: bytes | str, content_type: str = "text/plain; charset=utf-8", **headers: str
) -> bytes:
    """Build a one-part mail; *body* is used as is (already transfer-encoded)."""
    lines = {
        "From": "Pinpointe <notifications@na01.mypinpointe.com>",
        "To": "exports@example.org",
        "Subject": "Export ready",
        "Message-ID": "<test@na01.mypinpointe.com>",
        "MIME-Version": "1.0",
        "Content-Type": content_type,
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    head = "".join(f"{k}: {v}\r\n" for k, v in lines.items()).encode("ascii")
    data = body.encode("utf-8") if isinstance(body, str) else body
    return head + b"\r\n" + data


def _urls(notification: Notification, source: str | None = None) -> list[str]:
    return [link.url for link in notification.links if source in (None, link.source)]


# --- the corpus -------------------------------------------------------------------


def test_the_corpus_is_large_and_described() -> None:
    files = sorted(p.name for p in EML_DIR.glob("*.eml"))
    described = {case["file"] for case in json.loads((EML_DIR / "cases.json").read_text())}
    assert len(files) >= 25
    assert set(files) == described


@pytest.mark.parametrize("path", sorted(EML_DIR.glob("*.eml")), ids=lambda p: p.name)
def test_every_corpus_mail_is_read(path: Path) -> None:
    notification = extract(path.read_bytes())
    assert notification.subject
    assert notification.sender and "@" in notification.sender
    assert notification.texts
    assert notification.links
    for text in (notification.subject, *notification.texts):
        assert not any(0xD800 <= ord(c) <= 0xDFFF for c in text), "surrogates leaked"


@pytest.mark.parametrize(
    ("name", "subject"),
    [
        ("05_base64_parts.eml", "Your export is ready"),
        ("06_iso_8859_1.eml", "Ihr Export ist fertig \x96 Größe 1,2 MB"),
        ("08_shift_jis_base64.eml", "エクスポート完了"),
        ("09_iso_2022_jp.eml", "準備完了"),
        ("12_job_id_only_in_rfc2047_subject.eml", f"Votre export n° {JOB} est prêt"),
    ],
)
def test_rfc2047_subjects_are_decoded(name: str, subject: str) -> None:
    assert extract((EML_DIR / name).read_bytes()).subject == subject


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("06_iso_8859_1.eml", "Größe"),
        ("07_windows_1252_8bit.eml", "\u201cDownload\u201d"),
        ("08_shift_jis_base64.eml", "ジョブID"),
        ("09_iso_2022_jp.eml", "準備ができました"),
        ("10_utf16_html.eml", f"Export ID: {JOB}"),
        ("11_wrong_declared_charset.eml", "Résumé"),
        ("11_wrong_declared_charset.eml", "Exportación"),
        ("21_nested_mixed_text_attachment.eml", f"job_id={JOB}"),
        ("22_forwarded_rfc822.eml", f"Subject: Your export {JOB} is ready"),
    ],
)
def test_every_charset_and_part_is_decoded(name: str, needle: str) -> None:
    texts = extract((EML_DIR / name).read_bytes()).texts
    assert any(needle in text for text in texts), texts


def test_a_mail_with_malformed_mime_is_read_with_its_defects() -> None:
    notification = extract((EML_DIR / "23_malformed_mime.eml").read_bytes())
    assert DL in _urls(notification)
    assert any("CloseBoundaryNotFound" in d for d in notification.defects)
    assert any("Base64" in d for d in notification.defects)


def test_images_are_not_links_and_anchor_words_are_kept() -> None:
    notification = extract((EML_DIR / "02_html_only.eml").read_bytes())
    assert not any(url.endswith(".png") for url in _urls(notification))
    button = next(link for link in notification.links if "download?job=" in link.url)
    assert button.text == "Download Download file"  # the title, then the image's alt
    assert "&amp;" not in button.url and "&file=" in button.url


def test_style_and_script_are_not_text() -> None:
    html = (
        "<html><head><style>td{color:#482913}</style><script>var job='X-999999';</script>"
        "</head><body><p>Hello</p></body></html>"
    )
    texts = extract(_mail(html, "text/html; charset=utf-8")).texts
    assert texts == ("Hello",)


# --- links ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("href", "url"),
    [
        ("https://a.mypinpointe.com/x?a=1&amp;b=2", "https://a.mypinpointe.com/x?a=1&b=2"),
        ("  https://a.mypinpointe.com/x\n/y  ", "https://a.mypinpointe.com/x/y"),
        ("//a.mypinpointe.com/x", "https://a.mypinpointe.com/x"),
        ("HTTPS://A.MYPINPOINTE.COM/X", "https://a.mypinpointe.com/X"),
        ("mailto:help@example.org", "mailto:help@example.org"),
        ("javascript:alert(1)", "javascript:alert(1)"),
    ],
)
def test_hrefs_are_normalised_like_a_browser_does(href: str, url: str) -> None:
    html = f'<a href="{href}">Download</a>'
    assert _urls(extract(_mail(html, "text/html"))) == [url]


def test_same_page_and_empty_hrefs_are_ignored() -> None:
    html = '<a href="#top">Top</a><a href="">x</a><a name="n">y</a>'
    assert extract(_mail(html, "text/html")).links == ()


def test_relative_hrefs_resolve_against_a_base() -> None:
    html = '<base href="https://a.mypinpointe.com/dl/"><a href="f.json">file</a>'
    assert _urls(extract(_mail(html, "text/html"))) == ["https://a.mypinpointe.com/dl/f.json"]


def test_area_and_outlook_only_buttons_are_links() -> None:
    html = (
        '<map><area href="https://a.mypinpointe.com/area" alt="Get"></map>'
        '<!--[if mso]><v:roundrect href="https://a.mypinpointe.com/vml">x</v:roundrect>'
        "<![endif]-->"
    )
    assert _urls(extract(_mail(html, "text/html"))) == [
        "https://a.mypinpointe.com/area",
        "https://a.mypinpointe.com/vml",
    ]


def test_angle_bracket_urls_in_html_text_survive_the_parser() -> None:
    html = "<p>Questions? <https://a.mypinpointe.com/help></p><br>"
    assert _urls(extract(_mail(html, "text/plain"))) == ["https://a.mypinpointe.com/help"]


def test_qp_soft_breaks_are_joined() -> None:
    body = "Download: https://a.mypinpointe.com/files/123456/contact-=\r\ndata.json?sig=3Dabc\r\n"
    raw = _mail(body, Content_Transfer_Encoding="quoted-printable")
    assert _urls(extract(raw)) == [
        "https://a.mypinpointe.com/files/123456/contact-data.json?sig=abc"
    ]


def test_format_flowed_without_delsp_keeps_the_space() -> None:
    body = "Your file is \r\nready: https://a.mypinpointe.com/f\r\n"
    raw = _mail(body, "text/plain; charset=utf-8; format=flowed")
    assert extract(raw).texts == ("Your file is ready: https://a.mypinpointe.com/f",)


def test_json_escaped_slashes_are_read() -> None:
    body = '{"url": "https:\\/\\/a.mypinpointe.com\\/f.json"}'
    assert _urls(extract(_mail(body, "application/json"))) == ["https://a.mypinpointe.com/f.json"]


def test_unwrapped_targets_follow_their_wrapper_with_its_text() -> None:
    notification = extract((EML_DIR / "18_tracking_redirect_twice.eml").read_bytes())
    sources = [(link.source, link.text) for link in notification.links[4:7]]
    assert sources == [("href", "Download"), ("unwrapped", "Download"), ("unwrapped", "Download")]
    assert notification.links[6].url == DL


def test_each_unwrapped_link_names_the_link_it_came_from() -> None:
    notification = extract((EML_DIR / "18_tracking_redirect_twice.eml").read_bytes())
    safe, tracker, target = notification.links[4:7]
    assert safe.via is None
    assert tracker.via == safe.url and "safelinks" in safe.url
    assert target.via == tracker.url and "link.php" in tracker.url
    assert all(link.via is None for link in notification.links if link.source != "unwrapped")


def test_one_target_in_two_wrappers_is_kept_once_per_wrapper() -> None:
    first = "https://t.mypinpointe.com/r?u=https%3A%2F%2Fa.mypinpointe.com%2Ff.json"
    second = "https://u.mypinpointe.com/c?url=https%3A%2F%2Fa.mypinpointe.com%2Ff.json"
    html = f'<a href="{first}">Download</a><a href="{second}">Download</a>'
    links = extract(_mail(html, "text/html")).links
    assert [(link.source, link.via) for link in links] == [
        ("href", None),
        ("unwrapped", first),
        ("href", None),
        ("unwrapped", second),
    ]


def test_a_text_copy_cut_at_a_line_end_gives_way_to_the_whole_html_link() -> None:
    whole = "https://a.mypinpointe.com/d/Qk7x/contact-data.json?sig=abc"
    raw = _mail(
        f"--b\r\nContent-Type: text/plain\r\n\r\n{whole[:30]}\r\n{whole[30:]}\r\n"
        f'--b\r\nContent-Type: text/html\r\n\r\n<a href="{whole}">Download</a>\r\n--b--\r\n',
        'multipart/alternative; boundary="b"',
    )
    assert _urls(extract(raw)) == [whole]


def test_two_text_urls_one_the_start_of_the_other_both_stay() -> None:
    body = "https://a.mypinpointe.com/file and https://a.mypinpointe.com/file2"
    assert len(extract(_mail(body)).links) == 2


def test_link_count_is_capped() -> None:
    body = " ".join(f"https://a.mypinpointe.com/{i}" for i in range(MAX_LINKS + 50))
    notification = extract(_mail(body))
    assert len(notification.links) == MAX_LINKS


# --- job IDs ----------------------------------------------------------------------


def test_candidates_come_from_subject_then_body_then_links_then_headers() -> None:
    raw = _mail(
        "Job ID: 222222\nhttps://a.mypinpointe.com/d?jobid=333333\n",
        Subject="Export job 111111",
        X_Pinpointe_Job_ID="444444",
    )
    assert extract(raw).candidate_job_ids == ("111111", "222222", "333333", "444444")


# --- charsets and encodings ---------------------------------------------------------


@pytest.mark.parametrize(
    ("charset", "data", "text"),
    [
        ("utf-8", "Größe ✓".encode(), "Größe ✓"),
        ("iso-8859-1", "Größe".encode("latin-1"), "Größe"),
        ("windows-1252", "“Größe”".encode("cp1252"), "“Größe”"),
        ("shift_jis", "ジョブ".encode("shift_jis"), "ジョブ"),
        ("iso-2022-jp", "ジョブ".encode("iso-2022-jp"), "ジョブ"),
        ("euc-kr", "작업".encode("euc-kr"), "작업"),
        ("ks_c_5601-1987", "작업".encode("cp949"), "작업"),
        ("gb2312", "作业".encode("gb2312"), "作业"),
        ("koi8-r", "Экспорт".encode("koi8-r"), "Экспорт"),
        ("utf-16", "Größe".encode("utf-16"), "Größe"),
        ("us-ascii", "Größe".encode(), "Größe"),  # mislabelled UTF-8
        ("iso-8859-1", "Größe".encode(), "Größe"),  # mislabelled UTF-8
        ("utf-8", "“Größe”".encode("cp1252"), "“Größe”"),  # mislabelled windows-1252
        ("x-unknown", "Größe".encode(), "Größe"),
        ("base64", "Größe".encode(), "Größe"),  # a bytes codec, not a charset
        (None, "Größe".encode("utf-16-le"), "Größe"),  # no BOM, no label
        ("utf-8", "Größe".encode("utf-16-be"), "Größe"),  # UTF-16 labelled UTF-8
        ("utf-8", b"Gr\x81\x8d\xf6\xdfe", "Gr\x81\x8döße"),  # not even cp1252: Latin-1
    ],
)
def test_charsets(charset: str | None, data: bytes, text: str) -> None:
    content_type = "text/plain" + (f'; charset="{charset}"' if charset else "")
    raw = _mail(base64.encodebytes(data), content_type, Content_Transfer_Encoding="base64")
    assert extract(raw).texts == (text,)


def test_an_html_meta_charset_is_used_when_mime_names_none() -> None:
    html = '<meta charset="windows-1252"><p>“x” 123</p>'.encode("cp1252")
    assert extract(_mail(html, "text/html")).texts == ("“x” 123",)


def test_uuencoded_text_is_read() -> None:
    import binascii

    line = binascii.b2a_uu(b"https://a.mypinpointe.com/f")
    body = b"begin 644 file.txt\r\n" + line + b"`\r\nend\r\n"
    raw = _mail(body, Content_Transfer_Encoding="x-uuencode")
    assert _urls(extract(raw)) == ["https://a.mypinpointe.com/f"]


def test_binary_attachments_are_skipped_and_named_text_attachments_read() -> None:
    boundary = "b"
    raw = _mail(
        f"--{boundary}\r\nContent-Type: application/pdf\r\n\r\nhttps://a.mypinpointe.com/pdf\r\n"
        f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
        'Content-Disposition: attachment; filename="details.txt"\r\n\r\n'
        f"https://a.mypinpointe.com/txt\r\n--{boundary}--\r\n",
        f'multipart/mixed; boundary="{boundary}"',
    )
    assert _urls(extract(raw)) == ["https://a.mypinpointe.com/txt"]


# --- limits and hostile input -------------------------------------------------------


def test_a_huge_html_body_is_capped_and_fast() -> None:
    link = '<a href="https://exports.mypinpointe.com/f/482913075.json">Download</a>'
    filler = "<div><span>x</span><a href='https://na01.mypinpointe.com/u?x=1'>y</a></div>"
    raw = _mail(link + filler * 80_000, "text/html; charset=utf-8")  # 6 MB
    started = time.monotonic()
    notification = extract(raw)
    elapsed = time.monotonic() - started
    assert elapsed < 15
    assert _urls(notification)[0] == "https://exports.mypinpointe.com/f/482913075.json"
    assert any("only the start" in d for d in notification.defects)


def test_deep_nesting_and_many_parts_are_capped() -> None:
    head = b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"
    nested = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
        for i in range(300)
    )
    notification = extract(head + nested)
    assert any("nesting deeper" in d for d in notification.defects)
    many = b"".join(b"--b0\r\nContent-Type: text/plain\r\n\r\nJob 123456\r\n" for _ in range(500))
    notification = extract(head + many + b"--b0--\r\n")
    assert any("MIME parts" in d for d in notification.defects)


@pytest.mark.parametrize("raw", [b"", b"   \r\n\r\n  "])
def test_an_empty_mail_is_an_extract_error(raw: bytes) -> None:
    with pytest.raises(ExtractError, match="empty"):
        extract(raw)


def test_not_bytes_is_an_extract_error() -> None:
    with pytest.raises(ExtractError, match="bytes"):
        extract("From: a@b.c\r\n\r\nhi")  # type: ignore[arg-type]


def test_a_headerless_blob_is_still_read_as_text() -> None:
    notification = extract(b"just some words https://a.mypinpointe.com/f")
    assert _urls(notification) == ["https://a.mypinpointe.com/f"]
    assert notification.sender is None and notification.subject == ""


def test_raw_8bit_headers_never_leak_surrogates() -> None:
    raw = b"From: J\xc3\xb6rg <j@example.org>\r\nSubject: Gr\xf6\xdfe \xe2\x9c\x93\r\n\r\nhi\r\n"
    notification = extract(raw)
    assert notification.subject.encode("utf-8")
    assert notification.sender == "j@example.org"


def test_random_and_mutated_bytes_never_raise_anything_but_extract_error() -> None:
    """Property: whatever the bytes, extract() returns or raises a plain ExtractError."""
    rng = random.Random(20250902)
    corpus = [p.read_bytes() for p in sorted(EML_DIR.glob("*.eml"))]
    splices = [
        b"--",
        b"=?utf-8?b?",
        b"\r\n\r\n",
        b"<a href=",
        b"=\r\n",
        b"%",
        b"\x00",
        b"Content-Type: multipart/mixed; boundary=x\r\n",
        b"https://",
        b"=?x?q?=FF?=",
    ]
    causes: list[BaseException | None] = []
    started = time.monotonic()
    for _ in range(1000):
        data = bytearray(rng.choice(corpus))
        operation = rng.randrange(5)
        for _ in range(rng.randint(1, 20)):
            at = rng.randrange(len(data) + 1)
            if operation == 0 and data:
                data[min(at, len(data) - 1)] = rng.randrange(256)
            elif operation == 1:
                del data[at : at + rng.randint(1, 50)]
            elif operation == 2:
                data[at:at] = rng.randbytes(rng.randint(1, 20))
            elif operation == 3:
                data[at:at] = rng.choice(splices)
            else:
                data = bytearray(rng.randbytes(rng.randint(0, 300)))
        causes.append(_extract_error_cause(bytes(data)))
    assert time.monotonic() - started < 60
    # only "empty" or "nothing readable" are expected; a wrapped internal error is a bug
    assert [c for c in causes if c is not None] == []


def _extract_error_cause(data: bytes) -> BaseException | None:
    """Run extract(); return the internal error an ExtractError wraps, if any."""
    try:
        extract(data)
    except ExtractError as exc:
        return exc.__cause__
    return None


# --- costly input (issue 9, finding 1): bounded at the root ---------------------------------


@pytest.mark.parametrize(
    "charset",
    [
        *("bz2", "zlib", "base64", "rot13", "punycode", "idna", "hex", "uu", "quopri"),
        *("unicode_escape", "raw_unicode_escape", "undefined", "bz2_codec", "x-unknown"),
    ],
)
def test_only_text_codecs_are_charsets(charset: str) -> None:
    assert text_codec(charset) is None
    raw = _mail("Größe https://a.mypinpointe.com/f", f'text/plain; charset="{charset}"')
    assert extract(raw).texts == ("Größe https://a.mypinpointe.com/f",)  # the fallback


@pytest.mark.parametrize(
    ("charset", "codec"),
    [("utf-8", "utf-8"), ("UTF-7", "utf-7"), ("ks_c_5601-1987", "cp949"), ("cp037", "cp037")],
)
def test_real_charsets_stay_charsets(charset: str, codec: str) -> None:
    assert text_codec(charset) == codec


def test_a_bz2_bomb_declared_as_a_charset_is_never_expanded() -> None:
    notification = extract(costly_mails.bz2_charset())
    assert len(notification.texts[0]) < 2000


def test_a_part_of_unclosed_tags_is_read_in_one_pass() -> None:
    found = read_markup(
        '<p>Get it: <a href="https://a.mypinpointe.com/f">file</a></p>' + "<a " * 40_000
    )
    assert found.hrefs == [("https://a.mypinpointe.com/f", "file")]
    assert found.problem is not None and "never ends" in found.problem
    assert found.text.startswith("Get it:  file <a <a")


def test_a_short_unfinished_tail_is_left_to_html_parser() -> None:
    found = read_markup('<a href="https://a.mypinpointe.com/f">file</a> and then <b')
    assert found.problem is None
    assert found.hrefs == [("https://a.mypinpointe.com/f", "file")]


def test_hrefs_in_an_unfinished_tail_still_count() -> None:
    tail = "<!--" + " pad" * 1000 + ' <a href="https://a.mypinpointe.com/late">late</a>'
    found = read_markup("<p>hi</p>" + tail)  # a comment that never ends: the rest is text
    assert found.hrefs == [("https://a.mypinpointe.com/late", "")]
    assert "late" in found.text


def test_an_unclosed_script_hides_the_rest_as_html_parser_does() -> None:
    found = read_markup("<p>seen</p><script>" + "var x = 1;" * 1000)
    assert found.text.strip() == "seen"


def test_anchor_words_come_from_the_innermost_open_links_only() -> None:
    found = read_markup("<a href='https://a.example/x'>x" * 8_000)
    assert len(found.hrefs) == 8_000
    assert all(len(words) <= 2 * MAX_OPEN_LINKS for _url, words in found.hrefs)
    assert found.hrefs[-1][1] == "x"


def test_duplicate_attributes_keep_the_first_as_a_browser_does() -> None:
    found = read_markup('<a href="https://a.example/first" href="https://b.example/second">f</a>')
    assert found.hrefs == [("https://a.example/first", "f")]


def test_a_long_run_of_spaces_after_an_angle_bracket_is_joined_in_one_pass() -> None:
    assert join_angle_urls("<" + " " * 200_000 + "x") == "<" + " " * 200_000 + "x"
    assert join_angle_urls("< URL: https://a.example/\n  f >") == "<https://a.example/f>"


def test_proofpoint_v3_is_unwrapped_with_one_scan() -> None:
    url = "https://urldefense.com/v3/__https://a.mypinpointe.com/f.json__;!!x$"
    assert unwrap_redirect(url) == ["https://a.mypinpointe.com/f.json"]
    # no "__;" after any of them: one search, then the embedded-URL rule as before
    [target] = unwrap_redirect("https://urldefense.com/v3/__https://x" + "/v3/__https://y" * 500)
    assert target.startswith("https://x/v3/__https://y")

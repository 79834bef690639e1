"""The catalogue of Pinpointe's asynchronous export methods, and the one builder of ``details``.

Pure: no I/O. For each method (docs/pinpointe-api.md §4) it says its ``requesttype`` and
``requestmethod``, the options it takes (CLI flag, TOML key, ``details`` name, type,
repeatable), the payload formats its documentation allows, and its date form. The
configuration (``[[export]] method``), the command line (``submit --method``) and the API
client (``pinpointe/``) all read it, so an option, a format or a date form is defined
once:

* :func:`parse_options` validates raw options (TOML values or CLI strings) into their
  canonical form, refusing an option or a format the method does not take;
* :func:`build_details` turns a validated :class:`~inbox_poller.models.ExportRequest`
  into the ``details`` object: optional elements that are not used are left out, never
  sent empty, and the dates are written in the method's form from the same window
  (YYYYMMDD start inclusive and end exclusive; Zulu for ``GetNewsletterStatsAsync``,
  whose ``enddate`` is "on or before", so the end is the last second of the window);
* :func:`target` names what an export is about in the archive path and the logs.

``GetTagSubscribersAsync`` has no documentation page (§4.5): its options are inferred
from ``GetSegmentSubscribersAsync`` (``tagid`` as ``segmentid``), as docs/pinpointe-api.md
says.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from inbox_poller.models import CONTACT_DATA_METHOD, STAT_ID_RE, ExportRequest

OptionKind = Literal["id", "ids", "status", "flag", "fields"]
DateForm = Literal["yyyymmdd", "zulu", "none"]

FORMATS = ("json", "csv", "xml")
"""Every payload format any method documents; ``json`` is each method's default."""
STATUSES = ("any", "active", "inactive", "bounced", "unsubscribed")
"""The subscriber ``status`` filter's values (docs/pinpointe-api.md §4.3)."""
MAX_IDS = 100
"""IDs one option may list (a sanity bound, not a documented limit)."""
MAX_IDS_IN_PATH = 4
"""IDs written into an archive file name; more are summarised as ``+more``."""

_ID_RE = STAT_ID_RE


@dataclass(frozen=True)
class Option:
    """One option of a method: how it is given and how it is sent."""

    key: str
    """The TOML key, and the key in ``ExportRequest.options``."""
    detail: str
    """The ``details`` element it is sent as."""
    kind: OptionKind
    """``id`` one ID, ``ids`` one or more (repeatable flag, TOML list), ``status`` one of
    :data:`STATUSES`, ``flag`` a boolean (sent only when true), ``fields`` ``all`` or IDs."""
    required: bool = False
    help: str = ""

    @property
    def flag(self) -> str:
        """The command-line flag: ``--custom-fields`` for ``custom_fields``."""
        return "--" + self.key.replace("_", "-")

    @property
    def repeatable(self) -> bool:
        return self.kind == "ids"


@dataclass(frozen=True)
class Method:
    """One asynchronous export method of Pinpointe."""

    name: str
    """The ``requestmethod``."""
    requesttype: str
    """The ``requesttype``, in the casing of the method's page (gap 12)."""
    options: tuple[Option, ...]
    formats: tuple[str, ...]
    """The formats its documentation allows; ``("json",)`` means ``format`` is never sent."""
    date_form: DateForm
    """How ``startdate``/``enddate`` are written; ``none`` when the method takes no dates."""
    summary: str
    inferred: bool = False
    """Its fields are inferred, not documented (``GetTagSubscribersAsync``)."""

    @property
    def target(self) -> Option:
        """The required option that names what is exported (stat, list, segment, tag)."""
        return next(option for option in self.options if option.required)

    def option(self, key: str) -> Option | None:
        return next((option for option in self.options if option.key == key), None)


_FILTERS = (
    Option("status", "status", "status", help="subscriber status: " + ", ".join(STATUSES)),
    Option(
        "include_membership",
        "include_membership",
        "flag",
        help="include each subscriber's list membership",
    ),
    Option("custom_fields", "customfields", "fields", help='"all" or custom field IDs'),
)

METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method(
            CONTACT_DATA_METHOD,
            "Newsletters",
            (Option("stat", "stat", "id", required=True, help="the campaign send's stat ID"),),
            ("json",),
            "yyyymmdd",
            "per-contact open and click events of one campaign send",
        ),
        Method(
            "GetNewsletterStatsAsync",
            "Newsletters",
            (Option("list", "listid", "id", required=True, help="a list ID"),),
            ("json", "csv", "xml"),
            "zulu",
            "statistics of the newsletters sent to one list",
        ),
        Method(
            "GetListSubscribersAsync",
            "Lists",
            (
                Option("list", "list", "ids", required=True, help="a list ID"),
                *_FILTERS,
            ),
            ("json",),
            "yyyymmdd",
            "the subscribers of one or more lists (dates: when they were added)",
        ),
        Method(
            "GetSegmentSubscribersAsync",
            "Segments",
            (
                Option("segment", "segmentid", "ids", required=True, help="a segment ID"),
                *_FILTERS,
            ),
            ("json", "csv"),
            "none",
            "the subscribers of one or more segments",
        ),
        Method(
            "GetTagSubscribersAsync",
            "Tags",
            (Option("tag", "tagid", "ids", required=True, help="a tag ID"), *_FILTERS),
            ("json", "csv"),
            "none",
            "the subscribers of one or more tags (fields inferred from the segment call)",
            inferred=True,
        ),
    )
}
"""Every method inbox-poller submits, by ``requestmethod``."""

ALL_OPTION_KEYS = tuple(dict.fromkeys(o.key for m in METHODS.values() for o in m.options))
"""Every option key of any method, in catalogue order (CLI flags, TOML keys)."""


def method(name: str) -> Method:
    """Return the method called *name*; raise ``ValueError`` listing the known ones."""
    found = METHODS.get(name)
    if found is None:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")
    return found


def _ids(key: str, value: object, *, many: bool) -> list[str]:
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError(f"{key}: expected at least one ID")
    if not many and len(items) > 1:
        raise ValueError(f"{key}: expected one ID, got {len(items)}")
    if len(items) > MAX_IDS:
        raise ValueError(f"{key}: at most {MAX_IDS} IDs")
    ids: list[str] = []
    for item in items:
        usable = isinstance(item, (str, int)) and not isinstance(item, bool)
        text = str(item).strip() if usable else ""
        if not _ID_RE.match(text):
            raise ValueError(f"{key}: {item!r} is not an ID (1 to 18 digits)")
        if text in ids:
            raise ValueError(f"{key}: ID {text} is listed twice")
        ids.append(text)
    return ids


def _fields(key: str, value: object) -> list[str]:
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]  # ["all"], as the canonical form holds it
    if isinstance(value, str) and value.strip().lower() == "all":
        return ["all"]
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    return _ids(key, value, many=True)


def _option_value(option: Option, value: object) -> object:
    if option.kind == "id":
        return _ids(option.key, value, many=False)[0]
    if option.kind == "ids":
        return _ids(option.key, value, many=True)
    if option.kind == "status":
        if not isinstance(value, str) or value.strip().lower() not in STATUSES:
            raise ValueError(f"{option.key}: expected one of {', '.join(STATUSES)}, got {value!r}")
        return value.strip().lower()
    if option.kind == "flag":
        if not isinstance(value, bool):
            raise ValueError(f"{option.key}: expected true or false, got {value!r}")
        return value
    return _fields(option.key, value)


def parse_options(
    name: str, raw: Mapping[str, object], fmt: str | None = None
) -> tuple[dict[str, object], str]:
    """Validate *raw* options and *fmt* for method *name*; return them canonical.

    The options come back with the target first, IDs as digit strings, a flag only when
    true; the format defaults to ``json``. Raises ``ValueError`` naming the option (or
    format) the method does not take, or the value that is wrong.
    """
    found = method(name)
    options: dict[str, object] = {}
    for key, value in raw.items():
        if value is None:
            continue
        option = found.option(key)
        if option is None:
            takes = ", ".join(o.key for o in found.options)
            raise ValueError(f"{name} takes no {key!r} (it takes {takes})")
        parsed = _option_value(option, value)
        if parsed is not False:
            options[key] = parsed
    missing = [o.key for o in found.options if o.required and o.key not in options]
    if missing:
        raise ValueError(f"{name} needs {missing[0]!r} ({found.target.help})")
    wanted = "json" if fmt is None else fmt.strip().lower()
    if wanted not in found.formats:
        allowed = ", ".join(found.formats)
        raise ValueError(
            f"{name} does not take format {fmt!r} (its documentation allows {allowed})"
        )
    ordered = {o.key: options[o.key] for o in found.options if o.key in options}
    return ordered, wanted


def canonical(options: Mapping[str, object]) -> str:
    """Return *options* as canonical JSON (sorted keys, no spaces), as the ledger keeps them."""
    return json.dumps(dict(options), sort_keys=True, separators=(",", ":"))


def make_request(
    name: str,
    raw: Mapping[str, object],
    fmt: str | None = None,
    startdate: str | None = None,
    enddate: str | None = None,
) -> ExportRequest:
    """Return the :class:`ExportRequest` for method *name* with *raw* options and a window.

    Raises ``ValueError`` for a wrong option or format, or dates for a method without them.
    """
    options, wanted = parse_options(name, raw, fmt)
    if method(name).date_form == "none" and (startdate is not None or enddate is not None):
        raise ValueError(f'{name} takes no dates (use no --start/--end, or window = "none")')
    stat = str(options.pop("stat")) if name == CONTACT_DATA_METHOD else ""
    return ExportRequest(
        stat=stat,
        startdate=startdate,
        enddate=enddate,
        method=name,
        options=canonical(options),
        format=wanted,
    )


def request_options(request: ExportRequest) -> dict[str, Any]:
    """Return every option of *request*, its stat included (an old row's ``{}`` works)."""
    options: dict[str, Any] = json.loads(request.options or "{}")
    if request.stat:
        options = {"stat": request.stat, **options}
    return options


def _date(value: str, form: DateForm, *, end: bool) -> str:
    day = datetime.strptime(value, "%Y%m%d").replace(tzinfo=UTC)
    if form == "yyyymmdd":
        return value
    # Zulu: the stats call's enddate is "on or before", so an exclusive day becomes the
    # last second before it
    moment = day - timedelta(seconds=1) if end else day
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def build_details(request: ExportRequest, notify_email: str) -> dict[str, Any]:
    """Return the ``details`` object of *request*; raise ``ValueError`` on bad input.

    Every scalar is a string except ``listid`` (an int on its page) and the boolean
    ``include_membership``; ID lists are arrays; ``format`` is sent only when it is not
    the default ``json``; unused optional elements are left out.
    """
    found = method(request.method)
    options, fmt = parse_options(found.name, request_options(request), request.format)
    details: dict[str, Any] = {}
    for option in found.options:
        if option.key not in options:
            continue
        value = options[option.key]
        if option.detail == "listid":
            value = int(str(value))
        details[option.detail] = value
    for name, value, end in (
        ("startdate", request.startdate, False),
        ("enddate", request.enddate, True),
    ):
        if value is None:
            continue
        if found.date_form == "none":
            raise ValueError(f"{found.name} takes no dates")
        if not re.fullmatch(r"[0-9]{8}", value):
            raise ValueError(f"{name} {value!r} is not a YYYYMMDD date")
        try:
            details[name] = _date(value, found.date_form, end=end)
        except ValueError:
            raise ValueError(f"{name} {value!r} is not a YYYYMMDD date") from None
    if fmt != "json":
        details["format"] = fmt
    details["notify"] = {"type": "email", "value": notify_email}
    return details


def target(request: ExportRequest) -> str:
    """Name what *request* exports, safe for a file name: ``stat-4711``, ``list-3+5``."""
    found = METHODS.get(request.method)
    if found is None or request.method == CONTACT_DATA_METHOD:
        return f"stat-{request.stat}"
    options = request_options(request)
    key = found.target.key
    value = options.get(key)
    ids = [str(value)] if isinstance(value, str) else [str(item) for item in value or ()]
    if not ids or not all(_ID_RE.match(item) for item in ids):
        raise ValueError(f"{request.method}: no valid {key} to name the export by")
    shown = "+".join(ids[:MAX_IDS_IN_PATH]) + ("+more" if len(ids) > MAX_IDS_IN_PATH else "")
    return f"{key}-{shown}"


def describe(request: ExportRequest) -> str:
    """One line for logs and ``exports``: the method's options and format."""
    options = request_options(request)
    parts = [
        f"{key}={','.join(value) if isinstance(value, list) else value}"
        for key, value in options.items()
    ]
    if request.format != "json":
        parts.append(f"format={request.format}")
    return " ".join(parts)

"""The simulated Pinpointe JSON API's rules: what a request must hold, how answers look.

Pure functions over decoded JSON, so the simulator's strictness reads in one place;
:class:`~inbox_poller.sandbox.simulator.server.PinpointeSimulator` applies them to its jobs.
Nothing here is used in production.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

SIM_USER_ID = "4711"
CONTACT_METHOD = "GetNewsletterContactDataSummaryAsync"
SENT_METHOD = "GetNewslettersSent"
_ENVELOPE_KEYS = ("username", "usertoken", "requesttype", "requestmethod")
_SUBMIT_PARAMETERS = {"stat", "startdate", "enddate", "notify"}
_FILTERS = {"status", "include_membership", "customfields"}
_STATUSES = {"any", "active", "inactive", "bounced", "unsubscribed"}
_INTERVAL_UNITS = {"minutes": 60, "hours": 3600, "days": 86400, "weeks": 7 * 86400}


@dataclass(frozen=True)
class SimMethod:
    """What the simulated Pinpointe expects of one async export method (its page, §4)."""

    requesttype: str
    target: str
    """The required ``details`` element naming what is exported."""
    target_kind: Literal["string", "int", "array"]
    allowed: frozenset[str]
    formats: tuple[str, ...]
    dates: Literal["yyyymmdd", "zulu", "none"]
    noun: str
    """As in Pinpointe's error for an unknown ID: "invalid argument list id"."""


METHODS: dict[str, SimMethod] = {
    CONTACT_METHOD: SimMethod(
        "newsletters",
        "stat",
        "string",
        frozenset(_SUBMIT_PARAMETERS),
        ("json",),
        "yyyymmdd",
        "stat",
    ),
    "GetNewsletterStatsAsync": SimMethod(
        "newsletters",
        "listid",
        "int",
        frozenset({"listid", "startdate", "enddate", "format", "notify"}),
        ("json", "xml", "csv"),
        "zulu",
        "list",
    ),
    "GetListSubscribersAsync": SimMethod(
        "lists",
        "list",
        "array",
        frozenset({"list", "startdate", "enddate", "notify", *_FILTERS}),
        ("json",),
        "yyyymmdd",
        "list",
    ),
    "GetSegmentSubscribersAsync": SimMethod(
        "segments",
        "segmentid",
        "array",
        frozenset({"segmentid", "format", "notify", *_FILTERS}),
        ("json", "csv"),
        "none",
        "segment",
    ),
    "GetTagSubscribersAsync": SimMethod(
        "tags",
        "tagid",
        "array",
        frozenset({"tagid", "format", "notify", *_FILTERS}),
        ("json", "csv"),
        "none",
        "tag",
    ),
}
"""Every async export method the simulator implements, by ``requestmethod``."""

SubmitShape = Literal["object", "string", "number"]

Answer = tuple[int, dict[str, Any]]
"""One API answer: the HTTP status and the JSON envelope."""


def failed(message: str) -> dict[str, Any]:
    return {"status": "FAILED", "errormessage": message}


def success(data: object) -> dict[str, Any]:
    return {"status": "SUCCESS", "data": data}


def envelope_problem(envelope: object) -> str | None:
    """Return why a decoded request envelope is malformed, or None when it is not."""
    if not isinstance(envelope, dict):
        return "Invalid JSON -- expected an object"
    for key in _ENVELOPE_KEYS:
        if not isinstance(envelope.get(key), str) or not envelope[key]:
            return f"Invalid JSON -- missing: {key}"
    if not isinstance(envelope.get("details", {}), dict):
        return "Invalid JSON -- details must be an object"
    return None


def submit_problem(details: dict[str, Any]) -> str | None:
    """Return why the ``details`` of a submit are refused, or None when they are not."""
    unknown = sorted(set(details) - _SUBMIT_PARAMETERS)
    if unknown:
        return f"Unknown parameter: {unknown[0]}"
    stat = details.get("stat")
    if not isinstance(stat, str) or not stat.isdigit():
        return "Invalid stat: expected a stat ID as a string of digits"
    for name in ("startdate", "enddate"):
        if name in details and not _valid_date(details[name]):
            return f"Invalid {name}: expected YYYYMMDD"
    if details.get("startdate", "") > details.get("enddate", "99999999"):
        return "Invalid date range: startdate is after enddate"
    notify = details.get("notify")
    if not isinstance(notify, dict) or notify.get("type") != "email":
        return "Invalid notify: type must be email"
    value = notify.get("value")
    if not isinstance(value, str) or "@" not in value:
        return "Invalid notify: value must be an e-mail address"
    return None


def method_problem(
    name: str, details: dict[str, Any], unknown_ids: frozenset[str] = frozenset()
) -> str | None:
    """Return why the ``details`` of an async export *name* are refused, or None.

    Missing required field, wrong type, unknown parameter, unknown ID (*unknown_ids*),
    a format or date form the method does not take: each with its own message.
    """
    spec = METHODS[name]
    if name == CONTACT_METHOD:
        problem = submit_problem(details)
        if problem is None and details["stat"] in unknown_ids:
            return "invalid argument stat id"
        return problem
    unknown = sorted(set(details) - spec.allowed)
    if unknown:
        return f"Unknown parameter: {unknown[0]}"
    if spec.target not in details:
        return f"Missing required field: {spec.target}"
    value = details[spec.target]
    if spec.target_kind == "int":
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            return f"Invalid {spec.target}: expected an integer"
        ids = [str(value)]
    else:
        if not isinstance(value, list) or not value:
            return f"Invalid {spec.target}: expected an array of at least one ID"
        if not all(isinstance(item, str) and item.isdigit() for item in value):
            return f"Invalid {spec.target}: expected IDs as strings of digits"
        ids = value
    if any(item in unknown_ids for item in ids):
        return f"invalid argument {spec.noun} id"
    if "status" in details and details["status"] not in _STATUSES:
        return "Invalid status: expected any, active, inactive, bounced or unsubscribed"
    if "include_membership" in details and not isinstance(details["include_membership"], bool):
        return "Invalid include_membership: expected a boolean"
    fields = details.get("customfields", ["all"])
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields) or not fields:
        return "Invalid customfields: expected an array"
    if "format" in details and details["format"] not in spec.formats:
        return f"Invalid format: expected one of {', '.join(spec.formats)}"
    for date_name in ("startdate", "enddate"):
        if date_name in details:
            valid = _valid_zulu if spec.dates == "zulu" else _valid_date
            if not valid(details[date_name]):
                form = "YYYY-MM-DDTHH:MM:SSZ" if spec.dates == "zulu" else "YYYYMMDD"
                return f"Invalid {date_name}: expected {form}"
    if details.get("startdate", "") > details.get("enddate", "\uffff"):
        return "Invalid date range: startdate is after enddate"
    return _notify_problem(details)


def _notify_problem(details: dict[str, Any]) -> str | None:
    notify = details.get("notify")
    if not isinstance(notify, dict) or notify.get("type") != "email":
        return "Invalid notify: type must be email"
    value = notify.get("value")
    if not isinstance(value, str) or "@" not in value:
        return "Invalid notify: value must be an e-mail address"
    return None


def sent_problem(details: dict[str, Any]) -> str | None:
    """Return why the ``details`` of a GetNewslettersSent are refused, or None."""
    unknown = sorted(set(details) - {"intervalcount", "intervalunits", "pagination"})
    if unknown:
        return f"Unknown parameter: {unknown[0]}"
    count = details.get("intervalcount")
    if not isinstance(count, str) or not count.isdigit():
        return "Invalid intervalcount: expected a number"
    if details.get("intervalunits") not in _INTERVAL_UNITS:
        return "Invalid intervalunits: expected minutes, hours, days or weeks"
    pagination = details.get("pagination", {})
    if not isinstance(pagination, dict) or not all(
        isinstance(pagination.get(key, "0"), str) and pagination.get(key, "0").isdigit()
        for key in ("limit", "next")
    ):
        return "Invalid pagination"
    return None


def interval_s(details: dict[str, Any]) -> int:
    """The seconds a valid GetNewslettersSent's interval spans."""
    return int(details["intervalcount"]) * _INTERVAL_UNITS[details["intervalunits"]]


def _valid_zulu(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return False
    return True


def jobids_problem(details: dict[str, Any]) -> str | None:
    """Return why the ``jobids`` of an AsyncJobStatus are refused, or None (absent is fine)."""
    wanted = details.get("jobids")
    if wanted is not None and (
        not isinstance(wanted, list) or not all(isinstance(item, str) for item in wanted)
    ):
        return "Invalid jobids: expected an array of job IDs"
    return None


def submit_data(job_id: str, created_at: datetime, shape: SubmitShape) -> object:
    """Return the ``data`` of an accepted submit in *shape* (a client must accept each)."""
    if shape == "string":
        return job_id
    if shape == "number":
        return int(job_id)
    stamp = created_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"jobid": job_id, "elapsed": "0.012", "timestamp": stamp}


def _valid_date(value: object) -> bool:
    if not isinstance(value, str) or len(value) != 8 or not value.isdigit():
        return False
    try:
        datetime.strptime(value, "%Y%m%d")
    except ValueError:
        return False
    return True

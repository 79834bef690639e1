"""The simulated Pinpointe JSON API's rules: what a request must hold, how answers look.

Pure functions over decoded JSON, so the simulator's strictness reads in one place;
:class:`~inbox_poller.sandbox.simulator.server.PinpointeSimulator` applies them to its jobs.
Nothing here is used in production.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

SIM_USER_ID = "4711"
CONTACT_METHOD = "GetNewsletterContactDataSummaryAsync"
_ENVELOPE_KEYS = ("username", "usertoken", "requesttype", "requestmethod")
_SUBMIT_PARAMETERS = {"stat", "startdate", "enddate", "notify"}

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

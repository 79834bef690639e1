"""Read job IDs, job statuses and the account out of a successful answer's ``data``.

Pinpointe does not document the shape of ``data`` (docs/pinpointe-api.md, gaps 3 and 5):
a bare value, an object, or objects one level down (``data.item[0].jobid``), with keys
spelled ``jobid``, ``jobId`` or ``job_id``. These readers accept every such shape, but
refuse an answer whose meaning is unclear (no job ID, or several) with an ``ApiError``
rather than guess. Pure: values in, values out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence

from inbox_poller.errors import ApiError
from inbox_poller.models import JOB_ID_RE, STAT_ID_RE, Send
from inbox_poller.pinpointe.envelope import excerpt
from inbox_poller.ports import JOB_NOT_FOUND

# normalised key names (lower case, "_" and "-" removed), best first
_JOB_ID_KEYS = ("jobid", "id")
_STATUS_KEYS = ("status", "jobstatus", "state")
_USER_ID_KEYS = ("userid", "id")
_USER_NAME_KEYS = ("username", "name", "useremail")


def _normalise_key(key: str) -> str:
    return key.lower().replace("_", "").replace("-", "")


def _scalar_text(value: object) -> str | None:
    """Return a job-ID-like scalar as text: strings stripped, integral numbers as digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return str(int(value))
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _keyed(obj: Mapping[str, object], wanted: str) -> list[object]:
    return [value for key, value in obj.items() if _normalise_key(str(key)) == wanted]


def _children(data: object) -> list[Mapping[str, object]]:
    """Return the objects one level below *data* (``data.item[...]``, ``data.result``...)."""
    values: list[object] = list(data.values()) if isinstance(data, dict) else []
    if isinstance(data, list):
        values = list(data)
    found: list[Mapping[str, object]] = []
    for value in values:
        if isinstance(value, dict):
            found.append(value)
        elif isinstance(value, list):
            found.extend(item for item in value if isinstance(item, dict))
    return found


def _job_id_candidates(data: object) -> list[str]:
    if (scalar := _scalar_text(data)) is not None:
        return [scalar]
    if isinstance(data, list) and len(data) == 1 and _scalar_text(data[0]) is not None:
        return [str(_scalar_text(data[0]))]
    levels: list[list[Mapping[str, object]]] = [
        [data] if isinstance(data, dict) else [],
        _children(data),
    ]
    for level in levels:
        for key in _JOB_ID_KEYS:
            found = [
                text
                for obj in level
                for value in _keyed(obj, key)
                if (text := _scalar_text(value)) is not None
            ]
            if found:
                return list(dict.fromkeys(found))
    return []


def extract_job_id(data: object) -> str:
    """Return the job ID held by a submit answer's ``data``; raise ``ApiError`` if there is none.

    Accepts a bare string or number, or an object holding it under a key such as
    ``jobid``, ``jobId``, ``job_id`` or ``id`` (case-insensitive), directly or one level
    down (``data.item[0].jobid``). The failure is never definitive: Pinpointe said
    SUCCESS, so the export may exist.
    """
    candidates = _job_id_candidates(data)
    shown = excerpt(json.dumps(data, default=str))
    if not candidates:
        problem = "without a recognisable job ID"
    elif len(candidates) > 1:
        problem = f"with several job IDs ({', '.join(candidates[:5])})"
    elif not JOB_ID_RE.match(candidates[0]):
        problem = f"with an unusable job ID {excerpt(candidates[0], 70)!r}"
    else:
        return candidates[0]
    raise ApiError(
        f"Pinpointe answered SUCCESS {problem} (data: {shown}); the export may exist, "
        "so it is not submitted again",
        definitive=False,
    )


def describe_account(data: object) -> str:
    """Return ``authenticated as NAME (user id N)`` from an ``APITest`` answer, as far as known."""
    objects: list[Mapping[str, object]] = [data] if isinstance(data, dict) else []
    objects += _children(data)
    name = _first_scalar(objects, _USER_NAME_KEYS)
    user_id = _first_scalar(objects, _USER_ID_KEYS)
    text = f"authenticated as {name}" if name else "authenticated"
    return f"{text} (user id {user_id})" if user_id else text


def _first_scalar(objects: Sequence[Mapping[str, object]], keys: Sequence[str]) -> str | None:
    for key in keys:
        for obj in objects:
            for value in _keyed(obj, key):
                if (text := _scalar_text(value)) is not None:
                    return excerpt(text, 80)
    return None


def parse_job_statuses(data: object, job_ids: Sequence[str]) -> dict[str, str]:
    """Map job ID to its lower-cased status from an ``AsyncJobStatus`` answer's ``data``.

    A requested job the answer does not mention is :data:`JOB_NOT_FOUND`. An answer with
    no recognisable job at all raises ``ApiError``, because reading it as "none of the
    jobs exists" could make a caller submit an export twice.
    """
    statuses: dict[str, str] = {}
    for job_id, status in _status_pairs(data, job_ids):
        statuses.setdefault(job_id, status.lower())
    if not statuses:
        raise ApiError(
            f"cannot read job statuses from AsyncJobStatus (data: {excerpt(json.dumps(data))})",
            definitive=False,
        )
    for job_id in job_ids:
        statuses.setdefault(job_id, JOB_NOT_FOUND)
    return statuses


def _status_pairs(data: object, job_ids: Sequence[str]) -> Iterator[tuple[str, str]]:
    items = ([data] if isinstance(data, dict) else []) + _children(data)
    for item in items:
        job_id = _first_scalar([item], _JOB_ID_KEYS)
        status = _first_scalar([item], _STATUS_KEYS)
        if job_id is not None and status is not None:
            yield job_id, status
    # a single unlabelled status object answers a question about a single job
    if len(job_ids) == 1 and isinstance(data, dict):
        status = _first_scalar([data], _STATUS_KEYS)
        if status is not None and not _first_scalar([data], _JOB_ID_KEYS):
            yield job_ids[0], status
    # or a mapping {"<job id>": "<status>" | {"status": ...}}
    if isinstance(data, dict):
        for key, value in data.items():
            if str(key) in job_ids:
                text = _scalar_text(value) or _first_scalar(_children([value]), _STATUS_KEYS)
                if text is not None:
                    yield str(key), text


def parse_sends(data: object) -> tuple[list[Send], str | None]:
    """Return the sends of one ``GetNewslettersSent`` page and its ``next`` (None: absent).

    Items are ``data.item[...]`` (or a bare list); an item without a valid ``statid`` (a
    newsletter not sent as a campaign) is skipped. ``next`` is read from
    ``data.pagination.next`` or ``data.next``.
    """
    items: object = data
    following: str | None = None
    if isinstance(data, Mapping):
        items = data.get("item", data.get("items", []))
        pagination = data.get("pagination")
        source = pagination if isinstance(pagination, Mapping) else data
        following = _scalar_text(source.get("next"))
    if isinstance(items, Mapping):
        items = [items]  # PHP's one-item list
    if not isinstance(items, list):
        raise ApiError("GetNewslettersSent answered without a list of sends")
    sends = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        statid = _scalar_text(item.get("statid"))
        if statid is None or not STAT_ID_RE.match(statid) or statid == "0":
            continue
        sends.append(
            Send(
                statid=statid,
                newsletterid=_scalar_text(item.get("newsletterid")) or "",
                name=excerpt(_scalar_text(item.get("name")) or "", 80),
                starttime=_scalar_text(item.get("starttime")) or "",
            )
        )
    return sends, following

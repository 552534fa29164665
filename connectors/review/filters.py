"""The conversation filters of the review UI and API, from query parameters to a ``TranscriptQuery``.

Every value is passed to the store as a literal; anything malformed is a 422 naming the field.
Dates are ``YYYY-MM-DD`` (a whole day in the browser's time zone, ``tz`` = minutes behind UTC as
JavaScript's ``getTimezoneOffset`` gives it) or epoch seconds.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from fastapi import HTTPException

from bots.store.base import SORT_FIELDS, TranscriptQuery
from bots.types import name_problem

PAGE_SIZES = (25, 50, 100, 200)
_NAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")
_TAG = re.compile(r"^[\w .:@-]{1,64}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TriState = Literal["", "yes", "no"]


@dataclass(frozen=True)
class Filters:
    """The filters as the form shows them (strings), and the query they make."""

    values: dict[str, str]
    query: TranscriptQuery

    @property
    def page_size(self) -> int:
        return self.query.limit


def _fail(field: str, why: str) -> HTTPException:
    return HTTPException(422, f"{field}: {why}")


def _time(field: str, raw: str, tz_minutes: int, *, end_of_day: bool) -> float:
    raw = raw.strip()
    if _DATE.match(raw):
        try:
            day = dt.datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=dt.UTC)
        except ValueError:
            raise _fail(field, f"{raw!r} is not a date (use YYYY-MM-DD)") from None
        if end_of_day:
            day += dt.timedelta(days=1)
        return day.timestamp() + tz_minutes * 60
    try:
        return float(raw)
    except ValueError:
        raise _fail(field, f"{raw!r} is not a date (use YYYY-MM-DD) or epoch seconds") from None


def _flag(field: str, raw: str) -> bool | None:
    value = raw.strip().lower()
    if value in ("", "any"):
        return None
    if value in ("yes", "true", "1"):
        return True
    if value in ("no", "false", "0"):
        return False
    raise _fail(field, f"{raw!r}: use yes, no or leave empty")


def _number(field: str, raw: str, low: float, high: float) -> float | None:
    if not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:  # (nan is not)
        raise _fail(field, f"a number between {low:g} and {high:g} expected")
    return value


def _name(field: str, raw: str, pattern: re.Pattern[str] = _NAME) -> str | None:
    value = raw.strip()
    if not value:
        return None
    if not pattern.match(value):
        raise _fail(field, f"{value!r} is not a valid {field} name")
    return value


def parse_filters(params: Mapping[str, str], *, default_limit: int = 50) -> Filters:
    """``params``: the request's query parameters (bot, channel, since, until, tz, intent,
    confidence_below, fallback, handoff, flagged, reviewed, frustrated, sentiment_below, csat_at_most, tag, q,
    customer, sort, order, page, limit)."""
    get = lambda key: str(params.get(key) or "")  # noqa: E731
    values = {k: get(k) for k in ("bot", "channel", "since", "until", "tz", "intent", "confidence_below",
                                  "fallback", "handoff", "flagged", "reviewed", "frustrated", "sentiment_below",
                                  "csat_at_most", "tag", "q", "customer", "sort", "order", "page", "limit")}
    try:
        tz = int(values["tz"] or 0)
    except ValueError:
        raise _fail("tz", "minutes offset from UTC expected") from None
    if not -24 * 60 <= tz <= 24 * 60:
        raise _fail("tz", "minutes offset from UTC expected")
    since = _time("since", values["since"], tz, end_of_day=False) if values["since"].strip() else None
    until = _time("until", values["until"], tz, end_of_day=True) if values["until"].strip() else None
    confidence = _number("confidence_below", values["confidence_below"], 0.0, 1.0)
    sentiment = _number("sentiment_below", values["sentiment_below"], -1.0, 1.0)
    csat = _number("csat_at_most", values["csat_at_most"], 1.0, 5.0)
    text = values["q"].strip() or None
    if text is not None and len(text) > 200:
        raise _fail("q", "search text is limited to 200 characters")
    customer = values["customer"].strip() or None
    problem = None if customer is None else name_problem(customer)
    if problem is not None:
        raise _fail("customer", problem.removeprefix("name: "))
    sort = values["sort"] or "last_activity"
    if sort not in SORT_FIELDS:
        raise _fail("sort", f"use one of {', '.join(SORT_FIELDS)}")
    order = values["order"] or "desc"
    if order not in ("asc", "desc"):
        raise _fail("order", "use asc or desc")
    try:
        page = int(values["page"] or 1)
        limit = int(values["limit"] or default_limit)
    except ValueError:
        raise _fail("page", "page and limit must be whole numbers") from None
    if not 1 <= page <= 100_000:
        raise _fail("page", "must be between 1 and 100000")
    if not 1 <= limit <= max(PAGE_SIZES):
        raise _fail("limit", f"must be between 1 and {max(PAGE_SIZES)}")
    query = TranscriptQuery(
        bot=_name("bot", values["bot"]), channel=_name("channel", values["channel"]), since=since, until=until,
        intent=_name("intent", values["intent"]), confidence_below=confidence,
        fallback=_flag("fallback", values["fallback"]), handoff=_flag("handoff", values["handoff"]),
        flagged=_flag("flagged", values["flagged"]), reviewed=_flag("reviewed", values["reviewed"]),
        frustrated=_flag("frustrated", values["frustrated"]), sentiment_below=sentiment,
        csat_at_most=None if csat is None else int(csat),
        tag=_name("tag", values["tag"], _TAG), text=text, customer=customer, sort=sort,  # type: ignore[arg-type]
        descending=order == "desc", offset=(page - 1) * limit, limit=limit,
    )
    return Filters(values, query)

"""Bulk export of a filtered conversation list, and the team lead's analytics (page and API).

* ``GET /review/api/conversations/export?format=csv|jsonl&<the list's filters>`` (agents and admins;
  audited): the conversations the list's filters select, oldest first, streamed page by page
  (``EXPORT_PAGE`` summaries in memory at a time, whatever the count). CSV cells a spreadsheet would
  run as a formula (starting with ``= + - @``, a tab or a carriage return, numbers we write excepted)
  get a leading ``'``.
* ``GET /review/analytics`` (page) and ``GET /review/api/analytics`` (JSON): containment, hand-off and
  fallback rates, hand-off to first agent reply p50/p90, busiest intents, per day, bot and channel
  (bots/store/analytics.py), of the conversations started between ``since`` and ``until`` (default: the
  last ``DEFAULT_DAYS`` days), for a ``bot`` and ``channel`` or all. The page draws them as inline SVG.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from bots.botspec import KNOWN_CHANNELS
from bots.store.analytics import DAY_S, Analytics, AnalyticsQuery
from bots.store.base import ConversationSummary, TranscriptQuery
from connectors.review.auth import Auth, Principal
from connectors.review.filters import parse_filters
from connectors.review.pages import render

if TYPE_CHECKING:
    from bots.runtime import Runtime

EXPORT_PAGE = 500
DEFAULT_DAYS = 30
CSV_COLUMNS = ("bot", "conversation_id", "channel", "user_id", "started_at", "last_activity", "last_intent",
               "min_confidence", "turns", "fallback", "handoff", "flagged", "reviewed", "tags", "waiting_since",
               "min_sentiment", "frustration", "assignee", "customer_name", "csat")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")


def csv_cell(value: Any) -> str:
    """A cell as text; one a spreadsheet would run as a formula gets a leading ``'``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        value = " ".join(str(v) for v in value)
    text = str(value)
    if text.startswith(_FORMULA) and not _NUMBER.match(text):
        return "'" + text
    return text


def _iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat()


def csv_row(summary: ConversationSummary) -> list[str]:
    d = summary.to_dict()
    for key in ("started_at", "last_activity", "waiting_since"):
        d[key] = _iso(d[key])
    return [csv_cell(d[c]) for c in CSV_COLUMNS]


async def export_lines(store: Any, query: TranscriptQuery, fmt: Literal["csv", "jsonl"]) -> AsyncIterator[bytes]:
    """The export's bytes, ``EXPORT_PAGE`` conversations at a time (oldest first)."""
    query = replace(query, sort="started_at", descending=False)
    if fmt == "csv":
        buffer = io.StringIO()
        csv.writer(buffer).writerow(CSV_COLUMNS)
        yield buffer.getvalue().encode()
    offset = 0
    while True:
        page = await store.search(query.with_page(offset, EXPORT_PAGE))
        if not page.items:
            return
        buffer = io.StringIO()
        if fmt == "csv":
            writer = csv.writer(buffer)
            for summary in page.items:
                writer.writerow(csv_row(summary))
        else:
            for summary in page.items:
                buffer.write(json.dumps(summary.to_dict(), ensure_ascii=False) + "\n")
        yield buffer.getvalue().encode()
        offset += len(page.items)
        if len(page.items) < EXPORT_PAGE:
            return


@dataclass(frozen=True)
class AnalyticsForm:
    values: dict[str, str]  # as the form shows them
    query: AnalyticsQuery


def analytics_form(params: Mapping[str, str], now: float | None = None) -> AnalyticsForm:
    """bot, channel, since, until (``YYYY-MM-DD``, in the browser's ``tz``), checked as the list's filters are;
    without dates, the last ``DEFAULT_DAYS`` days."""
    values = {k: str(params.get(k) or "") for k in ("bot", "channel", "since", "until", "tz")}
    if not values["since"] and not values["until"]:
        today = dt.datetime.fromtimestamp(time.time() if now is None else now, tz=dt.UTC).date()
        values["since"] = (today - dt.timedelta(days=DEFAULT_DAYS - 1)).isoformat()
        values["until"] = today.isoformat()
    query = parse_filters(values).query
    return AnalyticsForm(values, AnalyticsQuery(bot=query.bot, channel=query.channel, since=query.since,
                                                until=query.until))


def _percent(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f} %"


def _duration(s: float | None) -> str:
    if s is None:
        return "n/a"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def chart(analytics: Analytics, since: float | None, until: float | None) -> dict[str, Any]:
    """Bars per day (conversations: contained and handed off) as SVG coordinates; every day of the window
    has a slot, days without conversations an empty one."""
    days = sorted(analytics.by_day)
    if since is not None and until is not None and until - since <= 400 * DAY_S:
        first = dt.datetime.fromtimestamp(since, tz=dt.UTC).date()
        last = dt.datetime.fromtimestamp(until - 1, tz=dt.UTC).date()
        days = [(first + dt.timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    width, height, top = 720, 180, 10
    peak = max([f.conversations for f in analytics.by_day.values()] or [0]) or 1
    slot = width / max(1, len(days))
    bars = []
    for i, day in enumerate(days):
        f = analytics.by_day.get(day)
        n, human = (f.conversations, f.handed_off) if f else (0, 0)
        h_all = (height - top) * n / peak
        h_human = (height - top) * human / peak
        bars.append({"day": day, "x": round(i * slot + slot * 0.1, 1), "w": round(max(1.0, slot * 0.8), 1),
                     "y": round(height - h_all, 1), "h": round(h_all, 1), "hy": round(height - h_human, 1),
                     "hh": round(h_human, 1), "n": n, "human": human,
                     "containment": _percent(f.containment_rate if f else None)})
    return {"width": width, "height": height, "peak": peak, "bars": bars,
            "first": days[0] if days else "", "last": days[-1] if days else ""}


def exports_router(runtime: Runtime, auth: Auth) -> APIRouter:
    router = APIRouter(tags=["review"])
    viewer = Depends(auth.require("viewer"))
    viewer_page = Depends(auth.require("viewer", page=True))
    agent = Depends(auth.require("agent"))
    store = runtime.store

    @router.get("/review/api/conversations/export", responses={401: {}, 403: {}, 404: {}, 422: {}})
    async def export(request: Request, format: Literal["csv", "jsonl"] = "csv",
                     principal: Principal = agent) -> StreamingResponse:
        filters = parse_filters(request.query_params)
        if filters.query.bot is not None:
            runtime.bot(filters.query.bot)
        shown = {k: v for k, v in filters.values.items() if v and k not in ("page", "limit", "sort", "order")}
        await auth.audit(request, principal, "export_conversations", bot=filters.query.bot or "",
                         detail=f"{format} {json.dumps(shown, ensure_ascii=False)}")
        stamp = dt.datetime.now(tz=dt.UTC).strftime("%Y%m%d-%H%M%S")
        name = f"conversations-{filters.query.bot or 'all'}-{stamp}.{format}"
        media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
        return StreamingResponse(export_lines(store, filters.query, format), media_type=media, headers={
            "Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff"})

    async def _analytics(request: Request) -> tuple[AnalyticsForm, Analytics]:
        form = analytics_form(request.query_params)
        if form.query.bot is not None:
            runtime.bot(form.query.bot)
        return form, await store.analytics(form.query)

    @router.get("/review/api/analytics", responses={401: {}, 404: {}, 422: {}})
    async def analytics_api(request: Request, principal: Principal = viewer) -> dict[str, Any]:
        form, analytics = await _analytics(request)
        return {"since": form.query.since, "until": form.query.until, "bot": form.query.bot,
                "channel": form.query.channel, **analytics.to_dict()}

    @router.get("/review/analytics")
    async def analytics_page(request: Request, principal: Principal = viewer_page) -> Response:
        form, analytics = await _analytics(request)
        return render("analytics.html", principal=principal, filters=form.values, a=analytics,
                      total=analytics.to_dict()["total"], chart=chart(analytics, form.query.since, form.query.until),
                      bots=sorted(runtime.bots), channels=KNOWN_CHANNELS, percent=_percent, duration=_duration,
                      nav="analytics")

    return router

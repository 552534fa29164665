"""The admin API: transcripts and conversation search for scripts and the review UI.

Every call needs ``Authorization: Bearer <SWITCHBOARD_ADMIN_TOKEN>``; without a configured
token the admin API is off (403 saying how to turn it on).
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from bots.store.base import SortField, TranscriptQuery, load_existing

if TYPE_CHECKING:
    from bots.runtime import Runtime


def admin_router(runtime: Runtime) -> APIRouter:
    def require_admin(request: Request) -> None:
        expected = runtime.settings.admin_token
        if not expected:
            raise HTTPException(403, "the admin API is off: set SWITCHBOARD_ADMIN_TOKEN to enable it")
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(401, "missing admin token: send 'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(token.encode(), expected.encode()):
            raise HTTPException(401, "wrong admin token", headers={"WWW-Authenticate": "Bearer"})

    router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)])

    @router.get("/bots/{bot}/conversations/{conversation_id}", responses={401: {}, 403: {}, 404: {}})
    async def transcript(bot: str, conversation_id: str, request: Request) -> dict[str, Any]:
        runtime.bot(bot)
        conversation = await load_existing(runtime.store, bot, conversation_id)
        review = getattr(request.app.state, "review", None)
        if review is not None:  # every transcript read is audited, whoever reads it
            await review.auth.audit(request, "admin-token", "export_transcript", bot=bot,
                                    conversation_id=conversation_id)
        return conversation.to_dict()

    @router.get("/bots/{bot}/conversations", responses={401: {}, 403: {}, 404: {}})
    async def search(
        bot: str,
        channel: Annotated[str | None, Query(max_length=32)] = None,
        intent: Annotated[str | None, Query(max_length=64)] = None,
        since: float | None = None,
        until: float | None = None,
        confidence_below: Annotated[float | None, Query(ge=0, le=1)] = None,
        fallback: bool | None = None,
        handoff: bool | None = None,
        flagged: bool | None = None,
        reviewed: bool | None = None,
        frustrated: bool | None = None,
        sentiment_below: Annotated[float | None, Query(ge=-1, le=1)] = None,
        tag: Annotated[str | None, Query(max_length=64)] = None,
        text: Annotated[str | None, Query(max_length=200)] = None,
        sort: SortField = "last_activity",
        descending: bool = True,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> dict[str, Any]:
        runtime.bot(bot)
        page = await runtime.store.search(TranscriptQuery(
            bot=bot, channel=channel, intent=intent, since=since, until=until, confidence_below=confidence_below,
            fallback=fallback, handoff=handoff, flagged=flagged, reviewed=reviewed, frustrated=frustrated,
            sentiment_below=sentiment_below, tag=tag, text=text,
            sort=sort, descending=descending, offset=offset, limit=limit,
        ))
        return {"total": page.total, "offset": page.offset, "limit": page.limit,
                "items": [s.to_dict() for s in page.items]}

    return router

"""Live takeover routes: the queue of handed-off conversations, take over, agent replies delivered
in the customer's own channel, hand back, and a server-sent event stream of new turns.

The routes only translate HTTP: what taking over, replying and handing back do, and whether a
conversation is paused, is bots.handoff's (its errors become status codes in connectors/app.py).
The event stream reads the store, so it shows messages from any channel and any replica.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import ConfigDict, Field

from bots import handoff
from bots.errors import NotDelivered
from bots.store.base import load_existing
from connectors.bodies import TextBody
from connectors.review.auth import Auth, Principal

if TYPE_CHECKING:
    from bots.runtime import Runtime
    from connectors.base import Channel

POLL_S = 1.0
_HEARTBEAT_S = 15.0
_RECENT_TURNS = 50


class ReplyBody(TextBody):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=handoff.MAX_REPLY_CHARS)


def live_router(runtime: Runtime, auth: Auth, channels: Mapping[str, Channel]) -> APIRouter:
    router = APIRouter(prefix="/review/api", tags=["review"])
    viewer = Depends(auth.require("viewer"))
    agent = Depends(auth.require("agent"))
    store = runtime.store

    @router.get("/queue", responses={401: {}, 403: {}})
    async def queue(
        bot: Annotated[str | None, Query(max_length=64)] = None,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        principal: Principal = agent,
    ) -> dict[str, Any]:
        if bot:
            runtime.bot(bot)
        page = await handoff.queue(store, bot or None, offset=offset, limit=limit)
        return {"total": page.total, "offset": offset, "limit": limit, "items": [s.to_dict() for s in page.items]}

    @router.post("/bots/{bot}/conversations/{conversation_id}/takeover", responses={401: {}, 403: {}, 404: {}})
    async def takeover(request: Request, bot: str, conversation_id: str,
                       principal: Principal = agent) -> dict[str, Any]:
        runtime.bot(bot)
        await handoff.take_over(store, bot, conversation_id, principal.user.username)
        await auth.audit(request, principal, "takeover", bot=bot, conversation_id=conversation_id)
        return {"paused": True}

    @router.post("/bots/{bot}/conversations/{conversation_id}/reply",
                 responses={401: {}, 403: {}, 404: {}, 422: {}, 502: {}})
    async def reply(request: Request, bot: str, conversation_id: str, body: ReplyBody,
                    principal: Principal = agent) -> dict[str, Any]:
        runtime.bot(bot)
        try:
            turn = await handoff.reply(store, bot, conversation_id, principal.user.username, body.text, channels)
        except NotDelivered:  # stored all the same: audited like a delivered reply
            await auth.audit(request, principal, "reply", bot=bot, conversation_id=conversation_id)
            raise
        await auth.audit(request, principal, "reply", bot=bot, conversation_id=conversation_id)
        return {"turn": turn.to_dict(), "delivered": True}

    @router.post("/bots/{bot}/conversations/{conversation_id}/handback", responses={401: {}, 403: {}, 404: {}})
    async def handback(request: Request, bot: str, conversation_id: str,
                       principal: Principal = agent) -> dict[str, Any]:
        runtime.bot(bot)
        await handoff.hand_back(store, bot, conversation_id, principal.user.username)
        await auth.audit(request, principal, "handback", bot=bot, conversation_id=conversation_id)
        return {"paused": False}

    @router.get("/bots/{bot}/conversations/{conversation_id}/events", responses={401: {}, 404: {}})
    async def events(request: Request, bot: str, conversation_id: str,
                     after: Annotated[int, Query(ge=0)] = 0, principal: Principal = viewer) -> StreamingResponse:
        """``text/event-stream``: a ``turn`` event per new or completed turn, ``summary`` on changes."""
        runtime.bot(bot)
        await load_existing(store, bot, conversation_id)

        async def stream() -> AsyncIterator[str]:
            last_seq, pending, last_summary = after, set[int](), ""
            beat = time.monotonic()
            yield "retry: 2000\n\n"
            while not runtime.draining and not await request.is_disconnected():
                conversation = await store.load(bot, conversation_id, last_n=_RECENT_TURNS)
                if conversation is None:
                    yield "event: gone\ndata: {}\n\n"
                    return
                for turn in conversation.turns:
                    if turn.seq > last_seq or (turn.seq in pending and turn.status == "done"):
                        yield f"event: turn\ndata: {json.dumps(turn.to_dict())}\n\n"
                        pending.discard(turn.seq)
                        if turn.status == "pending":
                            pending.add(turn.seq)
                        last_seq = max(last_seq, turn.seq)
                summary = json.dumps({**conversation.summary.to_dict(), "paused": handoff.is_paused(conversation)})
                if summary != last_summary:
                    yield f"event: summary\ndata: {summary}\n\n"
                    last_summary = summary
                if time.monotonic() - beat > _HEARTBEAT_S:
                    yield ": keep-alive\n\n"
                    beat = time.monotonic()
                await asyncio.sleep(POLL_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return router

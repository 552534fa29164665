"""Live takeover: the queue of handed-off conversations, agent replies delivered in the
customer's own channel, "hand back", and a server-sent event stream of new turns.

Taking over appends a ``pause`` event (the bot stays silent while paused) and sets the
conversation's ``handoff`` flag; an agent reply appends an ``agent`` event (plus the pause if
not yet paused) and goes out through the channel the conversation came from; handing back
appends ``resume`` and clears ``handoff``. The event stream reads the store, so it shows
messages from any channel and any replica.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from bots.events import AGENT, PAUSE, RESUME, Event
from bots.store.base import SummaryUpdate, TranscriptQuery
from bots.types import BotResponse, ConversationRef
from connectors.review.auth import Auth, Principal
from connectors.review.transcripts import is_paused, load_or_404

if TYPE_CHECKING:
    from bots.runtime import Runtime
    from connectors.base import Channel

log = logging.getLogger("switchboard.review")

POLL_S = 1.0
_HEARTBEAT_S = 15.0
_RECENT_TURNS = 50


class ReplyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=4000)


def live_router(runtime: Runtime, auth: Auth, channels: Mapping[str, Channel]) -> APIRouter:
    router = APIRouter(prefix="/review/api", tags=["review"])
    viewer = Depends(auth.require("viewer"))
    agent = Depends(auth.require("agent"))
    store = runtime.store

    async def deliver(bot: str, conversation_id: str, responses: list[BotResponse]) -> str | None:
        """Send into the customer's channel; the reason when it could not be delivered."""
        summary = await store.summary(bot, conversation_id)
        if summary is None:
            return "the conversation is gone"
        channel = channels.get(summary.channel)
        if channel is None:
            return f"the {summary.channel!r} channel is not served here"
        ref = ConversationRef(bot, summary.channel, conversation_id, address=dict(summary.address))
        try:
            await channel.send(ref, responses)
        except Exception as exc:  # noqa: BLE001 - any channel failure is reported to the agent
            log.warning("agent reply not delivered", extra={"bot": bot, "channel": summary.channel,
                                                             "error": str(exc)})
            return f"{summary.channel} refused the message: {exc}"
        return None

    @router.get("/queue", responses={401: {}, 403: {}})
    async def queue(
        bot: Annotated[str | None, Query(max_length=64)] = None,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        principal: Principal = agent,
    ) -> dict[str, Any]:
        if bot:
            runtime.bot(bot)
        page = await store.search(TranscriptQuery(bot=bot or None, handoff=True, sort="last_activity",
                                                  descending=True, offset=offset, limit=limit))
        return {"total": page.total, "offset": offset, "limit": limit, "items": [s.to_dict() for s in page.items]}

    @router.post("/bots/{bot}/conversations/{conversation_id}/takeover", responses={401: {}, 403: {}, 404: {}})
    async def takeover(request: Request, bot: str, conversation_id: str,
                       principal: Principal = agent) -> dict[str, Any]:
        runtime.bot(bot)
        conversation = await load_or_404(store, bot, conversation_id)
        events = [] if is_paused(conversation) else [Event(PAUSE, {"by": principal.user.username})]
        if events:
            await store.append(bot, conversation_id, events, SummaryUpdate(handoff=True))
        else:
            await store.update_summary(bot, conversation_id, SummaryUpdate(handoff=True))
        await auth.audit(request, principal, "takeover", bot=bot, conversation_id=conversation_id)
        return {"paused": True}

    @router.post("/bots/{bot}/conversations/{conversation_id}/reply", responses={401: {}, 403: {}, 404: {}, 502: {}})
    async def reply(request: Request, bot: str, conversation_id: str, body: ReplyBody,
                    principal: Principal = agent) -> dict[str, Any]:
        runtime.bot(bot)
        text = body.text.strip()
        if not text:
            raise HTTPException(422, "text is empty: type the reply to send")
        conversation = await load_or_404(store, bot, conversation_id)
        response = BotResponse(text=text, source="human", metadata={"agent": principal.user.username})
        events = [] if is_paused(conversation) else [Event(PAUSE, {"by": principal.user.username})]
        events.append(Event(AGENT, response.to_dict()))
        turn = await store.append(bot, conversation_id, events, SummaryUpdate(handoff=True))
        await auth.audit(request, principal, "reply", bot=bot, conversation_id=conversation_id)
        problem = await deliver(bot, conversation_id, [response])
        if problem is not None:
            raise HTTPException(502, f"the reply is saved in the transcript but did not reach the customer: "
                                     f"{problem}")
        return {"turn": turn.to_dict(), "delivered": True}

    @router.post("/bots/{bot}/conversations/{conversation_id}/handback", responses={401: {}, 403: {}, 404: {}})
    async def handback(request: Request, bot: str, conversation_id: str,
                       principal: Principal = agent) -> dict[str, Any]:
        runtime.bot(bot)
        conversation = await load_or_404(store, bot, conversation_id)
        if is_paused(conversation):
            await store.append(bot, conversation_id, [Event(RESUME, {"by": principal.user.username})],
                               SummaryUpdate(handoff=False))
        else:
            await store.update_summary(bot, conversation_id, SummaryUpdate(handoff=False))
        await auth.audit(request, principal, "handback", bot=bot, conversation_id=conversation_id)
        return {"paused": False}

    @router.get("/bots/{bot}/conversations/{conversation_id}/events", responses={401: {}, 404: {}})
    async def events(request: Request, bot: str, conversation_id: str,
                     after: Annotated[int, Query(ge=0)] = 0, principal: Principal = viewer) -> StreamingResponse:
        """``text/event-stream``: a ``turn`` event per new or completed turn, ``summary`` on changes."""
        runtime.bot(bot)
        await load_or_404(store, bot, conversation_id)

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
                summary = json.dumps({**conversation.summary.to_dict(), "paused": is_paused(conversation)})
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

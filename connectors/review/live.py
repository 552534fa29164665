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

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from bots import handoff
from bots.errors import NotDelivered
from bots.events import USER
from bots.store.base import ConversationStore, ConversationSummary, load_existing
from connectors.bodies import TextBody
from connectors.review.auth import Auth, Principal

if TYPE_CHECKING:
    from bots.runtime import Runtime
    from connectors.base import Channel

POLL_S = 1.0
TYPING_S = 6.0  # an agent's typing shows this long after their last keystroke (the page reports every 3 s)
_HEARTBEAT_S = 15.0
_RECENT_TURNS = 50


class ReplyBody(TextBody):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=handoff.MAX_REPLY_CHARS)


class ReassignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str = Field(min_length=1, max_length=64)  # a staff user who may answer customers (agent or admin)
    expected: str | None = Field(default=None, max_length=64)  # who the admin saw having it (None: nobody)


_PREVIEW_CHARS = 140
_PREVIEW_TURNS = 10


def customer_label(summary: ConversationSummary) -> str:
    """Who the customer is, for agents: their display name as stored, else ``Customer <user id>`` (the store
    pseudonymises both for a bot with ``pii:``)."""
    if summary.customer_name:
        return summary.customer_name
    return f"Customer {summary.user_id[:12]}" if summary.user_id else "Customer"


async def queue_item(store: ConversationStore, summary: ConversationSummary) -> dict[str, Any]:
    """A queue row: the summary, the customer (``customer_label``), and the preview of their last message (as
    the store keeps it: redacted for a bot with ``pii:``)."""
    recent = await store.load(summary.bot, summary.conversation_id, last_n=_PREVIEW_TURNS)
    texts = [str(e.data.get("text") or "") for t in (recent.turns if recent else ()) for e in t.events
             if e.kind == USER and e.data.get("text") and not e.data.get("opened") and not e.data.get("reminder")]
    preview = texts[-1] if texts else ""
    if len(preview) > _PREVIEW_CHARS:
        preview = preview[:_PREVIEW_CHARS - 1] + "…"
    return {**summary.to_dict(), "customer": customer_label(summary), "preview": preview}


def live_router(runtime: Runtime, auth: Auth, channels: Mapping[str, Channel]) -> APIRouter:
    router = APIRouter(prefix="/review/api", tags=["review"])
    viewer = Depends(auth.require("viewer"))
    agent = Depends(auth.require("agent"))
    admin = Depends(auth.require("admin"))
    store = runtime.store

    @router.get("/queue", responses={401: {}, 403: {}})
    async def queue(
        bot: Annotated[str | None, Query(max_length=64)] = None,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        principal: Principal = agent,
    ) -> dict[str, Any]:
        """The customers waiting for an agent (longest wait first), then the conversations agents have;
        ``waiting``: how many wait, ``unassigned``: how many of those nobody claimed yet."""
        if bot:
            runtime.bot(bot)
        found = await handoff.queue(store, bot or None, offset=offset, limit=limit)
        items = [await queue_item(store, s) for s in (*found.waiting.items, *found.active.items)]
        return {"total": found.waiting.total + found.active.total, "waiting": found.waiting.total,
                "unassigned": sum(1 for s in found.waiting.items if s.assignee is None),
                "offset": offset, "limit": limit, "now": time.time(), "items": items}

    @router.post("/bots/{bot}/conversations/{conversation_id}/claim", responses={401: {}, 403: {}, 404: {}, 409: {}})
    async def claim(request: Request, bot: str, conversation_id: str, principal: Principal = agent) -> dict[str, Any]:
        """"Assign to me" (409 naming who has it when another agent claimed it first)."""
        runtime.bot(bot)
        summary = await handoff.claim(store, bot, conversation_id, principal.user.username)
        await auth.audit(request, principal, "assign", bot=bot, conversation_id=conversation_id,
                         detail=f"-> {principal.user.username}")
        return summary.to_dict()

    @router.post("/bots/{bot}/conversations/{conversation_id}/unassign",
                 responses={401: {}, 403: {}, 404: {}, 409: {}})
    async def unassign(request: Request, bot: str, conversation_id: str,
                       principal: Principal = agent) -> dict[str, Any]:
        """The assignee gives the conversation up; an admin may take anyone's off."""
        runtime.bot(bot)
        summary = await handoff.unassign(store, bot, conversation_id, principal.user.username,
                                         admin=principal.role == "admin")
        await auth.audit(request, principal, "unassign", bot=bot, conversation_id=conversation_id)
        return summary.to_dict()

    @router.post("/bots/{bot}/conversations/{conversation_id}/reassign",
                 responses={401: {}, 403: {}, 404: {}, 409: {}, 422: {}})
    async def reassign(request: Request, bot: str, conversation_id: str, body: ReassignBody,
                       principal: Principal = admin) -> dict[str, Any]:
        """(Admins.) Give the conversation to another agent, if ``expected`` still has it."""
        runtime.bot(bot)
        user = await auth.accounts.store.get_user(body.to)
        if user is None or user.role not in ("agent", "admin"):
            raise HTTPException(422, f"to: {body.to[:64]!r} is not an agent or admin of the review UI")
        summary = await handoff.reassign(store, bot, conversation_id, user.username, expected=body.expected,
                                         by=principal.user.username)
        await auth.audit(request, principal, "reassign", bot=bot, conversation_id=conversation_id,
                         detail=f"{body.expected or 'nobody'} -> {user.username}")
        return summary.to_dict()

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

    @router.post("/bots/{bot}/conversations/{conversation_id}/typing", status_code=204,
                 responses={401: {}, 403: {}, 404: {}})
    async def typing(bot: str, conversation_id: str, principal: Principal = agent) -> None:
        """The agent is typing a reply: the customer's web chat shows it (any replica's, within its poll)."""
        runtime.bot(bot)
        await store.agent_typing(bot, conversation_id, time.time() + TYPING_S)

    @router.post("/bots/{bot}/conversations/{conversation_id}/handback", responses={401: {}, 403: {}, 404: {}})
    async def handback(request: Request, bot: str, conversation_id: str,
                       principal: Principal = agent) -> dict[str, Any]:
        dialogue = runtime.bot(bot).dialogue
        await handoff.hand_back(store, bot, conversation_id, principal.user.username,
                                satisfaction=dialogue.handoff.satisfaction, channels=channels)
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

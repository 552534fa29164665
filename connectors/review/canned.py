"""Canned replies of the review UI: replies agents insert into the composer with ``/name``, team-wide
(every bot) or per bot, kept in the conversation store (``ConversationStore.canned_replies``) so every
replica serves the same ones. Admins add, change and delete them (audited); agents read them filled for one
conversation: ``{slot_name}`` becomes the conversation's current value of that slot and ``{customer_name}``
the ``customer_name`` (or ``name``) slot, else the display name the customer's channel gave (never a ``pii:``
bot's pseudonym); a variable without a value stays as written, for the agent to fill.

    GET    /review/api/canned?bot=BOT                           agent: the team-wide and BOT's replies
    PUT    /review/api/canned   {"bot": "" | BOT, "name", "text"}  admin: add or replace
    DELETE /review/api/canned?bot=&name=                        admin
    GET    /review/api/bots/BOT/conversations/ID/canned         agent: BOT's and the team's, filled
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from bots.events import RESTART, SLOT, Event
from bots.pii import PSEUDONYM_PREFIX
from bots.store.base import CannedReply, load_existing
from connectors.review.auth import Auth, Principal

if TYPE_CHECKING:
    from bots.runtime import Runtime

MAX_TEXT = 2000
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_VARIABLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}")


class CannedBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bot: str = Field(default="", max_length=64)  # "": every bot
    name: str = Field(min_length=1, max_length=40)
    text: str = Field(min_length=1, max_length=MAX_TEXT)


def slots(events: Iterable[Event]) -> dict[str, Any]:
    """The conversation's current slot values (a restart forgets them)."""
    values: dict[str, Any] = {}
    for event in events:
        if event.kind == SLOT and "name" in event.data:
            values[str(event.data["name"])] = event.data.get("value")
        elif event.kind == RESTART:
            values.clear()
    return values


def fill(text: str, values: Mapping[str, Any], customer: str | None = None) -> str:
    """``text`` with each ``{variable}`` that has a value replaced by it (``customer_name`` from the
    ``customer_name`` or ``name`` slot, else ``customer``: the name the channel gave, unless it is a pseudonym);
    the others stay as written."""
    if customer is not None and customer.startswith(PSEUDONYM_PREFIX):
        customer = None  # a ``pii:`` bot keeps only the name's pseudonym: never written to the customer

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        found = values.get(name)
        if found is None and name == "customer_name":
            found = values.get("name") if values.get("name") not in (None, "") else customer
        return match.group(0) if found is None or found == "" else str(found)

    return _VARIABLE.sub(value, text)


def canned_router(runtime: Runtime, auth: Auth) -> APIRouter:
    router = APIRouter(prefix="/review/api", tags=["review"])
    agent = Depends(auth.require("agent"))
    admin = Depends(auth.require("admin"))
    store = runtime.store

    def known(bot: str) -> str:
        if bot:
            runtime.bot(bot)  # an unknown bot: 404
        return bot

    @router.get("/canned", responses={401: {}, 403: {}, 404: {}})
    async def listing(bot: Annotated[str, Query(max_length=64)] = "", principal: Principal = agent) -> dict[str, Any]:
        replies = await store.canned_replies({"", known(bot)} if bot else {"", *runtime.bots})
        return {"items": [r.to_dict() for r in replies]}

    @router.put("/canned", responses={401: {}, 403: {}, 404: {}, 422: {}})
    async def save(request: Request, body: CannedBody, principal: Principal = admin) -> dict[str, Any]:
        if not _NAME.match(body.name):
            raise HTTPException(422, f"name: {body.name[:40]!r}: use 1-40 lower-case letters, digits, '_' or '-',"
                                     " starting with a letter or digit (agents type it after '/')")
        if not body.text.strip():
            raise HTTPException(422, "text: empty: type the reply")
        reply = CannedReply(known(body.bot), body.name, body.text.strip(), principal.user.username, time.time())
        await store.save_canned_reply(reply)
        await auth.audit(request, principal, "save_canned_reply", bot=reply.bot, detail=f"/{reply.name}")
        return reply.to_dict()

    @router.delete("/canned", responses={401: {}, 403: {}, 404: {}})
    async def delete(request: Request, name: Annotated[str, Query(min_length=1, max_length=40)],
                     bot: Annotated[str, Query(max_length=64)] = "", principal: Principal = admin) -> dict[str, Any]:
        if not await store.delete_canned_reply(bot, name):
            raise HTTPException(404, f"no canned reply /{name[:40]} for {'bot ' + repr(bot) if bot else 'every bot'}")
        await auth.audit(request, principal, "delete_canned_reply", bot=bot, detail=f"/{name}")
        return {"deleted": True}

    @router.get("/bots/{bot}/conversations/{conversation_id}/canned", responses={401: {}, 403: {}, 404: {}})
    async def filled(bot: str, conversation_id: str, principal: Principal = agent) -> dict[str, Any]:
        runtime.bot(bot)
        conversation = await load_existing(store, bot, conversation_id)
        values = slots(conversation.events)
        replies = await store.canned_replies({"", bot})
        customer = conversation.summary.customer_name
        return {"items": [{**r.to_dict(), "text": fill(r.text, values, customer)} for r in replies]}

    return router

"""The review JSON API under ``/review/api``: for the UI's scripts and, with an API token, for scripts.

Viewer: search conversations, read transcripts (audited). Agent: flag, tag, mark reviewed,
correct intents (or name a new one) and entities, mark a missed hand-off, export corrections (a download, or
the file under the data dir). Admin: read the audit log.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from bots.corrections import (
    CorrectionsDocument,
    collect_corrections,
    correct,
    corrections_document,
    export_corrections,
    export_path,
)
from bots.store.base import SummaryUpdate, load_existing
from connectors.bodies import TextBody
from connectors.review.auth import Auth, Principal
from connectors.review.filters import parse_filters
from connectors.review.transcripts import transcript_payload

if TYPE_CHECKING:
    from bots.runtime import Runtime

_TAG = re.compile(r"^[\w .:@-]{1,64}$")


class FlagBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    flagged: bool


class ReviewedBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reviewed: bool


class TagsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    add: list[str] = Field(default_factory=list, max_length=20)
    remove: list[str] = Field(default_factory=list, max_length=20)


class EntityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    entity: str = Field(min_length=1, max_length=64)
    value: str = Field(min_length=1, max_length=500)
    start: int | None = None
    end: int | None = None


class ExportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["switchboard", "rasa"] = "switchboard"


class CorrectionBody(TextBody):
    model_config = ConfigDict(extra="forbid")
    seq: int = Field(ge=1)
    intent: str = Field(min_length=1, max_length=64)
    entities: list[EntityIn] = Field(default_factory=list, max_length=20)
    new_intent: bool = False  # the intent is one the bot does not have yet (a validated name)
    handoff: bool = False  # the bot should have handed the customer to a human here


def _summary(s: Any) -> dict[str, Any]:
    return dict(s.to_dict())


def api_router(runtime: Runtime, auth: Auth) -> APIRouter:
    router = APIRouter(prefix="/review/api", tags=["review"])
    viewer = Depends(auth.require("viewer"))
    agent = Depends(auth.require("agent"))
    admin = Depends(auth.require("admin"))
    store = runtime.store

    @router.get("/me")
    async def me(principal: Principal = viewer) -> dict[str, Any]:
        return {"username": principal.user.username, "role": principal.role, "via": principal.via}

    @router.get("/conversations", responses={401: {}, 422: {}})
    async def search(request: Request, principal: Principal = viewer) -> dict[str, Any]:
        filters = parse_filters(request.query_params)
        if filters.query.bot is not None:
            runtime.bot(filters.query.bot)
        page = await store.search(filters.query)
        return {"total": page.total, "offset": page.offset, "limit": page.limit,
                "items": [_summary(s) for s in page.items]}

    @router.get("/bots/{bot}/conversations/{conversation_id}", responses={401: {}, 404: {}})
    async def transcript(request: Request, bot: str, conversation_id: str,
                         principal: Principal = viewer) -> dict[str, Any]:
        spec = runtime.bot(bot).spec
        conversation = await load_existing(store, bot, conversation_id)
        await auth.audit(request, principal, "export_transcript", bot=bot, conversation_id=conversation_id,
                         detail="json")
        return transcript_payload(conversation, spec)

    @router.get("/bots/{bot}/conversations/{conversation_id}/download", responses={401: {}, 404: {}})
    async def download(request: Request, bot: str, conversation_id: str, principal: Principal = viewer) -> Response:
        runtime.bot(bot)
        conversation = await load_existing(store, bot, conversation_id)
        await auth.audit(request, principal, "export_transcript", bot=bot, conversation_id=conversation_id,
                         detail="download")
        body = json.dumps(conversation.to_dict(), indent=2)
        safe = re.sub(r"[^A-Za-z0-9_-]", "_", conversation_id)
        return Response(body, media_type="application/json",
                        headers={"Content-Disposition": f'attachment; filename="{bot}-{safe}.json"'})

    async def _update(bot: str, conversation_id: str, update: SummaryUpdate) -> dict[str, Any]:
        runtime.bot(bot)
        return _summary(await store.update_summary(bot, conversation_id, update))

    @router.post("/bots/{bot}/conversations/{conversation_id}/flag", responses={401: {}, 403: {}, 404: {}})
    async def flag(request: Request, bot: str, conversation_id: str, body: FlagBody,
                   principal: Principal = agent) -> dict[str, Any]:
        summary = await _update(bot, conversation_id, SummaryUpdate(flagged=body.flagged))
        await auth.audit(request, principal, "flag" if body.flagged else "unflag", bot=bot,
                         conversation_id=conversation_id)
        return summary

    @router.post("/bots/{bot}/conversations/{conversation_id}/reviewed", responses={401: {}, 403: {}, 404: {}})
    async def reviewed(request: Request, bot: str, conversation_id: str, body: ReviewedBody,
                       principal: Principal = agent) -> dict[str, Any]:
        summary = await _update(bot, conversation_id, SummaryUpdate(reviewed=body.reviewed))
        await auth.audit(request, principal, "mark_reviewed" if body.reviewed else "mark_unreviewed", bot=bot,
                         conversation_id=conversation_id)
        return summary

    @router.post("/bots/{bot}/conversations/{conversation_id}/tags", responses={401: {}, 403: {}, 404: {}, 422: {}})
    async def tags(request: Request, bot: str, conversation_id: str, body: TagsBody,
                   principal: Principal = agent) -> dict[str, Any]:
        for i, tag in enumerate([*body.add, *body.remove]):
            if not _TAG.match(tag):
                raise HTTPException(422, f"tags.{i}: {tag[:70]!r}: use 1-64 letters, digits, spaces, '_.:@-'")
        summary = await _update(bot, conversation_id, SummaryUpdate(add_tags=tuple(t.strip() for t in body.add),
                                                                    remove_tags=tuple(body.remove)))
        await auth.audit(request, principal, "tag", bot=bot, conversation_id=conversation_id,
                         detail=f"+{body.add} -{body.remove}")
        return summary

    @router.post("/bots/{bot}/conversations/{conversation_id}/corrections",
                 responses={401: {}, 403: {}, 404: {}, 422: {}})
    async def correction(request: Request, bot: str, conversation_id: str, body: CorrectionBody,
                         principal: Principal = agent) -> dict[str, Any]:
        spec = runtime.bot(bot).spec
        turn = await correct(store, spec, conversation_id, body.seq, body.intent,
                             [e.model_dump() for e in body.entities], principal.user.username,
                             new_intent=body.new_intent, handoff=body.handoff)
        detail = f"turn {body.seq} -> {body.intent}" + (" (new intent)" if body.new_intent else "")
        await auth.audit(request, principal, "correct", bot=bot, conversation_id=conversation_id,
                         detail=detail + (", should have handed off" if body.handoff else ""))
        return {"turn": turn.to_dict()}

    @router.get("/bots/{bot}/export-corrections", responses={401: {}, 403: {}, 404: {}, 422: {}})
    async def export(request: Request, bot: str, principal: Principal = agent,
                     format: Literal["switchboard", "rasa"] = "switchboard") -> Response:
        """The bot's corrections as a training-data file, for download (never written into the bot
        folder, which is the served and often read-only source): ``switchboard`` (save as
        ``BOT_DIR/corrections.yml``) or ``rasa`` (a Rasa 3 nlu.yml). Counts in X-Corrections-* headers."""
        spec = runtime.bot(bot).spec
        examples = await collect_corrections(store, bot)
        document = corrections_document(spec, examples, format)
        filename = CorrectionsDocument.filename(bot, format)
        await auth.audit(request, principal, "export_corrections", bot=bot,
                         detail=f"{document.new} corrections -> download {filename} ({format})")
        return Response(document.text, media_type="application/yaml; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store",
            "X-Corrections-Examples": str(document.written), "X-Corrections-Skipped": str(len(document.skipped))})

    @router.post("/bots/{bot}/export-corrections", responses={401: {}, 403: {}, 404: {}, 422: {}})
    async def export_to_file(request: Request, bot: str, body: ExportBody, principal: Principal = agent
                             ) -> dict[str, Any]:
        """The bot's corrections merged into the file under the data dir that ``switchboard
        export-corrections`` writes (``DATA_DIR/exports/BOT/...``, 0600; never the bot folder)."""
        spec = runtime.bot(bot).spec
        examples = await collect_corrections(store, bot)
        path = export_path(runtime.settings.data_dir, bot, body.format)
        result = await asyncio.to_thread(export_corrections, spec, examples, path, body.format)
        await auth.audit(request, principal, "export_corrections", bot=bot,
                         detail=f"{result.new} corrections -> {path} ({body.format})")
        return {"path": str(path), "written": result.written, "new": result.new, "skipped": list(result.skipped)}

    @router.get("/audit", responses={401: {}, 403: {}})
    async def audit_log(
        principal: Principal = admin,
        actor: Annotated[str | None, Query(max_length=200)] = None,
        conversation_id: Annotated[str | None, Query(max_length=200)] = None,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> dict[str, Any]:
        entries, total = await auth.accounts.store.audit_log(offset=offset, limit=limit, actor=actor,
                                                             conversation_id=conversation_id)
        return {"total": total, "offset": offset, "limit": limit, "items": [e.to_dict() for e in entries]}

    return router

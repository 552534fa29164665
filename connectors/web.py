"""The web channel: a JSON webhook the chat page (and any website) posts messages to.

``POST /bots/{bot}/webhooks/web`` with ``{"conversation_id", "message_id", "text"}`` (or a
button ``payload``) answers ``{"responses": [...]}``. The client picks the message id; a
retry with the same id gets the stored answer, never a second one.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from bots.types import BotResponse, ConversationRef, UserMessage

if TYPE_CHECKING:
    from bots.runtime import Runtime

Id = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class WebMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversation_id: Id = Field(description="The browser's conversation id (letters, digits, _ and -).")
    message_id: Id = Field(description="Unique per message; a retry reuses it and gets the same answer.")
    text: str = Field(default="", description="What the customer typed.")
    payload: str | None = Field(default=None, max_length=1000, description="A button's payload, e.g. /cancel_order.")
    user_id: str = Field(default="", max_length=128)


class ButtonOut(BaseModel):
    title: str
    payload: str


class ResponseOut(BaseModel):
    text: str
    buttons: list[ButtonOut] = []
    source: str


class WebReply(BaseModel):
    conversation_id: str
    message_id: str
    responses: list[ResponseOut]


def _out(responses: Sequence[BotResponse]) -> list[ResponseOut]:
    return [
        ResponseOut(text=r.text, buttons=[ButtonOut(title=b.title, payload=b.payload) for b in r.buttons],
                    source=r.source)
        for r in responses
    ]


class WebChannel:
    name = "web"

    def router(self, runtime: Runtime) -> APIRouter:
        router = APIRouter(tags=["web"])
        max_chars = runtime.settings.max_message_chars

        @router.post("/bots/{bot}/webhooks/web", response_model=WebReply,
                     responses={400: {}, 404: {}, 413: {}, 422: {}, 503: {}})
        async def receive(bot: str, body: WebMessage) -> WebReply:
            runtime.bot(bot)  # 404 before anything else
            text = body.text.strip()
            if not text and not body.payload:
                raise HTTPException(422, "text is empty: send what the customer typed, or a button payload")
            if len(text) > max_chars:
                raise HTTPException(422, f"text is {len(text)} characters; the limit is {max_chars}")
            message = UserMessage(
                ref=ConversationRef(bot=bot, channel=self.name, conversation_id=body.conversation_id),
                message_id=body.message_id,
                text=text,
                user_id=body.user_id,
                payload=body.payload,
            )
            responses = await runtime.handle(message)
            return WebReply(conversation_id=body.conversation_id, message_id=body.message_id,
                            responses=_out(responses))

        @router.get("/bots/{bot}/chat", response_class=HTMLResponse, include_in_schema=False)
        async def chat_page(bot: str) -> HTMLResponse:
            runtime.bot(bot)
            page = resources.files("connectors").joinpath("static/chat.html").read_text(encoding="utf-8")
            # The bot name matched a served bot's name (letters, digits, _ . -): safe to embed.
            return HTMLResponse(page.replace("__BOT__", bot))

        return router

    async def send(self, ref: ConversationRef, responses: Sequence[BotResponse]) -> None:
        """Web replies outside a request are picked up by the page from the transcript."""
        return None

    async def aclose(self) -> None:
        return None

"""The web channel: the embeddable chat widget, its WebSocket, and a JSON webhook.

* ``<script src="https://HOST/widget.js" data-bot="BOT"></script>`` puts the widget on any page
  of an allowed origin (``SWITCHBOARD_WIDGET_ORIGINS``: comma-separated origins such as
  ``https://shop.example.com``, or ``*``; this server's own origin is always allowed).
* ``POST /bots/{bot}/webhooks/web/conversations``: starts a conversation (the widget calls it when
  the chat opens; optional body ``{"name"}``: the customer's display name); answers
  ``{"conversation_id", "token"}``. The token (connectors/web_tokens.py) is what reads the
  conversation back: the id alone does not. A bot with a ``welcome:`` for the web has it stored
  as the conversation's first turn (``Inbox.open``), so the history shows it, once.
* ``WS /bots/{bot}/webhooks/web/ws?conversation_id=...&after=SEQ``: the widget's connection. Its
  first frame is ``{"type": "auth", "token"}`` (else it is closed with 1008).
  Frames from the browser: ``{"type": "message", "id", "text"}`` (or ``"payload"`` for a
  button; ``"name"``: the customer's display name, the widget's ``data-name``, stored with the
  message). From the server: ``ack`` (the message is stored), ``typing``, ``partial`` (streamed
  text of an answer being generated), ``reply`` (the bot's answer, with the turn's ``seq``),
  ``agent`` (a support agent's message), ``bot`` (the bot's answer to a reminder: bots/reminders.py),
  ``error``. A resent message id is answered from the
  stored turn, never twice, so the widget resends whatever was not answered after a reconnect.
* ``GET /bots/{bot}/webhooks/web/history?conversation_id=...`` with the token in the
  ``X-Conversation-Token`` header: the conversation so far (403 without it).
* ``POST /bots/{bot}/webhooks/web`` with ``{"conversation_id", "message_id", "text"}`` (or a
  button ``payload``) answers ``{"responses": [...]}`` (scripts and simple integrations).

Each response is ``ResponseOut``: text, buttons (payload or link), image, attachment and the
custom payload. The widget renders them without ever parsing text as HTML (docs/channels.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Sequence
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from bots.dialogue.engine import OPENED
from bots.errors import Busy, ConfigError, StoreUnavailable
from bots.events import AGENT, BOT, USER
from bots.handoff import is_paused
from bots.reminders import trigger_of
from bots.runtime import UnknownBot
from bots.settings import Settings, parse_origins, variable
from bots.store.base import Conversation
from bots.types import ID_PATTERN, NAME_MAX_CHARS, BotResponse, ConversationRef, UserMessage, name_problem, valid_id
from connectors.base import Inbox
from connectors.bodies import TextBody
from connectors.limits import RateLimiter
from connectors.web_tokens import TOKEN_HEADER, ConversationTokens

log = logging.getLogger("switchboard.web")

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
ORIGINS_ENV = variable("widget_origins")
_POLL_S = 3.0  # how often an open socket checks the store for agent messages sent from another replica
_AUTH_TIMEOUT_S = 10.0  # a socket must send its auth frame within this


class OriginPolicy:
    """Which web pages may embed the widget: exact origins (``https://shop.example.com``), or ``*``.
    A page served by this server itself is always allowed."""

    def __init__(self, origins: frozenset[str], any_origin: bool) -> None:
        self.origins = origins
        self.any_origin = any_origin

    @classmethod
    def parse(cls, raw: str) -> OriginPolicy:
        origins = parse_origins(raw)
        return cls(frozenset(o for o in origins if o != "*"), "*" in origins)

    def frame_ancestors(self) -> str:
        """The CSP ``frame-ancestors`` source list: the pages that may frame the chat page."""
        return "*" if self.any_origin else " ".join(["'self'", *sorted(self.origins)])

    def allows(self, origin: str, host: str) -> bool:
        origin = origin.lower()
        if origin in (f"http://{host}".lower(), f"https://{host}".lower()):
            return True
        return self.any_origin or origin in self.origins


class WebMessage(TextBody):
    model_config = ConfigDict(extra="forbid")

    conversation_id: Id = Field(description="The browser's conversation id (letters, digits, _ and -).")
    message_id: Id = Field(description="Unique per message; a retry reuses it and gets the same answer.")
    text: str = Field(default="", description="What the customer typed.")
    payload: str | None = Field(default=None, max_length=1000, description="A button's payload, e.g. /cancel_order.")
    user_id: str = Field(default="", max_length=128)
    name: str | None = Field(default=None, max_length=NAME_MAX_CHARS,
                             description="The customer's display name (shown to support agents).")


class SocketFrame(TextBody):
    model_config = ConfigDict(extra="ignore")

    type: str
    id: Id
    text: str = ""
    payload: str | None = Field(default=None, max_length=1000)
    name: str | None = Field(default=None, max_length=NAME_MAX_CHARS)


class ConversationOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=NAME_MAX_CHARS,
                             description="The customer's display name, as the embedding page knows it (the widget's "
                                         "data-name): shown to support agents, never parsed as HTML.")


class ButtonOut(BaseModel):
    title: str
    payload: str = Field(description="Sent back as the message's payload when the button is clicked.")
    url: str | None = Field(default=None, description="A link button: opens this URL, sends nothing back.")


class ResponseOut(BaseModel):
    """One reply as the widget renders it (docs/channels.md): ``image`` (an http(s) or ``data:image/`` URL),
    ``attachment`` (a link) and ``custom`` (the bot's JSON for the embedding page: a ``switchboard:custom``
    event, never shown) are null when the reply has none."""

    text: str
    buttons: list[ButtonOut] = []
    image: str | None = None
    attachment: str | None = None
    custom: dict[str, Any] | None = None
    source: str


class ConversationStart(BaseModel):
    conversation_id: str = Field(description="A new random conversation id.")
    token: str = Field(description="Reads the conversation back: X-Conversation-Token of /history, first "
                                   "WebSocket frame {'type': 'auth', 'token'}. Keep it with the id.")


class WebReply(BaseModel):
    conversation_id: str
    message_id: str
    responses: list[ResponseOut]


def _out(responses: Sequence[BotResponse]) -> list[ResponseOut]:
    return [
        ResponseOut(text=r.text, buttons=[ButtonOut(title=b.title, payload=b.payload, url=b.url) for b in r.buttons],
                    image=r.image, attachment=r.attachment, custom=r.custom, source=r.source)
        for r in responses
    ]


def _json(responses: Sequence[BotResponse]) -> list[dict[str, Any]]:
    return [r.model_dump() for r in _out(responses)]


def history_json(conversation: Conversation | None) -> dict[str, Any]:
    """What the customer saw: their messages and the bot's and agents' replies (nothing internal), and
    whether a person has the conversation now (``paused``: bots.handoff's rule)."""
    messages: list[dict[str, Any]] = []
    last_seq = 0
    for turn in conversation.turns if conversation else ():
        last_seq = max(last_seq, turn.seq)
        for event in turn.events:
            if event.kind == USER and (trigger_of(event) is not None or event.data.get(OPENED) is True):
                continue  # a reminder firing or the chat opening: the customer sent nothing; the bot's answer shows
            if event.kind == USER:
                messages.append({"seq": turn.seq, "role": "user", "message_id": turn.message_id,
                                 "text": str(event.data.get("text", "")), "answered": turn.status == "done"})
            elif event.kind in (BOT, AGENT):
                r = BotResponse.from_dict(event.data)
                messages.append({"seq": turn.seq, "role": "agent" if event.kind == AGENT else "bot",
                                 "message_id": turn.message_id, **_out([r])[0].model_dump()})
    return {"conversation_id": conversation.summary.conversation_id if conversation else None,
            "last_seq": last_seq, "messages": messages, "paused": is_paused(conversation) if conversation else False}


class _Socket:
    """One open widget connection: a send lock and a wake-up for agent messages."""

    def __init__(self, websocket: WebSocket, after: int) -> None:
        self.websocket = websocket
        self.delivered = after  # agent messages in turns up to this seq were sent (or seen in history)
        self.wake = asyncio.Event()
        self.closed = False
        self._lock = asyncio.Lock()

    async def send(self, frame: dict[str, Any]) -> None:
        """Send a frame; a customer who left meanwhile is not an error (their answer is stored)."""
        async with self._lock:
            try:
                await self.websocket.send_json(frame)
            except Exception:  # noqa: BLE001 - any closed-socket error of the server in use
                self.closed = True


class WebChannel:
    name = "web"

    def __init__(self, inbox: Inbox, *, tokens: ConversationTokens, allowed_origins: Sequence[str] = ()) -> None:
        """``allowed_origins``: ``Settings.widget_origins`` (none: only this server's own pages)."""
        try:
            self.origins = OriginPolicy.parse(",".join(allowed_origins))
        except ValueError as exc:
            raise ConfigError(f"{ORIGINS_ENV}: {exc}") from None
        self._inbox = inbox
        self._tokens = tokens
        limits = inbox.limits
        # Messages over a socket count like webhook requests: per client address.
        self._frame_limit = RateLimiter(limits.rate_per_ip, limits.rate_per_ip_burst)
        self._conversation_limit = RateLimiter(limits.rate_per_conversation, limits.rate_per_conversation_burst)
        self._sockets: dict[tuple[str, str], set[_Socket]] = {}
        self._answering: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, inbox: Inbox, settings: Settings) -> WebChannel:
        return cls(inbox, tokens=ConversationTokens(settings.web_secret, settings.data_dir),
                   allowed_origins=settings.widget_origins)

    async def start(self) -> None:
        return None  # nothing to prepare: sockets come and go with the customers

    # -- pushing into open widgets ----------------------------------------------------
    async def send(self, ref: ConversationRef, responses: Sequence[BotResponse]) -> None:
        """Agent replies and the answers to reminders are stored first (the review UI, the runtime); this
        wakes the conversation's open widgets, which read them from the store, so a reply is delivered
        once even across replicas."""
        for socket in self._sockets.get((ref.bot, ref.conversation_id), ()):
            socket.wake.set()

    async def partial(self, ref: ConversationRef, message_id: str, text: str) -> None:
        """Streaming hook: show ``text`` (the answer so far) while an answer is being generated.
        The final ``reply`` frame replaces it."""
        for socket in list(self._sockets.get((ref.bot, ref.conversation_id), ())):
            with contextlib.suppress(Exception):
                await socket.send({"type": "partial", "id": message_id, "text": text})

    async def aclose(self) -> None:
        for sockets in list(self._sockets.values()):
            for socket in list(sockets):
                with contextlib.suppress(Exception):
                    await socket.websocket.close(code=1001)

    # -- routes -------------------------------------------------------------------------
    def router(self) -> APIRouter:
        router = APIRouter(tags=["web"])
        for path in ("/bots/{bot}/webhooks/web", "/bots/{bot}/webhooks/web/history",
                     "/bots/{bot}/webhooks/web/conversations"):
            router.add_api_route(path, self.preflight, methods=["OPTIONS"], include_in_schema=False)
        router.add_api_route("/bots/{bot}/webhooks/web", self.receive, methods=["POST"], response_model=WebReply,
                             responses={400: {}, 403: {}, 404: {}, 413: {}, 422: {}, 503: {}})
        router.add_api_route("/bots/{bot}/webhooks/web/conversations", self.start_conversation, methods=["POST"],
                             status_code=201, response_model=ConversationStart, responses={403: {}, 404: {}})
        router.add_api_route("/bots/{bot}/webhooks/web/history", self.history, methods=["GET"],
                             responses={403: {}, 404: {}, 422: {}})
        router.add_api_websocket_route("/bots/{bot}/webhooks/web/ws", self.socket)
        router.add_api_route("/widget.js", widget_js, methods=["GET"], include_in_schema=False)
        router.add_api_route("/bots/{bot}/chat", self.chat_page, methods=["GET"], response_class=HTMLResponse,
                             include_in_schema=False)
        return router

    def _cors(self, request: Request, response: Response) -> None:
        origin = request.headers.get("origin")
        if origin is None:
            return
        if not self.origins.allows(origin, request.headers.get("host", "")):
            raise HTTPException(403, f"origin {origin!r} may not use this widget: add it to {ORIGINS_ENV}")
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"

    def _served(self, bot: str) -> None:
        """404 for a bot not served here (503 while its model loads): UnknownBot, answered by the app."""
        self._inbox.channels_of(bot)

    async def preflight(self, request: Request, bot: str) -> Response:
        response = Response(status_code=204)
        self._cors(request, response)
        response.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = f"Content-Type, {TOKEN_HEADER}"
        response.headers["Access-Control-Max-Age"] = "600"
        return response

    async def receive(self, request: Request, response: Response, bot: str, body: WebMessage) -> WebReply:
        self._cors(request, response)
        self._served(bot)  # 404 before anything else
        text = body.text.strip()
        problem = _text_problem(text, body.payload, self._inbox.limits.max_message_chars) or (
            None if body.name is None else name_problem(body.name))
        if problem is not None:
            raise HTTPException(422, problem)
        wait = self._conversation_limit.allow(f"{bot}/{body.conversation_id}")
        if wait > 0:
            raise HTTPException(429, f"too many messages in this conversation; retry in {math.ceil(wait)} s",
                                headers={"Retry-After": str(math.ceil(wait))})
        message = UserMessage(
            ref=ConversationRef(bot=bot, channel=self.name, conversation_id=body.conversation_id),
            message_id=body.message_id, text=text, user_id=body.user_id, payload=body.payload, customer_name=body.name,
        )
        responses = await self._inbox.handle(message)
        return WebReply(conversation_id=body.conversation_id, message_id=body.message_id, responses=_out(responses))

    async def start_conversation(self, request: Request, response: Response, bot: str,
                                 body: ConversationOptions | None = None) -> ConversationStart:
        self._cors(request, response)
        self._served(bot)
        name = body.name if body is not None else None
        problem = None if name is None else name_problem(name)
        if problem is not None:
            raise HTTPException(422, problem)
        response.headers["Cache-Control"] = "no-store"
        conversation_id, token = self._tokens.new_conversation(bot)
        await self._inbox.open(ConversationRef(bot=bot, channel=self.name, conversation_id=conversation_id),
                               customer_name=name)
        return ConversationStart(conversation_id=conversation_id, token=token)

    async def history(self, request: Request, response: Response, bot: str,
                      conversation_id: Annotated[str, Query(pattern=ID_PATTERN)],
                      x_conversation_token: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        self._cors(request, response)
        self._served(bot)
        if not self._tokens.valid(bot, conversation_id, x_conversation_token):
            # With the CORS headers, so that the widget can read the status and start a new conversation.
            raise HTTPException(403, f"{TOKEN_HEADER} missing or wrong: send the token returned when the "
                                     "conversation started (POST .../webhooks/web/conversations)",
                                headers={k: v for k, v in response.headers.items()
                                         if k.lower() in ("access-control-allow-origin", "vary")})
        response.headers["Cache-Control"] = "no-store"
        return history_json(await self._inbox.history(bot, conversation_id))

    async def socket(self, websocket: WebSocket, bot: str, conversation_id: str = "", after: int = 0) -> None:
        origin = websocket.headers.get("origin")
        if origin is not None and not self.origins.allows(origin, websocket.headers.get("host", "")):
            await websocket.close(code=1008, reason="origin not allowed")
            return
        try:
            self._served(bot)
        except UnknownBot:
            served = False
        else:
            served = True
        if not served or not valid_id(conversation_id):
            await websocket.close(code=1008, reason="unknown bot or bad conversation_id")
            return
        limits = self._inbox.limits
        await websocket.accept()
        if not await _authenticated(websocket, self._tokens, bot, conversation_id,
                                    min(limits.ws_idle_timeout_s, _AUTH_TIMEOUT_S)):
            return
        conn = _Socket(websocket, max(0, after))
        key = (bot, conversation_id)
        self._sockets.setdefault(key, set()).add(conn)
        pump = asyncio.create_task(self._pump_agent_messages(bot, conversation_id, conn))
        try:
            while True:
                try:  # an idle socket is closed; the widget reconnects when the customer types
                    text = await asyncio.wait_for(websocket.receive_text(), timeout=limits.ws_idle_timeout_s)
                except TimeoutError:
                    await websocket.close(code=1000, reason="idle")
                    break
                if len(text) > limits.max_body_bytes:
                    await websocket.close(code=1009, reason=f"frame larger than {limits.max_body_bytes} bytes")
                    break
                try:
                    frame = SocketFrame.model_validate(json.loads(text))
                except (ValueError, ValidationError):  # not JSON, or not a frame
                    await conn.send({"type": "error", "id": None, "retry": False,
                                     "detail": "a frame is a JSON object with type 'message' and an id "
                                               "(letters, digits, _ -)"})
                    continue
                if frame.type != "message":
                    continue
                wait = max(self._frame_limit.allow(websocket.client.host if websocket.client else "unknown"),
                           self._conversation_limit.allow(f"{bot}/{conversation_id}"))
                if wait > 0:
                    await conn.send({"type": "error", "id": frame.id, "retry": True, "retry_after": wait,
                                     "detail": "too many messages; this one will be sent again shortly"})
                    continue
                # Answered even if the customer leaves meanwhile: the reply is stored for their return.
                task = asyncio.create_task(self._answer(bot, conversation_id, frame, conn))
                self._answering.add(task)
                task.add_done_callback(self._answering.discard)
        except (WebSocketDisconnect, RuntimeError, ValueError):
            pass
        finally:
            conn.closed = True
            pump.cancel()
            sockets = self._sockets.get(key)
            if sockets is not None:
                sockets.discard(conn)
                if not sockets:
                    self._sockets.pop(key, None)

    async def chat_page(self, bot: str) -> HTMLResponse:
        self._served(bot)
        page = resources.files("connectors").joinpath("static/chat.html").read_text(encoding="utf-8")
        # The bot name matched a served bot's name (letters, digits, _ . -): safe to embed.
        # Framed only by this server and the widget's allowed origins (no clickjacking elsewhere).
        csp = f"frame-ancestors {self.origins.frame_ancestors()}; object-src 'none'; base-uri 'none'"
        return HTMLResponse(page.replace("__BOT__", bot),
                            headers={"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff"})

    async def _answer(self, bot: str, conversation_id: str, frame: SocketFrame, conn: _Socket) -> None:
        text = frame.text.strip()
        problem = _text_problem(text, frame.payload, self._inbox.limits.max_message_chars) or (
            None if frame.name is None else name_problem(frame.name))
        if problem is not None:
            await conn.send({"type": "error", "id": frame.id, "retry": False, "detail": problem})
            return
        message = UserMessage(ref=ConversationRef(bot=bot, channel=self.name, conversation_id=conversation_id),
                              message_id=frame.id, text=text, payload=frame.payload, customer_name=frame.name)
        try:
            turn = await self._inbox.accept(message)
            await conn.send({"type": "ack", "id": frame.id, "seq": turn.seq})
            if turn.status != "done":
                await conn.send({"type": "typing", "on": True, "id": frame.id})
            responses = await self._inbox.process(message, turn)
        except (Busy, StoreUnavailable):
            await conn.send({"type": "error", "id": frame.id, "retry": True,
                             "detail": "the bot is busy; the message will be sent again"})
            return
        except Exception:  # a task's failure would be dropped unseen: say so, on the socket
            # Never resent by the widget (the same message would fail the same way); if it was stored
            # (acknowledged), the conversation's next message answers it.
            log.exception("web socket message failed", extra={"bot": bot})
            self._inbox.metrics.errors.labels(bot, self.name, "internal").inc()
            await conn.send({"type": "error", "id": frame.id, "retry": False,
                             "detail": "the message could not be answered; please try again later"})
            return
        await conn.send({"type": "reply", "id": frame.id, "seq": turn.seq, "responses": _json(responses)})

    async def _pump_agent_messages(self, bot: str, conversation_id: str, conn: _Socket) -> None:
        """Send agent messages stored after ``conn.delivered``: at once when woken by ``send``, else
        every few seconds (an agent on another replica)."""
        seen_activity = 0.0
        typing = False  # whether this widget was told an agent is typing
        first = True
        while True:
            if not first:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(conn.wake.wait(), timeout=_POLL_S)
            first = False
            woken = conn.wake.is_set()
            conn.wake.clear()
            try:
                if not woken:
                    summary = await self._inbox.summary(bot, conversation_id)
                    until = summary.agent_typing_until if summary is not None else None
                    now_typing = until is not None and until > time.time()
                    if now_typing != typing:  # an agent typing a reply (the review UI), on any replica
                        typing = now_typing
                        await conn.send({"type": "typing", "id": "agent", "on": typing})
                    if summary is None or summary.last_activity == seen_activity:
                        continue
                    seen_activity = summary.last_activity
                conversation = await self._inbox.history(bot, conversation_id, last_n=20)
            except StoreUnavailable:
                continue
            for turn in conversation.turns if conversation else ():
                if turn.seq <= conn.delivered:
                    continue
                reminder = trigger_of(turn.user_event) is not None
                if reminder and turn.status != "done":
                    break  # a reminder being answered: its answer is sent once stored (send wakes this)
                agent = [BotResponse.from_dict(e.data) for e in turn.events if e.kind == AGENT]
                if agent:  # agent turns are stored complete: never revisited
                    await conn.send({"type": "agent", "seq": turn.seq, "responses": _json(agent)})
                pushed = reminder or turn.user_event is None  # a reminder's answer, or a turn without a message
                answer = [BotResponse.from_dict(e.data) for e in turn.events if e.kind == BOT] if pushed else []
                if answer:  # the bot's answer to a reminder, or its question at the agent's hand back
                    # (bots/handoff.py: satisfaction): no request of the widget's waits for it
                    await conn.send({"type": "bot", "seq": turn.seq, "responses": _json(answer)})
                conn.delivered = turn.seq


async def widget_js() -> Response:
    body = resources.files("connectors").joinpath("static/widget.js").read_bytes()
    return Response(body, media_type="text/javascript; charset=utf-8",
                    headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"})


def _text_problem(text: str, payload: str | None, max_chars: int) -> str | None:
    """Why a customer's (stripped) message cannot be taken, or None."""
    if not text and not payload:
        return "text is empty: send what the customer typed, or a button payload"
    if len(text) > max_chars:
        return f"text is {len(text)} characters; the limit is {max_chars}"
    return None


async def _authenticated(websocket: WebSocket, tokens: ConversationTokens, bot: str, conversation_id: str,
                         timeout_s: float) -> bool:
    """Wait for the socket's first frame, ``{"type": "auth", "token": ...}``; close it (1008) unless the
    token is the conversation's."""
    try:
        text = await asyncio.wait_for(websocket.receive_text(), timeout=timeout_s)
        frame = json.loads(text) if len(text) <= 1024 else None
    except (TimeoutError, ValueError, KeyError, WebSocketDisconnect, RuntimeError):
        frame = None
    token = frame.get("token") if isinstance(frame, dict) and frame.get("type") == "auth" else None
    if tokens.valid(bot, conversation_id, token if isinstance(token, str) else None):
        return True
    with contextlib.suppress(Exception):
        await websocket.close(code=1008, reason="conversation token missing or wrong")
    return False

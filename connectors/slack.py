"""The Slack channel: Events API and interactivity over HTTP, through slack-bolt (async).

``POST /bots/{bot}/webhooks/slack`` takes events (JSON) and button clicks (form-encoded
``payload``). Bolt meets every request first: signing-secret verification with Slack's
5-minute timestamp window (bad or stale → 401), ``url_verification``, the workspace's
token (``authorize``: team id → bot token, ``auth.test`` once per token for the bot's ids).

A message is stored (``Runtime.accept``) before Slack gets its 200, so an acknowledged
message is never lost; if the store is down Slack gets a 503 and redelivers. The answer is
made and posted after the ack, in a task the app's shutdown waits for. Redeliveries carry
the same message ``ts``, which is the message id (the ``message`` and ``app_mention``
events of one message have different ``event_id`` s but one ``ts``): a redelivery whose turn
is done is acknowledged without a second reply, across replicas (the store decides).

Answered: direct messages, mentions (the mention is stripped), and follow-ups in a
thread the bot is already part of. Ignored: bot messages, edits, deletions and other
subtypes. Replies go into the thread when the message was in one. Buttons are Block Kit
actions; a click comes back as a message with the button's payload. No typing feedback:
Slack's Events API has no typing indicator for bots, and a reaction would cost two rate-
limited calls (and the ``reactions:write`` scope) for answers that take well under a second.

Conversation ids: ``slack:<team>:<channel>``, or ``slack:<team>:<channel>:<thread_ts>``.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from slack_bolt import BoltResponse
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bots.errors import Busy, ConfigError, StoreUnavailable
from bots.settings import Settings
from bots.types import BotResponse, ConversationRef, UserMessage
from connectors.outgoing import ReplyTasks, Retry, RetryPolicy, call_with_retry, split_text
from connectors.slack_payloads import malformed_request

if TYPE_CHECKING:
    from bots.runtime import Runtime

log = logging.getLogger("switchboard.slack")

_SECTION_CHARS = 3000  # Block Kit: a section's text
_SECTIONS_PER_MESSAGE = 10  # 30 000 characters, under chat.postMessage's 40 000 for the fallback text
_BUTTONS = 25  # Block Kit: elements of an actions block
_BUTTON_TITLE = 75
_BUTTON_VALUE = 2000
_ACTION_PREFIX = "switchboard_button_"
_ACTION = re.compile("^" + _ACTION_PREFIX)


class SlackChannel:
    name = "slack"

    def __init__(self, *, signing_secret: str, tokens: Mapping[str, str] | None = None,
                 default_token: str | None = None, api_url: str = "https://slack.com/api/",
                 policy: RetryPolicy | None = None, drain_timeout_s: float = 20.0) -> None:
        if not signing_secret:
            raise ConfigError("SWITCHBOARD_SLACK_SIGNING_SECRET: required for the Slack channel "
                              "(Slack app > Basic Information > Signing Secret)")
        if not tokens and not default_token:
            raise ConfigError("SWITCHBOARD_SLACK_BOT_TOKEN or SWITCHBOARD_SLACK_TOKENS: required for the Slack "
                              "channel (Slack app > OAuth & Permissions > Bot User OAuth Token)")
        self._tokens = dict(tokens or {})
        self._default_token = default_token
        self._policy = policy or RetryPolicy()
        self._drain_timeout_s = drain_timeout_s
        # Retries are ours (counted, bounded): the SDK's own retry handlers are switched off.
        self._client = AsyncWebClient(base_url=api_url, retry_handlers=[])
        self._auth: dict[str, AuthorizeResult] = {}
        self._replies = ReplyTasks()
        self._runtime: Runtime | None = None
        self._app = AsyncApp(signing_secret=signing_secret, client=self._client, authorize=self._authorizer(),
                             process_before_response=True, ssl_check_enabled=True)
        self._register(self._app)
        self._handler = AsyncSlackRequestHandler(self._app)
        self._verifier = SignatureVerifier(signing_secret)

    @classmethod
    def from_settings(cls, settings: Settings) -> SlackChannel | None:
        """The channel when Slack is configured (a signing secret or a token is set), else None."""
        if not (settings.slack_signing_secret or settings.slack_bot_token or settings.slack_tokens):
            return None
        return cls(signing_secret=settings.slack_signing_secret or "", tokens=settings.slack_tokens,
                   default_token=settings.slack_bot_token, api_url=settings.slack_api_url,
                   drain_timeout_s=settings.drain_timeout_s)

    # -- FastAPI ----------------------------------------------------------------------
    def router(self, runtime: Runtime) -> APIRouter:
        self._runtime = runtime
        router = APIRouter(tags=["slack"])

        @router.post("/bots/{bot}/webhooks/slack", responses={400: {}, 401: {}, 404: {}, 503: {}})
        async def receive(bot: str, request: Request) -> Response:
            """Slack Events API and interactivity (Request URL of both)."""
            body = await request.body()
            try:
                body.decode("utf-8")
            except UnicodeDecodeError:
                return JSONResponse({"detail": "malformed Slack request: the body is not UTF-8"}, status_code=400)
            if not self._verifier.is_valid_request(body, dict(request.headers)):
                runtime.metrics.rejected.labels(self.name, "signature").inc()
                return JSONResponse({"detail": "invalid Slack signature or stale timestamp"}, status_code=401)
            problem = malformed_request(body, request.headers.get("content-type", ""))
            if problem is not None:
                runtime.metrics.rejected.labels(self.name, "malformed").inc()
                return JSONResponse({"detail": f"malformed Slack request: {problem}"}, status_code=400)
            response = await self._handler.handle(request, {"switchboard_bot": bot})
            if response.status_code >= 400 and not bytes(response.body).startswith(b'{"detail"'):
                reason = bytes(response.body).decode(errors="replace") or "refused"
                return JSONResponse({"detail": reason}, status_code=response.status_code,
                                    headers={k: v for k, v in response.headers.items() if k.lower() == "retry-after"})
            return response

        return router

    async def send(self, ref: ConversationRef, responses: Sequence[BotResponse]) -> None:
        token = self._token(ref.address.get("team"))
        if token is None:
            raise ConfigError(f"no Slack token for workspace {ref.address.get('team')!r}: "
                              "add it to SWITCHBOARD_SLACK_TOKENS")
        await self._post(token, ref.address, responses)

    async def aclose(self) -> None:
        await self._replies.aclose(self._drain_timeout_s)

    # -- bolt listeners -----------------------------------------------------------------
    def _register(self, app: AsyncApp) -> None:
        # Closures, not bound methods: bolt injects arguments by the listener's parameter names.
        @app.event("message")
        async def on_message(event: dict[str, Any], context: AsyncBoltContext) -> BoltResponse | None:
            if event.get("subtype") or event.get("bot_id") or not event.get("user"):
                return None  # edits, deletions, joins, other bots (and our own replies)
            if event.get("channel_type") != "im":
                # In channels: mentions come as app_mention; other messages only in a thread we are in.
                if not event.get("thread_ts") or _mentions(event.get("text", ""), context.bot_user_id):
                    return None
                return await self._receive(context, event, str(event.get("text", "")), follow_up_only=True)
            return await self._receive(context, event, str(event.get("text", "")))

        @app.event("app_mention")
        async def on_mention(event: dict[str, Any], context: AsyncBoltContext) -> BoltResponse | None:
            if event.get("bot_id"):
                return None
            return await self._receive(context, event, _strip_mention(str(event.get("text", "")),
                                                                      context.bot_user_id))

        @app.action(_ACTION)
        async def on_button(ack: Any, body: dict[str, Any], context: AsyncBoltContext) -> BoltResponse | None:
            response = await self._receive_click(context, body)
            if response is None:
                await ack()
            return response

        @app.event(re.compile(".*"))
        async def on_other_event() -> None:
            return None  # subscribed but not used: acknowledged so that Slack does not retry

    def _authorizer(self) -> Any:
        async def authorize(team_id: str | None) -> AuthorizeResult | None:
            token = self._token(team_id)
            if token is None:
                log.error("no Slack token for this workspace", extra={"team": team_id})
                return None
            cached = self._auth.get(token)
            if cached is None:
                answer = await call_with_retry(
                    lambda: self._client.auth_test(token=token), channel=self.name, what="auth.test",
                    classify=_classify, metrics=self._metrics(), policy=self._policy)
                cached = self._auth[token] = AuthorizeResult.from_auth_test_response(
                    bot_token=token, auth_test_response=answer)
            return cached

        return authorize

    def _token(self, team_id: str | None) -> str | None:
        return self._tokens.get(team_id or "", self._default_token)

    def _metrics(self) -> Any:
        assert self._runtime is not None, "router() mounts the channel before any request"
        return self._runtime.metrics

    # -- hand-over --------------------------------------------------------------------------
    async def _receive(self, context: AsyncBoltContext, event: Mapping[str, Any], text: str,
                       *, follow_up_only: bool = False) -> BoltResponse | None:
        refused = self._check_bot(context)
        if refused is not None:
            return refused
        text = _unescape(text).strip()
        if not text or not event.get("ts") or not event.get("channel"):
            return None
        ref = _ref(str(context["switchboard_bot"]), str(context.team_id), str(event["channel"]),
                   event.get("thread_ts"))
        if follow_up_only and not await self._known(ref):
            return None
        message = UserMessage(ref=ref, message_id=str(event["ts"]), text=text[: self._max_chars()],
                              user_id=str(event.get("user", "")))
        return await self._accept(message, context)

    async def _receive_click(self, context: AsyncBoltContext, body: Mapping[str, Any]) -> BoltResponse | None:
        refused = self._check_bot(context)
        if refused is not None:
            return refused
        action = (body.get("actions") or [{}])[0]
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        if not channel or not action.get("value") or not action.get("action_ts"):
            return None
        clicked = body.get("message") or {}
        thread_ts = clicked.get("thread_ts") or (body.get("container") or {}).get("thread_ts")
        ref = _ref(str(context["switchboard_bot"]), str(context.team_id), str(channel), thread_ts)
        title = str((action.get("text") or {}).get("text") or action["value"])
        message = UserMessage(ref=ref, message_id=f"action:{action['action_ts']}", text=title,
                              user_id=str((body.get("user") or {}).get("id", "")), payload=str(action["value"]))
        return await self._accept(message, context)

    def _check_bot(self, context: AsyncBoltContext) -> BoltResponse | None:
        assert self._runtime is not None
        name = str(context["switchboard_bot"])
        bot = self._runtime.bots.get(name)
        if bot is None:
            return BoltResponse(status=404, body=f"no bot named {name!r} is served here")
        if self.name not in bot.spec.channels:
            return BoltResponse(status=404, body=f"bot {name!r} does not enable the slack channel (bot.yml channels)")
        return None

    def _max_chars(self) -> int:
        assert self._runtime is not None
        return self._runtime.settings.max_message_chars

    async def _known(self, ref: ConversationRef) -> bool:
        assert self._runtime is not None
        try:
            return await self._runtime.store.summary(ref.bot, ref.conversation_id) is not None
        except StoreUnavailable:
            return True  # let accept decide (it answers 503 while the store is down)

    async def _accept(self, message: UserMessage, context: AsyncBoltContext) -> BoltResponse | None:
        runtime = self._runtime
        assert runtime is not None
        try:
            turn = await runtime.accept(message)
        except (StoreUnavailable, Busy) as exc:
            runtime.metrics.rejected.labels(self.name, "unavailable").inc()
            log.warning("slack message refused, Slack will redeliver", extra={"error": str(exc)})
            return BoltResponse(status=503, body="retry shortly", headers={"Retry-After": "2"})
        key = (message.ref.bot, message.ref.conversation_id, message.message_id)
        if turn.status == "done" or self._replies.running(key):
            runtime.metrics.duplicates.labels(message.ref.bot, self.name).inc()
            return None  # a redelivery: answered (or being answered) already
        self._replies.start(key, self._reply(message, turn, str(context.bot_token or self._token(context.team_id))))
        return None

    async def _reply(self, message: UserMessage, turn: Any, token: str) -> None:
        assert self._runtime is not None
        try:
            responses = await self._runtime.process(message, turn)
        except Exception:
            # The turn stays in the store (pending): the conversation's next message answers it.
            log.exception("slack message stored but not answered", extra={
                "bot": message.ref.bot, "conversation_id": message.ref.conversation_id})
            return
        try:
            await self._post(token, message.ref.address, responses)
        except (SlackApiError, aiohttp.ClientError, TimeoutError):
            return  # counted and logged by call_with_retry; the answer stays in the transcript
        except Exception:
            log.exception("slack answer not posted", extra={"bot": message.ref.bot,
                                                            "conversation_id": message.ref.conversation_id})

    async def _post(self, token: str, address: Mapping[str, str], responses: Sequence[BotResponse]) -> None:
        for response in responses:
            for kwargs in _messages(response):
                thread_ts = address.get("thread_ts")
                if thread_ts:
                    kwargs["thread_ts"] = thread_ts
                await call_with_retry(
                    functools.partial(self._client.chat_postMessage, token=token, channel=address["channel"], **kwargs),
                    channel=self.name, what="chat.postMessage", classify=_classify, metrics=self._metrics(),
                    policy=self._policy)


def _ref(bot: str, team: str, channel: str, thread_ts: object) -> ConversationRef:
    address = {"team": team, "channel": channel}
    conversation_id = f"slack:{team}:{channel}"
    if isinstance(thread_ts, str) and thread_ts:
        address["thread_ts"] = thread_ts
        conversation_id += f":{thread_ts}"
    return ConversationRef(bot=bot, channel=SlackChannel.name, conversation_id=conversation_id, address=address)


def _mentions(text: str, bot_user_id: str | None) -> bool:
    return bool(bot_user_id) and f"<@{bot_user_id}>" in text


def _strip_mention(text: str, bot_user_id: str | None) -> str:
    if bot_user_id:
        return re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", " ", text).strip()
    return re.sub(r"^\s*<@[A-Z0-9]+(\|[^>]*)?>", " ", text).strip()


_LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|([^>]*))?>")


def _unescape(text: str) -> str:
    """What the customer typed: Slack sends links as <url|label> and escapes &, < and >."""
    text = _LINK.sub(lambda m: m.group(2) or m.group(1), text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _escape(text: str) -> str:
    """Slack's mrkdwn control characters (the notification text is mrkdwn)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _messages(response: BotResponse) -> list[dict[str, Any]]:
    """chat.postMessage arguments: plain-text sections (shown exactly as written), buttons last."""
    pieces = split_text(response.text, _SECTION_CHARS) if response.text.strip() else []
    groups = [pieces[i:i + _SECTIONS_PER_MESSAGE] for i in range(0, len(pieces), _SECTIONS_PER_MESSAGE)] or [[]]
    messages: list[dict[str, Any]] = []
    for n, group in enumerate(groups):
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "plain_text", "text": piece, "emoji": True}} for piece in group]
        fallback = "\n\n".join(group)
        if n == len(groups) - 1 and response.buttons:
            blocks.append({"type": "actions", "block_id": "switchboard_buttons", "elements": [
                {"type": "button", "action_id": f"{_ACTION_PREFIX}{i}", "value": b.payload[:_BUTTON_VALUE],
                 "text": {"type": "plain_text", "text": b.title[:_BUTTON_TITLE] or "?", "emoji": True}}
                for i, b in enumerate(response.buttons[:_BUTTONS])]})
            fallback = BotResponse(fallback, response.buttons).as_text()  # notifications show the options too
        messages.append({"text": _escape(fallback), "blocks": blocks})
    return messages


def _classify(exc: BaseException) -> Retry | None:
    if isinstance(exc, SlackApiError):
        status = getattr(exc.response, "status_code", None) or getattr(exc.response, "status", None)
        if status == 429:
            headers = getattr(exc.response, "headers", None) or {}
            raw = headers.get("Retry-After") or headers.get("retry-after")
            try:
                return Retry("rate_limited", float(raw) if raw is not None else None)
            except ValueError:
                return Retry("rate_limited")
        if isinstance(status, int) and status >= 500:
            return Retry("server_error")
        return None  # invalid_auth, channel_not_found, ...: another try would fail the same way
    if isinstance(exc, aiohttp.ClientError | TimeoutError):
        return Retry("network")
    return None

"""The Slack channel: Events API and interactivity over HTTP, with slack-bolt (async) as the converter.

``POST /bots/{bot}/webhooks/slack`` takes events (JSON) and button clicks (form-encoded
``payload``). The signing secret is checked once, here, with Slack's 5-minute timestamp window
(bad or stale → 401; bolt's own check is switched off), then the shape (400) and the bot (404
when it is not served or does not enable Slack). Bolt then answers ``url_verification`` and
``ssl_check`` and routes events and clicks to listeners that only convert them to a
``UserMessage``.

Nothing in the acknowledgement path calls Slack's Web API. The workspace's token comes from the
configuration (team id → bot token); the bot's identity (``auth.test``: its user and bot ids) is
resolved at start-up, in the background, retried with backoff while Slack cannot be reached, and
cached. Until it is known, the event's own ``authorizations`` name the bot user. So an outage, a
revoked token or no network never delays an acknowledgement past Slack's 3 seconds.

A message is stored (``connectors.webhook.WebhookFlow``) before Slack gets its 200, so an
acknowledged message is never lost; if the store is down Slack gets a 503 and redelivers. The
answer is made and posted after the ack (retried while Slack's API fails), in a task the app's
shutdown waits for. Redeliveries carry the same message ``ts``, which is the message id (the
``message`` and ``app_mention`` events of one message have different ``event_id`` s but one
``ts``): a redelivery whose turn is done is acknowledged without a second reply, across replicas
(the store decides).

Answered: direct messages, mentions (the mention is stripped), and follow-ups in a
thread the bot is already part of. Ignored: bot messages, edits, deletions and other
subtypes. Replies go into the thread when the message was in one. Rich replies are Block Kit
(``_messages``; docs/channels.md): text sections, the attachment as a link, an image block, and
actions blocks whose buttons carry the payload as ``value`` (a click comes back as a message with
that payload) or open a link; the notification text repeats options and links. A custom payload
with ``blocks`` is posted as given (Rasa's convention). What Slack refuses is sent as text. No typing feedback:
Slack's Events API has no typing indicator for bots, and a reaction would cost two rate-
limited calls (and the ``reactions:write`` scope) for answers that take well under a second.

Conversation ids: ``slack:<team>:<channel>``, or ``slack:<team>:<channel>:<thread_ts>``.

The customer's name (shown to agents in the review UI) is looked up once per user with ``users.info`` (the
``users:read`` scope), after the message is stored and never in the way of its answer: one call, in a task of
its own, whose failure (an outage) is logged and tried again no sooner than ``_NAME_RETRY_S``; a token that may
not read users (no ``users:read`` scope) is not asked again for ``_NAME_OFF_S`` (logged once per period). The
name found is cached (``_NAMES_KEPT`` users, ``_NAME_TTL_S``), stored on the conversation, and sent with the
user's next messages, whose own write keeps it (no extra write). In a channel, the conversation is named after
whoever wrote last.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_bolt.authorization import AuthorizeResult
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bots.errors import ConfigError, StoreUnavailable
from bots.settings import Settings
from bots.types import BotResponse, ConversationRef, UserMessage, display_name
from connectors.base import Inbox
from connectors.outgoing import Retry, RetryPolicy, call_with_retry, split_text
from connectors.rich import Plan, http_url, plan
from connectors.slack_payloads import malformed_request
from connectors.webhook import WebhookFlow

log = logging.getLogger("switchboard.slack")

_SECTION_CHARS = 3000  # Block Kit: a section's text
_SECTIONS_PER_MESSAGE = 10  # 30 000 characters, under chat.postMessage's 40 000 for the fallback text
_BUTTONS = 25  # Block Kit: elements of an actions block
_BUTTON_TITLE = 75
_BUTTON_VALUE = 2000
_ALT_TEXT = 2000  # an image block's alt_text
# chat.postMessage arguments a custom payload may give (Rasa's Slack custom payloads); never the channel.
_CUSTOM_KEYS = ("blocks", "attachments", "text", "mrkdwn", "unfurl_links", "unfurl_media", "icon_emoji", "icon_url",
                "username", "metadata", "reply_broadcast", "link_names", "parse")
_CUSTOM_MARK = "__switchboard_custom__"  # marks a custom payload's message among _messages' (never sent)
_ACTION_PREFIX = "switchboard_button_"
_ACTION = re.compile("^" + _ACTION_PREFIX)
_FOUND = "switchboard_found"  # bolt context key: where the listeners put what they converted
_IDENTITY_COOLDOWN_S = 60.0  # after auth.test failed for good (e.g. invalid_auth): next try no sooner
_NAME_TTL_S = 86_400.0  # a user's name is looked up again after this (people rename themselves)
_NAME_RETRY_S = 600.0  # after users.info failed for a user: next try no sooner
_NAME_TIMEOUT_S = 5.0
_NAME_OFF_S = 3600.0  # a token refused users.info for good (missing_scope, ...): no lookups with it for this long
_NAME_REFUSALS = ("missing_scope", "not_allowed_token_type", "invalid_auth", "account_inactive", "token_revoked",
                  "no_permission")
_NAMES_KEPT = 10_000  # users whose name (or failed lookup) is remembered


@dataclass(frozen=True)
class _Incoming:
    """What a listener converted: the message, the token that answers it, and whether it is only
    ours when the conversation is already known (a thread reply without a mention)."""

    message: UserMessage
    token: str
    follow_up_only: bool = False


class SlackChannel:
    name = "slack"

    def __init__(self, inbox: Inbox, *, signing_secret: str, tokens: Mapping[str, str] | None = None,
                 default_token: str | None = None, api_url: str = "https://slack.com/api/",
                 policy: RetryPolicy | None = None) -> None:
        if not signing_secret:
            raise ConfigError("SWITCHBOARD_SLACK_SIGNING_SECRET: required for the Slack channel "
                              "(Slack app > Basic Information > Signing Secret)")
        if not tokens and not default_token:
            raise ConfigError("SWITCHBOARD_SLACK_BOT_TOKEN or SWITCHBOARD_SLACK_TOKENS: required for the Slack "
                              "channel (Slack app > OAuth & Permissions > Bot User OAuth Token)")
        self._inbox = inbox
        self._tokens = dict(tokens or {})
        self._default_token = default_token
        self._policy = policy or RetryPolicy()
        # auth.test in the background: retried until Slack answers (backoff up to a minute).
        self._identity_policy = RetryPolicy(attempts=1_000_000, base_delay_s=self._policy.base_delay_s,
                                            max_delay_s=60.0)
        # Retries are ours (counted, bounded): the SDK's own retry handlers are switched off.
        self._client = AsyncWebClient(base_url=api_url, retry_handlers=[])
        self._verifier = SignatureVerifier(signing_secret)
        self._identities: dict[str, AuthorizeResult] = {}  # token → the bot's ids (auth.test)
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._not_before: dict[str, float] = {}  # token → monotonic time of the next auth.test after a failure
        self._flow = WebhookFlow(inbox, self.name, api_errors=(SlackApiError, aiohttp.ClientError, TimeoutError))
        # (team, user) → (their name, or None when the lookup failed; monotonic time it is good until)
        self._names: OrderedDict[tuple[str, str], tuple[str | None, float]] = OrderedDict()
        self._naming: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._names_off: dict[str, float] = {}  # token → monotonic time until which it is not asked for names
        # The signature is checked once, in receive(): bolt's own verification is off.
        self._app = AsyncApp(client=self._client, authorize=self._authorizer(), process_before_response=True,
                             request_verification_enabled=False, ssl_check_enabled=True)
        self._register(self._app)
        self._handler = AsyncSlackRequestHandler(self._app)

    @classmethod
    def from_settings(cls, inbox: Inbox, settings: Settings) -> SlackChannel | None:
        """The channel when Slack is configured (a signing secret or a token is set), else None."""
        if not (settings.slack_signing_secret or settings.slack_bot_token or settings.slack_tokens):
            return None
        return cls(inbox, signing_secret=settings.slack_signing_secret or "", tokens=settings.slack_tokens,
                   default_token=settings.slack_bot_token, api_url=settings.slack_api_url)

    # -- FastAPI ----------------------------------------------------------------------
    def router(self) -> APIRouter:
        router = APIRouter(tags=["slack"])
        router.add_api_route("/bots/{bot}/webhooks/slack", self.receive, methods=["POST"],
                             responses={400: {}, 401: {}, 404: {}, 503: {}})
        return router

    async def receive(self, bot: str, request: Request) -> Response:
        """Slack Events API and interactivity (Request URL of both)."""
        body = await request.body()
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            return JSONResponse({"detail": "malformed Slack request: the body is not UTF-8"}, status_code=400)
        if not self._verifier.is_valid_request(body, dict(request.headers)):
            self._inbox.metrics.rejected.labels(self.name, "signature").inc()
            return JSONResponse({"detail": "invalid Slack signature or stale timestamp"}, status_code=401)
        problem = malformed_request(body, request.headers.get("content-type", ""))
        if problem is not None:
            self._inbox.metrics.rejected.labels(self.name, "malformed").inc()
            return JSONResponse({"detail": f"malformed Slack request: {problem}"}, status_code=400)
        if self.name not in self._inbox.channels_of(bot):  # UnknownBot: 404 (503 while its model loads)
            raise HTTPException(404, f"bot {bot!r} does not enable the slack channel (bot.yml channels)")
        found: list[_Incoming] = []
        response = await self._handler.handle(request, {"switchboard_bot": bot, _FOUND: found})
        if response.status_code >= 400:
            reason = bytes(response.body).decode(errors="replace") or "refused"
            return JSONResponse({"detail": reason}, status_code=response.status_code)
        for incoming in found:  # stored before the ack; StoreUnavailable or Busy → 503, Slack redelivers
            if incoming.follow_up_only and not await self._known(incoming.message.ref):
                continue
            message = self._named(incoming.message)
            await self._flow.accept(message, functools.partial(self._post, incoming.token, message.ref.address))
            if message.customer_name is None:
                self._look_up_name(incoming.token, message)
        return response

    async def start(self) -> None:
        for token in {*self._tokens.values(), *([self._default_token] if self._default_token else [])}:
            self._resolve_soon(token)

    async def send(self, ref: ConversationRef, responses: Sequence[BotResponse]) -> None:
        token = self._token(ref.address.get("team"))
        if token is None:
            raise ConfigError(f"no Slack token for workspace {ref.address.get('team')!r}: "
                              "add it to SWITCHBOARD_SLACK_TOKENS")
        await self._post(token, ref.address, responses)

    async def aclose(self) -> None:
        await self._flow.aclose()
        tasks = [*self._resolving.values(), *self._naming.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the customer's name ----------------------------------------------------------------
    def _named(self, message: UserMessage) -> UserMessage:
        """``message`` with its sender's name when it is known (its write stores it on the conversation)."""
        known = self._names.get((message.ref.address.get("team", ""), message.user_id))
        if known is None or known[0] is None or known[1] < time.monotonic():
            return message
        return replace(message, customer_name=known[0])

    def _look_up_name(self, token: str, message: UserMessage) -> None:
        """``users.info`` for the sender, in the background, unless looked up now or failed lately."""
        key = (message.ref.address.get("team", ""), message.user_id)
        known = self._names.get(key)
        now = time.monotonic()
        if not message.user_id or key in self._naming or (known is not None and known[1] >= now) \
                or self._names_off.get(token, 0.0) > now:
            return
        task = asyncio.get_running_loop().create_task(self._learn_name(token, key, message.ref))
        self._naming[key] = task
        task.add_done_callback(lambda _: self._naming.pop(key, None))

    async def _learn_name(self, token: str, key: tuple[str, str], ref: ConversationRef) -> None:
        try:
            answer = await asyncio.wait_for(self._client.users_info(token=token, user=key[1]), _NAME_TIMEOUT_S)
            user = answer.get("user") or {}
            profile = user.get("profile") or {}
            name = display_name(profile.get("display_name") or profile.get("real_name") or user.get("real_name")
                                or user.get("name"))
        except Exception as exc:  # noqa: BLE001 - the name is a nicety: the conversation goes on without it
            error = _error(exc) if isinstance(exc, SlackApiError) else None
            if error in _NAME_REFUSALS:  # asking again for the next user would fail the same way
                self._names_off[token] = time.monotonic() + _NAME_OFF_S
                log.warning("Slack refused users.info: conversations show user ids, not names (give the app the "
                            "users:read scope)", extra={"channel": self.name, "error": error})
                return
            log.warning("could not look up the Slack user's name",
                        extra={"channel": self.name, "error": error or type(exc).__name__})
            name = None
        self._names[key] = (name, time.monotonic() + (_NAME_TTL_S if name else _NAME_RETRY_S))
        self._names.move_to_end(key)
        while len(self._names) > _NAMES_KEPT:
            self._names.popitem(last=False)
        if name is not None:
            try:
                await self._inbox.name_customer(ref, name)
            except Exception as exc:  # noqa: BLE001 - e.g. the store is down: the user's next message stores it
                log.warning("could not store the Slack user's name", extra={"channel": self.name,
                                                                            "error": type(exc).__name__})

    # -- bolt listeners: convert, nothing else -------------------------------------------------
    def _register(self, app: AsyncApp) -> None:
        # Closures, not bound methods: bolt injects arguments by the listener's parameter names.
        @app.event("message")
        async def on_message(event: dict[str, Any], body: dict[str, Any], context: AsyncBoltContext) -> None:
            if event.get("subtype") or event.get("bot_id") or not event.get("user"):
                return  # edits, deletions, joins, other bots (and our own replies)
            if event.get("channel_type") != "im":
                # In channels: mentions come as app_mention; other messages only in a thread we are in.
                if not event.get("thread_ts") or _mentions(event.get("text", ""), _bot_user(context, body)):
                    return
                self._found(context, event, str(event.get("text", "")), follow_up_only=True)
                return
            self._found(context, event, str(event.get("text", "")))

        @app.event("app_mention")
        async def on_mention(event: dict[str, Any], body: dict[str, Any], context: AsyncBoltContext) -> None:
            if not event.get("bot_id"):
                self._found(context, event, _strip_mention(str(event.get("text", "")), _bot_user(context, body)))

        @app.action(_ACTION)
        async def on_button(ack: Any, body: dict[str, Any], context: AsyncBoltContext) -> None:
            self._found_click(context, body)
            await ack()

        @app.event(re.compile(".*"))
        async def on_other_event() -> None:
            return None  # subscribed but not used: acknowledged so that Slack does not retry

    def _authorizer(self) -> Any:
        async def authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult | None:
            """The workspace's token, with the bot's ids once auth.test answered: never waits for Slack."""
            token = self._token(team_id)
            if token is None:
                # Acknowledged, not stored (Slack would only redeliver). Not None: bolt would then post an
                # apology to the click's response_url, a call to Slack before the ack.
                log.error("no Slack token for this workspace", extra={"team": team_id})
                return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id)
            known = self._identities.get(token)
            if known is not None:
                return known
            self._resolve_soon(token)
            return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token=token)

        return authorize

    def _resolve_soon(self, token: str) -> None:
        """Look the bot's identity up in the background, unless known, looked up now, or failed lately."""
        if token in self._identities or token in self._resolving or time.monotonic() < self._not_before.get(token, 0):
            return
        task = asyncio.get_running_loop().create_task(self._resolve(token))
        self._resolving[token] = task
        task.add_done_callback(lambda _: self._resolving.pop(token, None))

    async def _resolve(self, token: str) -> None:
        try:
            answer = await call_with_retry(
                lambda: self._client.auth_test(token=token), channel=self.name, what="auth.test",
                classify=_classify, metrics=self._inbox.metrics, policy=self._identity_policy)
        except Exception:  # noqa: BLE001 - not worth retrying now (invalid_auth, ...): counted and logged
            self._not_before[token] = time.monotonic() + _IDENTITY_COOLDOWN_S
            return
        self._identities[token] = AuthorizeResult.from_auth_test_response(bot_token=token, auth_test_response=answer)

    def _token(self, team_id: str | None) -> str | None:
        return self._tokens.get(team_id or "", self._default_token)

    # -- hand-over --------------------------------------------------------------------------
    def _found(self, context: AsyncBoltContext, event: Mapping[str, Any], text: str,
               *, follow_up_only: bool = False) -> None:
        text = _unescape(text).strip()
        if not text or not event.get("ts") or not event.get("channel") or not context.bot_token:
            return
        ref = _ref(str(context["switchboard_bot"]), str(context.team_id), str(event["channel"]),
                   event.get("thread_ts"))
        message = UserMessage(ref=ref, message_id=str(event["ts"]),
                              text=text[: self._inbox.limits.max_message_chars], user_id=str(event.get("user", "")))
        context[_FOUND].append(_Incoming(message, str(context.bot_token), follow_up_only))

    def _found_click(self, context: AsyncBoltContext, body: Mapping[str, Any]) -> None:
        action = (body.get("actions") or [{}])[0]
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        if not channel or not action.get("value") or not action.get("action_ts") or not context.bot_token:
            return
        clicked = body.get("message") or {}
        thread_ts = clicked.get("thread_ts") or (body.get("container") or {}).get("thread_ts")
        ref = _ref(str(context["switchboard_bot"]), str(context.team_id), str(channel), thread_ts)
        title = str((action.get("text") or {}).get("text") or action["value"])
        message = UserMessage(ref=ref, message_id=f"action:{action['action_ts']}", text=title,
                              user_id=str((body.get("user") or {}).get("id", "")), payload=str(action["value"]))
        context[_FOUND].append(_Incoming(message, str(context.bot_token)))

    async def _known(self, ref: ConversationRef) -> bool:
        try:
            return await self._inbox.summary(ref.bot, ref.conversation_id) is not None
        except StoreUnavailable:
            return True  # let accept decide (it answers 503 while the store is down)

    async def _post(self, token: str, address: Mapping[str, str], responses: Sequence[BotResponse]) -> None:
        for response in responses:
            for kwargs in _messages(response):
                custom = bool(kwargs.pop(_CUSTOM_MARK, False))
                try:
                    await self._post_one(token, address, kwargs)
                except SlackApiError as exc:
                    if _error(exc) != "invalid_blocks":
                        raise
                    if custom:  # the bot's own blocks: the error is logged (call_with_retry), the reply goes on
                        continue
                    # Slack refused a block it was given (an image it could not fetch, ...): the same reply
                    # as text, so that nothing is lost (docs/channels.md).
                    log.warning("Slack refused the blocks; the reply is sent as text", extra={"channel": self.name})
                    await self._post_one(token, address, _without_rich(response))

    async def _post_one(self, token: str, address: Mapping[str, str], kwargs: dict[str, Any]) -> None:
        thread_ts = address.get("thread_ts")
        if thread_ts:
            kwargs = {**kwargs, "thread_ts": thread_ts}
        await call_with_retry(
            functools.partial(self._client.chat_postMessage, token=token, channel=address["channel"], **kwargs),
            channel=self.name, what="chat.postMessage", classify=_classify, metrics=self._inbox.metrics,
            policy=self._policy)


def _bot_user(context: AsyncBoltContext, body: Mapping[str, Any]) -> str | None:
    """The bot's user id: from auth.test once known, else from the event's ``authorizations``."""
    if context.bot_user_id:
        return str(context.bot_user_id)
    for authorization in body.get("authorizations") or ():
        if isinstance(authorization, dict) and authorization.get("is_bot") and authorization.get("user_id"):
            return str(authorization["user_id"])
    return None


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
    """chat.postMessage arguments for one reply (docs/channels.md): plain-text sections (shown exactly as
    written; split over messages of ``_SECTIONS_PER_MESSAGE``), then in the last message the attachment as a
    link, the image block and the buttons (actions blocks: a payload button's ``value`` is its payload, a link
    button opens its ``url``). ``text`` is the notification fallback: the reply as text, options and links
    included. What Block Kit cannot take (a non-http(s) link or image) is in the sections as text."""
    shown = plan(response, image_ok=http_url(response.image), attachment_ok=http_url(response.attachment))
    pieces = split_text(shown.text, _SECTION_CHARS) if shown.text.strip() else []
    groups = [pieces[i:i + _SECTIONS_PER_MESSAGE] for i in range(0, len(pieces), _SECTIONS_PER_MESSAGE)] or [[]]
    messages: list[dict[str, Any]] = []
    for n, group in enumerate(groups):
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "plain_text", "text": piece, "emoji": True}} for piece in group]
        fallback = "\n\n".join(group)
        if n == len(groups) - 1:
            blocks.extend(_rich_blocks(response, shown))
            # Notifications show the options and links too (rich parts degrade to text).
            fallback = "\n".join(x for x in [fallback, *_fallback_extras(shown)] if x)
        if blocks:
            messages.append({"text": _escape(fallback or "…"), "blocks": blocks})
    custom = _custom_message(response)
    if custom is not None:
        messages.append(custom)
    return messages


def _rich_blocks(response: BotResponse, shown: Plan) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if shown.attachment:
        name = shown.attachment.rstrip("/").rsplit("/", 1)[-1].split("?")[0] or "Attachment"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": (
            f"<{_escape(shown.attachment).replace('|', '%7C')}|{_escape(name)[:200]}>")}})
    if shown.image:
        blocks.append({"type": "image", "image_url": shown.image,
                       "alt_text": (response.text.strip() or "image")[:_ALT_TEXT]})
    for first in range(0, len(shown.buttons), _BUTTONS):
        elements: list[dict[str, Any]] = []
        for i, b in shown.buttons[first:first + _BUTTONS]:
            element: dict[str, Any] = {"type": "button", "action_id": f"{_ACTION_PREFIX}{i}", "text": {
                "type": "plain_text", "text": (b.title or b.url or b.payload)[:_BUTTON_TITLE] or "?", "emoji": True}}
            if b.url:
                element["url"] = b.url  # a link: Slack opens it (the click is acknowledged, nothing is sent back)
            else:
                element["value"] = b.payload[:_BUTTON_VALUE]
            elements.append(element)
        block_id = "switchboard_buttons" if first == 0 else f"switchboard_buttons_{first // _BUTTONS}"
        blocks.append({"type": "actions", "block_id": block_id, "elements": elements})
    return blocks


def _fallback_extras(shown: Plan) -> list[str]:
    """The notification text's lines for what the blocks show: options, link buttons' URLs, image, file."""
    lines = [f"{n}. {b.title}" + (f": {b.url}" if b.url else "") for n, (_, b) in enumerate(shown.buttons, 1)]
    if shown.image:
        lines.append(f"Image: {shown.image}")
    if shown.attachment:
        lines.append(f"Attachment: {shown.attachment}")
    return lines


def _custom_message(response: BotResponse) -> dict[str, Any] | None:
    """Rasa's Slack convention: a custom payload is chat.postMessage's arguments (``blocks``, ``attachments``,
    ``text``, ...), sent as given in a message of its own, after the reply; the channel and thread are the
    conversation's. A payload with none of those is for another channel: not sent here (logged)."""
    custom = response.custom
    if custom is None:
        return None
    if not any(custom.get(k) for k in ("blocks", "attachments", "text")):
        log.warning("custom payload without Slack blocks, attachments or text: not sent to Slack",
                    extra={"keys": sorted(custom)[:10]})
        return None
    message = {k: v for k, v in custom.items() if k in _CUSTOM_KEYS}
    ignored = sorted(set(custom) - set(_CUSTOM_KEYS))
    if ignored:
        log.warning("custom payload keys not sent to Slack", extra={"keys": ignored[:10]})
    if not isinstance(message.get("text"), str) or not message["text"]:
        message["text"] = _escape(response.text.strip() or "…")  # the notification of a blocks-only message
    message[_CUSTOM_MARK] = True
    return message


def _without_rich(response: BotResponse) -> dict[str, Any]:
    """A reply whose blocks Slack refused (an image it could not fetch, a link it did not take): its text
    with every rich part as text, in plain sections (the first ``_SECTIONS_PER_MESSAGE``)."""
    text = plan(response, image_ok=False, attachment_ok=False, button_ok=False).text or "…"
    pieces = split_text(text, _SECTION_CHARS)[:_SECTIONS_PER_MESSAGE]
    return {"text": _escape(text[:_SECTION_CHARS]), "blocks": [
        {"type": "section", "text": {"type": "plain_text", "text": piece, "emoji": True}} for piece in pieces]}


def _error(exc: SlackApiError) -> str | None:
    """Slack's error code (``invalid_blocks``, ``ratelimited``, ...) of a failed call."""
    try:
        error = exc.response.get("error")
    except Exception:  # noqa: BLE001 - a response that is not Slack's JSON
        return None
    return error if isinstance(error, str) else None


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

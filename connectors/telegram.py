"""The Telegram channel, through aiogram 3: a webhook for production, long polling for development.

``POST /bots/{bot}/webhooks/telegram`` first checks ``X-Telegram-Bot-Api-Secret-Token``
against ``SWITCHBOARD_TELEGRAM_SECRET`` (wrong or missing → 401). The webhook is registered
once with ``switchboard telegram set-webhook BOT_DIR --url URL``, never by replicas at start.

An update is stored (``connectors.webhook.WebhookFlow``, message id = ``update_id``) before
Telegram gets its 200, so an acknowledged update is never lost; if the store is down Telegram
gets a 503 and redelivers. A redelivered update whose turn is done is acknowledged without a
second reply. The answer is made after the ack: ``sendChatAction`` typing (and
``answerCallbackQuery`` for a click) while it is made, then the messages.

Text is sent without ``parse_mode``: Telegram shows it exactly as the bot wrote it, with no
escaping to get wrong (a MarkdownV2 message with one unescaped ``.`` or ``!`` is refused),
and a split can never cut an entity in half. Messages over 4096 characters (UTF-16 code
units, as Telegram counts) are split on paragraph, line, then word boundaries. Buttons are
an inline keyboard; a click (callback query) is answered (``answerCallbackQuery``) and comes
back as a message with the button's payload. Payloads over Telegram's 64-byte
``callback_data`` limit travel as ``#<index>`` and are resolved from the clicked keyboard.

Conversation ids: ``telegram:<chat id>`` (``:<topic id>`` in forum topics).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramConflictError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update
from aiogram.utils.token import TokenValidationError, validate_token
from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import ValidationError

from bots.errors import Busy, ConfigError, StoreUnavailable, SwitchboardError
from bots.events import BOT
from bots.loader import load_bot_folder
from bots.settings import Settings
from bots.types import BotResponse, ConversationRef, UserMessage
from connectors.base import Inbox
from connectors.outgoing import Retry, RetryPolicy, call_with_retry, split_text, utf16_len
from connectors.webhook import WebhookFlow

log = logging.getLogger("switchboard.telegram")

MAX_CHARS = 4096  # sendMessage text, in UTF-16 code units
_CALLBACK_BYTES = 64  # callback_data
_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")  # what setWebhook accepts as secret_token
UPDATES = ["message", "callback_query"]


class Clients:
    """The aiogram Bot that speaks for each Switchboard bot (one HTTP session per token); the tokens
    are checked when this is built."""

    def __init__(self, tokens: Mapping[str, str] | None = None, default_token: str | None = None,
                 api_url: str = "https://api.telegram.org") -> None:
        self._tokens = dict(tokens or {})
        self._default_token = default_token
        for where, token in [*((f"SWITCHBOARD_TELEGRAM_TOKENS[{k!r}]", v) for k, v in self._tokens.items()),
                             ("SWITCHBOARD_TELEGRAM_TOKEN", default_token)]:
            if token is not None:
                try:
                    validate_token(token)
                except TokenValidationError:
                    raise ConfigError(f"{where}: not a bot token (expected 123456:ABC-... from @BotFather)") from None
        self._server = TelegramAPIServer.from_base(api_url)
        self._bots: dict[str, Bot] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Clients | None:
        """The configured tokens, or None when no Telegram token is set."""
        if not (settings.telegram_token or settings.telegram_tokens):
            return None
        return cls(settings.telegram_tokens, settings.telegram_token, settings.telegram_api_url)

    def has_token(self, bot: str) -> bool:
        return self._tokens.get(bot, self._default_token) is not None

    def __call__(self, bot: str) -> Bot:
        token = self._tokens.get(bot, self._default_token)
        if token is None:
            raise ConfigError(f"no Telegram token for bot {bot!r}: set SWITCHBOARD_TELEGRAM_TOKEN "
                              f"or add it to SWITCHBOARD_TELEGRAM_TOKENS")
        if token not in self._bots:
            self._bots[token] = Bot(token, session=AiohttpSession(api=self._server))
        return self._bots[token]

    async def aclose(self) -> None:
        for tg in self._bots.values():
            await tg.session.close()
        self._bots.clear()


def webhook_secret(settings: Settings) -> str:
    """SWITCHBOARD_TELEGRAM_SECRET, required with a token: the webhook is verified with it."""
    if not settings.telegram_secret:
        raise ConfigError("SWITCHBOARD_TELEGRAM_SECRET: required with a Telegram token, to verify the webhook "
                          "(e.g. `openssl rand -hex 32`; `switchboard telegram set-webhook` registers it)")
    return _checked_secret(settings.telegram_secret)


def _checked_secret(secret: str) -> str:
    if not _SECRET.match(secret):
        raise ConfigError("SWITCHBOARD_TELEGRAM_SECRET: use 1-256 characters A-Z, a-z, 0-9, _ and - "
                          "(e.g. `openssl rand -hex 32`)")
    return secret


class TelegramChannel:
    name = "telegram"

    def __init__(self, inbox: Inbox, *, tokens: Mapping[str, str] | None = None, default_token: str | None = None,
                 secret: str | None = None, api_url: str = "https://api.telegram.org",
                 policy: RetryPolicy | None = None) -> None:
        self._inbox = inbox
        self.client = Clients(tokens, default_token, api_url)
        self._secret = _checked_secret(secret) if secret is not None else None
        self._policy = policy or RetryPolicy()
        self._flow = WebhookFlow(inbox, self.name, api_errors=(TelegramAPIError,))

    @classmethod
    def from_settings(cls, inbox: Inbox, settings: Settings) -> TelegramChannel | None:
        """The webhook channel when a Telegram token is set, else None."""
        if not (settings.telegram_token or settings.telegram_tokens):
            return None
        return cls(inbox, tokens=settings.telegram_tokens, default_token=settings.telegram_token,
                   secret=webhook_secret(settings), api_url=settings.telegram_api_url)

    # -- webhook ----------------------------------------------------------------------------
    def router(self) -> APIRouter:
        router = APIRouter(tags=["telegram"])
        router.add_api_route("/bots/{bot}/webhooks/telegram", self.receive, methods=["POST"],
                             responses={400: {}, 401: {}, 404: {}, 503: {}})
        return router

    async def receive(self, bot: str, request: Request) -> Response:
        """Telegram Bot API webhook (registered by `switchboard telegram set-webhook`)."""
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if self._secret is None or not hmac.compare_digest(given.encode(), self._secret.encode()):
            self._inbox.metrics.rejected.labels(self.name, "secret").inc()
            raise HTTPException(401, "wrong or missing X-Telegram-Bot-Api-Secret-Token")
        self._check_bot(bot)
        try:
            update = Update.model_validate(json.loads(await request.body()))
        except (ValueError, ValidationError) as exc:
            raise HTTPException(400, f"not a Telegram update: {exc}") from None
        message = await self._resolve(self.convert(bot, update))
        if message is not None:  # StoreUnavailable or Busy: the app answers 503, Telegram redelivers
            await self._hand_over(message, update)
        return Response(status_code=200)

    async def start(self) -> None:
        return None  # nothing to look up: the token is the bot's identity

    def _check_bot(self, name: str) -> None:
        if self.name not in self._inbox.channels_of(name):  # UnknownBot → 404
            raise HTTPException(404, f"bot {name!r} does not enable the telegram channel (bot.yml channels)")
        if not self.client.has_token(name):
            raise HTTPException(404, f"no Telegram token for bot {name!r}")

    async def _hand_over(self, message: UserMessage, update: Update) -> None:
        tg = self.client(message.ref.bot)
        callback_id = update.callback_query.id if update.callback_query else None
        address = message.ref.address

        async def while_answering() -> None:
            if callback_id is not None:  # stops the button's spinner
                await self._try(lambda: tg.answer_callback_query(callback_id), "answerCallbackQuery")
            await self._try(lambda: tg.send_chat_action(chat_id=int(address["chat_id"]), action="typing",
                                                        message_thread_id=_thread(address)),
                            "sendChatAction", attempts=1)

        await self._flow.accept(message, functools.partial(self._send_with, tg, address), aside=while_answering)

    # -- Telegram → UserMessage ---------------------------------------------------------------
    def convert(self, bot: str, update: Update) -> UserMessage | None:
        """The customer's message in ``update``, or None for what the bot does not answer."""
        max_chars = self._inbox.limits.max_message_chars
        if update.message is not None:
            m = update.message
            if not m.text or not m.text.strip() or m.from_user is None or m.from_user.is_bot:
                return None  # photos, stickers, joins, other bots
            return UserMessage(ref=_ref(bot, m), message_id=str(update.update_id), text=m.text.strip()[:max_chars],
                               user_id=str(m.from_user.id))
        if update.callback_query is not None:
            return _click(bot, update.update_id, update.callback_query)
        return None  # edits, channel posts, ...

    async def _resolve(self, message: UserMessage | None) -> UserMessage | None:
        """A click on a button whose payload was too long for callback_data: the payload is
        found in the bot's latest stored answer with the same keyboard (else the title is the text)."""
        if message is None or "button" not in message.metadata:
            return message
        index, titles = int(message.metadata["button"]), list(message.metadata["keyboard"])
        conversation = await self._inbox.history(message.ref.bot, message.ref.conversation_id, last_n=20)
        for event in reversed(conversation.events if conversation else []):
            buttons = (event.data.get("buttons") or []) if event.kind == BOT else []
            if [b.get("title") or b.get("payload") for b in buttons] == titles and index < len(buttons):
                return replace(message, payload=str(buttons[index]["payload"]), metadata={})
        return replace(message, metadata={})

    # -- BotResponse → Telegram ------------------------------------------------------------------
    async def send(self, ref: ConversationRef, responses: Sequence[BotResponse]) -> None:
        await self._send_with(self.client(ref.bot), ref.address, responses)

    async def _send_with(self, tg: Bot, address: Mapping[str, str], responses: Sequence[BotResponse]) -> None:
        for response in responses:
            text = response.text if response.text.strip() else response.as_text().strip() or "…"
            pieces = split_text(text, MAX_CHARS, utf16_len)
            for n, piece in enumerate(pieces):
                markup = _keyboard(response) if n == len(pieces) - 1 else None
                await call_with_retry(
                    functools.partial(tg.send_message, chat_id=int(address["chat_id"]), text=piece,
                                      reply_markup=markup, message_thread_id=_thread(address)),
                    channel=self.name, what="sendMessage", classify=_classify, metrics=self._inbox.metrics,
                    policy=self._policy)

    async def _try(self, call: Any, what: str, attempts: int | None = None) -> None:
        """A call whose failure does not stop the reply (typing, callback answers)."""
        policy = self._policy if attempts is None else RetryPolicy(attempts, self._policy.base_delay_s,
                                                                   self._policy.max_delay_s)
        try:
            await call_with_retry(call, channel=self.name, what=what, classify=_classify,
                                  metrics=self._inbox.metrics, policy=policy)
        except TelegramAPIError:
            pass  # counted and logged by call_with_retry
        except Exception:
            log.exception("telegram call failed", extra={"call": what})

    # -- long polling (development) -----------------------------------------------------------------
    async def poll(self, bot: str, *, stop: asyncio.Event | None = None, timeout_s: int = 25) -> None:
        """Answer ``bot``'s updates by long polling until ``stop`` is set (or the task is cancelled).
        Each update is stored before the next offset acknowledges it to Telegram."""
        stop = stop or asyncio.Event()
        tg = self.client(bot)
        offset: int | None = None
        while not stop.is_set():
            updates = await call_with_retry(
                functools.partial(tg.get_updates, offset=offset, timeout=timeout_s, allowed_updates=UPDATES),
                channel=self.name, what="getUpdates", classify=_classify, metrics=self._inbox.metrics,
                policy=RetryPolicy(attempts=1_000_000, base_delay_s=1.0, max_delay_s=60.0))
            for update in updates:
                message = await self._resolve(self.convert(bot, update))
                if message is not None:
                    try:
                        await self._hand_over(message, update)
                    except (StoreUnavailable, Busy):
                        await asyncio.sleep(2.0)
                        break  # the offset stays: the update comes again
                offset = update.update_id + 1

    async def aclose(self) -> None:
        await self._flow.aclose()
        await self.client.aclose()


def _ref(bot: str, m: Message) -> ConversationRef:
    address = {"chat_id": str(m.chat.id)}
    conversation_id = f"telegram:{m.chat.id}"
    if m.is_topic_message and m.message_thread_id is not None:
        address["message_thread_id"] = str(m.message_thread_id)
        conversation_id += f":{m.message_thread_id}"
    return ConversationRef(bot=bot, channel=TelegramChannel.name, conversation_id=conversation_id, address=address)


def _thread(address: Mapping[str, str]) -> int | None:
    return int(address["message_thread_id"]) if "message_thread_id" in address else None


def _click(bot: str, update_id: int, query: CallbackQuery) -> UserMessage | None:
    m = query.message
    if not isinstance(m, Message) or not query.data:
        return None  # too old to show (InaccessibleMessage) or not ours
    payload, title = query.data, query.data
    for row in (m.reply_markup.inline_keyboard if m.reply_markup else []):
        for button in row:
            if button.callback_data == query.data:
                title = button.text
    if query.data.startswith("#") and query.data[1:].isdigit():  # a long payload: see TelegramChannel._resolve
        titles = [b.text for row in (m.reply_markup.inline_keyboard if m.reply_markup else []) for b in row]
        return UserMessage(ref=_ref(bot, m), message_id=str(update_id), text=title, user_id=str(query.from_user.id),
                           metadata={"button": int(query.data[1:]), "keyboard": titles})
    return UserMessage(ref=_ref(bot, m), message_id=str(update_id), text=title, user_id=str(query.from_user.id),
                       payload=payload)


def _keyboard(response: BotResponse) -> InlineKeyboardMarkup | None:
    if not response.buttons:
        return None
    rows = []
    for i, b in enumerate(response.buttons):
        data = b.payload if 0 < len(b.payload.encode()) <= _CALLBACK_BYTES else f"#{i}"
        rows.append([InlineKeyboardButton(text=b.title or b.payload, callback_data=data)])
    return InlineKeyboardMarkup(inline_keyboard=rows)


def _classify(exc: BaseException) -> Retry | None:
    if isinstance(exc, TelegramRetryAfter):
        return Retry("rate_limited", float(exc.retry_after))
    if isinstance(exc, TelegramServerError | ClientDecodeError):  # 5xx, or a proxy's HTML error page
        return Retry("server_error")
    if isinstance(exc, TelegramNetworkError | TimeoutError):
        return Retry("network")
    return None  # bad request, blocked by the user, wrong token: another try fails the same way


# -- command line: `switchboard telegram set-webhook | poll` ------------------------------------------
def webhook_url(base_url: str, bot: str) -> str:
    if not re.match(r"^https?://[^/\s]+", base_url):
        raise ConfigError(f"--url {base_url!r}: expected the server's public base URL, e.g. https://bots.example.com")
    path = f"/bots/{bot}/webhooks/telegram"
    base = base_url.rstrip("/")
    return base if base.endswith(path) else base + path


async def set_webhook(settings: Settings, bot_dir: Path, base_url: str) -> str:
    """Register the bot's webhook (with the secret token) once; returns the URL registered."""
    spec, _ = load_bot_folder(bot_dir)
    if TelegramChannel.name not in spec.channels:
        raise ConfigError(f"{spec.file}: 'channels' does not list telegram")
    clients = Clients.from_settings(settings)
    if clients is None:
        raise ConfigError("SWITCHBOARD_TELEGRAM_TOKEN (or SWITCHBOARD_TELEGRAM_TOKENS): not set "
                          "(the token from @BotFather)")
    secret = webhook_secret(settings)
    url = webhook_url(base_url, spec.name)
    try:
        await clients(spec.name).set_webhook(url=url, secret_token=secret, allowed_updates=UPDATES)
    except TelegramAPIError as exc:
        raise SwitchboardError(f"Telegram refused the webhook {url}: {exc.message}") from None
    finally:
        await clients.aclose()
    return url


async def poll_until(settings: Settings, bot_dir: Path, stop: asyncio.Event | None = None,
                     timeout_s: int = 25) -> None:
    """Serve one bot by long polling, with the configured store, until ``stop`` is set."""
    from bots.metrics import Metrics
    from bots.runtime import Runtime
    from bots.store.factory import open_store

    spec, _ = load_bot_folder(bot_dir)
    if TelegramChannel.name not in spec.channels:
        raise ConfigError(f"{spec.file}: 'channels' does not list telegram")
    runtime = Runtime(settings, open_store(uri=settings.mongodb_uri, data_dir=settings.data_dir), Metrics())
    channel = TelegramChannel(runtime, tokens=settings.telegram_tokens, default_token=settings.telegram_token,
                              api_url=settings.telegram_api_url)
    channel.client(spec.name)  # no token: a ConfigError before anything starts
    await runtime.store.start()
    try:
        bot = await runtime.load_bot(bot_dir)
        await channel.poll(bot.name, stop=stop, timeout_s=timeout_s)
    except TelegramConflictError:
        raise SwitchboardError("Telegram refuses polling while a webhook is set for this token: use a separate "
                               "development bot from @BotFather, or remove the webhook (Bot API deleteWebhook)"
                               ) from None
    finally:
        await channel.aclose()
        await runtime.aclose()

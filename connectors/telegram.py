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
``callback_data`` limit travel as ``#<index>`` and are resolved from the stored reply whose
keyboard was clicked. Link buttons are URL buttons. An image is sent with ``sendPhoto`` (the
text as its caption when it fits in 1024), an attachment with ``sendDocument``; one Telegram
cannot fetch is sent as its link. A custom payload is Bot API method parameters, as Rasa's
Telegram channel reads them (``photo``, ``document``, ``latitude``/``longitude``, ...).
docs/channels.md has the whole rule.

Conversation ids: ``telegram:<chat id>`` (``:<topic id>`` in forum topics).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramAPIError,
    TelegramBadRequest,
    TelegramConflictError,
    TelegramNetworkError,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.methods import (
    SendAnimation,
    SendAudio,
    SendChatAction,
    SendContact,
    SendDocument,
    SendGame,
    SendLocation,
    SendMediaGroup,
    SendMessage,
    SendPhoto,
    SendSticker,
    SendVenue,
    SendVideo,
    SendVideoNote,
    SendVoice,
    TelegramMethod,
)
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
    User,
)
from aiogram.utils.token import TokenValidationError, validate_token
from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import ValidationError

from bots.errors import Busy, ConfigError, StoreUnavailable, SwitchboardError
from bots.events import BOT
from bots.loader import load_bot_folder
from bots.settings import Settings
from bots.types import BotResponse, Button, ConversationRef, UserMessage
from connectors.base import Inbox
from connectors.outgoing import Retry, RetryPolicy, call_with_retry, split_text, utf16_len
from connectors.rich import data_image, http_url, plan
from connectors.webhook import WebhookFlow

log = logging.getLogger("switchboard.telegram")

MAX_CHARS = 4096  # sendMessage text, in UTF-16 code units
CAPTION_CHARS = 1024  # sendPhoto caption
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
                               user_id=str(m.from_user.id), customer_name=_name(m.from_user))
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
            if event.kind != BOT:
                continue
            buttons = BotResponse.from_dict(event.data).buttons
            if [_label(b) for _, b in _keyboard_buttons(buttons)] == titles and index < len(buttons):
                return replace(message, payload=buttons[index].payload, metadata={})
        return replace(message, metadata={})  # not found: the button's title is the customer's message

    # -- BotResponse → Telegram ------------------------------------------------------------------
    async def send(self, ref: ConversationRef, responses: Sequence[BotResponse]) -> None:
        await self._send_with(self.client(ref.bot), ref.address, responses)

    async def _send_with(self, tg: Bot, address: Mapping[str, str], responses: Sequence[BotResponse]) -> None:
        for response in responses:
            await self._send_one(tg, address, response)

    async def _send_one(self, tg: Bot, address: Mapping[str, str], response: BotResponse) -> None:
        """One reply (docs/channels.md): the text (split at 4096), the image by sendPhoto (the text as its
        caption when it fits), the attachment by sendDocument, the buttons as the inline keyboard of the message
        with the text, then the custom payload's methods. An image or file Telegram cannot fetch is sent as a
        link."""
        chat_id, thread = int(address["chat_id"]), _thread(address)
        photo = _photo(response.image)
        shown = plan(response, image_ok=photo is not None, attachment_ok=http_url(response.attachment))
        keyboard = _keyboard(shown.buttons)
        text = shown.text
        caption = photo is not None and utf16_len(text) <= CAPTION_CHARS
        sends: list[_Send] = []
        if not caption and (text.strip() or (photo is None and not shown.attachment
                                             and (keyboard is not None or response.custom is None))):
            sends.extend(_Send("sendMessage", {"text": piece}) for piece in split_text(text or "…", MAX_CHARS,
                                                                                       utf16_len))
        if photo is not None:
            sends.append(_Send("sendPhoto", {"photo": photo, "caption": text if caption and text else None},
                               fallback=f"Image: {response.image if isinstance(photo, str) else '(inline data)'}"))
        if shown.attachment:
            sends.append(_Send("sendDocument", {"document": shown.attachment},
                               fallback=f"Attachment: {shown.attachment}"))
        if keyboard is not None:
            if not sends:  # only a custom payload besides the buttons: they need a message of their own
                sends.append(_Send("sendMessage", {"text": "…"}))
            # With the text (its last piece, or the photo it is the caption of), else on the last message.
            carriers = [s for s in sends if s.method == "sendMessage" or s.params.get("caption")]
            (carriers or sends)[-1].params["reply_markup"] = keyboard
        for send in sends:
            await self._send_call(tg, chat_id, thread, send)
        for method, what in _custom_methods(response.custom, chat_id, thread):
            try:
                await call_with_retry(functools.partial(tg, method), channel=self.name, what=what,
                                      classify=_classify, metrics=self._inbox.metrics, policy=self._policy)
            except TelegramBadRequest:
                continue  # the bot's own payload was refused: counted and logged, the reply goes on

    async def _send_call(self, tg: Bot, chat_id: int, thread: int | None, send: _Send) -> None:
        params = {k: v for k, v in send.params.items() if v is not None}
        calls: dict[str, Callable[..., Awaitable[Any]]] = {
            "sendMessage": tg.send_message, "sendPhoto": tg.send_photo, "sendDocument": tg.send_document}
        try:
            await call_with_retry(functools.partial(calls[send.method], chat_id=chat_id, message_thread_id=thread,
                                                    **params),
                                  channel=self.name, what=send.method, classify=_classify,
                                  metrics=self._inbox.metrics, policy=self._policy)
        except TelegramBadRequest:
            if send.fallback is None:
                raise
            # Telegram could not fetch the file (or refused it): the link as text, with the caption and keyboard.
            text = "\n".join(x for x in (params.get("caption"), send.fallback) if x)
            await call_with_retry(functools.partial(tg.send_message, chat_id=chat_id, message_thread_id=thread,
                                                    text=text, reply_markup=params.get("reply_markup")),
                                  channel=self.name, what="sendMessage", classify=_classify,
                                  metrics=self._inbox.metrics, policy=self._policy)

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
                           metadata={"button": int(query.data[1:]), "keyboard": titles},
                           customer_name=_name(query.from_user))
    return UserMessage(ref=_ref(bot, m), message_id=str(update_id), text=title, user_id=str(query.from_user.id),
                       payload=payload, customer_name=_name(query.from_user))


def _name(user: User) -> str | None:
    """The customer's display name: first and last name as Telegram gives them, else @username."""
    return user.full_name.strip() or (f"@{user.username}" if user.username else None)


def _label(button: Button) -> str:
    return button.title or button.url or button.payload or "?"


def _keyboard_buttons(buttons: Sequence[Button]) -> list[tuple[int, Button]]:
    """The buttons the inline keyboard shows, with their index: payload buttons, and link buttons whose URL
    Telegram takes (the others are shown as text: connectors.rich.plan, the same rule)."""
    return [(i, b) for i, b in enumerate(buttons) if not b.url or http_url(b.url)]


def _keyboard(buttons: Sequence[tuple[int, Button]]) -> InlineKeyboardMarkup | None:
    """One button a row. A payload of 1-64 bytes is the ``callback_data``; a longer (or empty) one travels as
    ``#<index>`` and is resolved from the stored reply (``TelegramChannel._resolve``). A link button opens its URL."""
    if not buttons:
        return None
    rows = []
    for i, b in buttons:
        if b.url:
            rows.append([InlineKeyboardButton(text=_label(b), url=b.url)])
        else:
            data = b.payload if 0 < len(b.payload.encode()) <= _CALLBACK_BYTES else f"#{i}"
            rows.append([InlineKeyboardButton(text=_label(b), callback_data=data)])
    return InlineKeyboardMarkup(inline_keyboard=rows)


@dataclass
class _Send:
    """One Bot API call of a reply; ``fallback``: the text sent instead when Telegram refuses the file."""

    method: str
    params: dict[str, Any]
    fallback: str | None = None


def _photo(image: str | None) -> str | BufferedInputFile | None:
    """What sendPhoto takes for ``image``: an http(s) URL (Telegram fetches it), a ``data:`` image's bytes
    (uploaded), or None (not an image Telegram can get: shown as text)."""
    if http_url(image):
        return image
    data = data_image(image)
    return BufferedInputFile(data[0], filename=f"image.{data[1]}") if data is not None else None


# Rasa's TelegramOutput.send_custom_json: the first keys that are all present name the Bot API method, in this
# order; every other key of the payload is a parameter of the methods that have it. Not chat_id: a payload
# never writes to another chat.
_CUSTOM_METHODS: tuple[tuple[tuple[str, ...], type[TelegramMethod[Any]], str], ...] = (
    (("text",), SendMessage, "sendMessage"),
    (("photo",), SendPhoto, "sendPhoto"),
    (("audio",), SendAudio, "sendAudio"),
    (("document",), SendDocument, "sendDocument"),
    (("sticker",), SendSticker, "sendSticker"),
    (("video",), SendVideo, "sendVideo"),
    (("video_note",), SendVideoNote, "sendVideoNote"),
    (("animation",), SendAnimation, "sendAnimation"),
    (("voice",), SendVoice, "sendVoice"),
    (("media",), SendMediaGroup, "sendMediaGroup"),
    (("latitude", "longitude", "title", "address"), SendVenue, "sendVenue"),
    (("latitude", "longitude"), SendLocation, "sendLocation"),
    (("phone_number", "first_name"), SendContact, "sendContact"),
    (("game_short_name",), SendGame, "sendGame"),
    (("action",), SendChatAction, "sendChatAction"),
)


def _custom_methods(custom: Mapping[str, Any] | None, chat_id: int,
                    thread: int | None) -> list[tuple[TelegramMethod[Any], str]]:
    """A custom payload as Bot API calls (Rasa's Telegram convention, e.g. ``{"photo": URL, "caption": ...}``,
    ``{"latitude": ..., "longitude": ...}``, ``{"text": ..., "reply_markup": {...}}``). Keys no method takes,
    and parameters Telegram's types refuse, are logged and not sent; a payload with no method is for another
    channel (logged)."""
    if custom is None:
        return []
    rest = {k: v for k, v in custom.items() if k not in ("chat_id", "message_thread_id")}
    chosen: list[tuple[type[TelegramMethod[Any]], str, dict[str, Any]]] = []
    for keys, method, what in _CUSTOM_METHODS:
        if all(rest.get(k) is not None for k in keys):
            chosen.append((method, what, {k: rest.pop(k) for k in keys}))
    if not chosen:
        log.warning("custom payload without a Telegram method's parameters: not sent to Telegram",
                    extra={"keys": sorted(custom)[:10]})
        return []
    used: set[str] = set()
    calls: list[tuple[TelegramMethod[Any], str]] = []
    for method, what, params in chosen:
        extra = {k: v for k, v in rest.items() if k in method.model_fields}
        used.update(extra)
        where: dict[str, Any] = {"chat_id": chat_id}
        if thread is not None and "message_thread_id" in method.model_fields:
            where["message_thread_id"] = thread
        try:
            calls.append((method.model_validate({**params, **extra, **where}), what))
        except ValidationError as exc:
            log.warning("custom payload refused for Telegram", extra={"call": what, "error": str(exc)[:500]})
    unused = sorted(set(rest) - used)
    if unused:
        log.warning("custom payload keys no Telegram method takes: not sent", extra={"keys": unused[:10]})
    return calls


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

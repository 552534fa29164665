"""What a channel is given, and what it implements.

A channel is a thin adapter: verify, de-duplicate, convert to ``UserMessage``, hand over, send
``BotResponse`` back. It is built with an ``Inbox``: the few things a channel may ask of the
runtime (accept a message, process it, look a conversation up, the limits it applies, the
metrics it counts). Never the runtime itself, so what a channel can reach is this list, checked
by mypy; and never late (``connectors.app`` builds the runtime first, then each channel from its
``ChannelFactory``), so no channel guards a runtime that may not be there yet.
``bots.runtime.Runtime`` implements ``Inbox``.

Abilities only some channels have are protocols a channel implements, found by ``isinstance``
against the protocol, never against a channel class: ``Streaming`` (show an answer while it is
being generated; the web widget does).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Protocol, runtime_checkable

from fastapi import APIRouter

from bots.metrics import Metrics
from bots.store.base import Conversation, ConversationSummary, Turn
from bots.types import BotResponse, ConversationRef, UserMessage


class Limits(Protocol):
    """The settings a channel applies (``bots.settings.Settings`` has them)."""

    @property
    def max_message_chars(self) -> int: ...
    @property
    def max_body_bytes(self) -> int: ...
    @property
    def rate_per_ip(self) -> float: ...
    @property
    def rate_per_ip_burst(self) -> float: ...
    @property
    def rate_per_conversation(self) -> float: ...
    @property
    def rate_per_conversation_burst(self) -> float: ...
    @property
    def ws_idle_timeout_s(self) -> float: ...
    @property
    def drain_timeout_s(self) -> float: ...


class Inbox(Protocol):
    """What a channel may ask of the runtime."""

    @property
    def limits(self) -> Limits: ...

    @property
    def metrics(self) -> Metrics: ...

    def channels_of(self, bot: str) -> Collection[str]:
        """The channels ``bot`` enables (bot.yml ``channels``); ``UnknownBot`` when it is not served
        here (the app answers 404, or 503 while a served bot's model is still loading)."""
        ...

    async def accept(self, message: UserMessage) -> Turn:
        """Store the message (pending); once this returns the channel may acknowledge it.
        Raises ``UnknownBot``, ``Busy`` or ``StoreUnavailable``."""
        ...

    async def process(self, message: UserMessage, turn: Turn) -> list[BotResponse]:
        """Answer an accepted message (from the store if it was answered already)."""
        ...

    async def handle(self, message: UserMessage) -> list[BotResponse]:
        """``accept`` then ``process``: for channels whose sender waits for the answer."""
        ...

    async def open(self, ref: ConversationRef, *, customer_name: str | None = None) -> list[BotResponse]:
        """A chat was opened: the bot's welcome for the channel, stored once per conversation ([] without one);
        ``customer_name`` (the customer's display name) is stored with it."""
        ...

    async def name_customer(self, ref: ConversationRef, name: str) -> None:
        """The customer of an existing conversation is called ``name`` (a channel that learns it after storing
        the message); written only when it changed. Raises ``StoreUnavailable``."""
        ...

    async def history(self, bot: str, conversation_id: str, *, last_n: int | None = None) -> Conversation | None:
        """The conversation as stored (its last ``last_n`` turns), or None."""
        ...

    async def summary(self, bot: str, conversation_id: str) -> ConversationSummary | None:
        """The conversation's summary (cheap: no turns), or None when there is no such conversation."""
        ...


class Channel(Protocol):
    name: str

    def router(self) -> APIRouter:
        """Routes mounted under ``/bots/{bot}/webhooks/<name>`` (and any the channel needs)."""
        ...

    async def start(self) -> None:
        """Called once the app has started (background work such as resolving the bot's identity)."""
        ...

    async def send(self, ref: ConversationRef, responses: Sequence[BotResponse]) -> None:
        """Push replies into a conversation outside a request (agent replies, late answers)."""
        ...

    async def aclose(self) -> None: ...


ChannelFactory = Callable[[Inbox], Channel]


@runtime_checkable
class Streaming(Protocol):
    """A channel that can show an answer while it is generated."""

    async def partial(self, ref: ConversationRef, message_id: str, text: str) -> None:
        """Show ``text`` (the answer so far) for ``message_id``; the final reply replaces it."""
        ...

"""What every channel implements. A connector is a thin adapter: verify, de-duplicate,
convert to ``UserMessage``, hand over to the runtime, send ``BotResponse`` back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from fastapi import APIRouter

from bots.types import BotResponse, ConversationRef

if TYPE_CHECKING:
    from bots.runtime import Runtime


class Channel(Protocol):
    name: str

    def router(self, runtime: Runtime) -> APIRouter:
        """Routes mounted under ``/bots/{bot}/webhooks/<name>`` (and any the channel needs)."""
        ...

    async def send(self, ref: ConversationRef, responses: Sequence[BotResponse]) -> None:
        """Push replies into a conversation outside a request (agent replies, late answers)."""
        ...

    async def aclose(self) -> None: ...

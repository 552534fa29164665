"""A transcript as the review UI shows it: the conversation's JSON (``Conversation.to_dict``), who
has it (bots.handoff's one rule) and the bot's intents and entities for corrections."""

from __future__ import annotations

from typing import Any

from bots.botspec import BotSpec
from bots.handoff import is_paused
from bots.store.base import Conversation


def transcript_payload(conversation: Conversation, spec: BotSpec | None) -> dict[str, Any]:
    """What the transcript page renders: summary, turns, whether a human has it, and the bot's intents."""
    return {
        **conversation.to_dict(),
        "paused": is_paused(conversation),
        "intents": sorted(spec.intents) if spec else [],
        "entities": sorted({e.entity for i in spec.intents.values() for ex in i.examples for e in ex.entities})
        if spec else [],
    }

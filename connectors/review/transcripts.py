"""Transcripts as the review UI shows them, and the changes agents make to a conversation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import HTTPException

from bots.botspec import BotSpec
from bots.corrections import CORRECTED_TAG
from bots.dialogue.engine import State
from bots.events import CORRECTION, PAUSE, RESTART, RESUME, SESSION_START, Event
from bots.store.base import Conversation, ConversationStore, SummaryUpdate, Turn
from bots.types import Entity

_PAUSE_KINDS = (PAUSE, RESUME, RESTART, SESSION_START)




def is_paused(conversation: Conversation) -> bool:
    """True while a human has the conversation (a pause not yet followed by a resume). When the
    turns given do not reach back to a pause or resume, the summary's handoff flag tells."""
    events = conversation.events
    if not any(e.kind in _PAUSE_KINDS for e in events):
        return conversation.summary.handoff
    return State.from_events(events).paused


def transcript_payload(conversation: Conversation, spec: BotSpec | None) -> dict[str, Any]:
    """What the transcript page renders: summary, turns, who has it, and the bot's intents."""
    return {
        "summary": conversation.summary.to_dict(),
        "turns": [t.to_dict() for t in conversation.turns],
        "paused": is_paused(conversation),
        "intents": sorted(spec.intents) if spec else [],
        "entities": sorted({e.entity for i in spec.intents.values() for ex in i.examples for e in ex.entities})
        if spec else [],
    }


async def load_or_404(store: ConversationStore, bot: str, conversation_id: str) -> Conversation:
    conversation = await store.load(bot, conversation_id)
    if conversation is None:
        raise HTTPException(404, f"no conversation {conversation_id!r} for bot {bot!r}")
    return conversation


def _user_turn(conversation: Conversation, seq: int) -> tuple[Turn, str]:
    for turn in conversation.turns:
        if turn.seq == seq:
            user = turn.user_event
            if user is None or not str(user.data.get("text", "")).strip():
                raise HTTPException(422, f"seq: turn {seq} has no customer text to correct")
            return turn, str(user.data["text"])
    raise HTTPException(422, f"seq: the conversation has no turn {seq}")


def checked_entities(text: str, entities: Sequence[Mapping[str, Any]]) -> list[Entity]:
    """Entities of a correction: each ``value`` must occur in the text; without ``start``/``end``
    its first occurrence (case-insensitive) is used."""
    out: list[Entity] = []
    for i, raw in enumerate(entities):
        name, value = str(raw.get("entity", "")).strip(), str(raw.get("value", "")).strip()
        if not name or not value:
            raise HTTPException(422, f"entities.{i}: both entity and value are required")
        start, end = raw.get("start"), raw.get("end")
        if isinstance(start, int) and isinstance(end, int):
            if not 0 <= start < end <= len(text):
                raise HTTPException(422, f"entities.{i}: {start}..{end} lies outside the message")
        else:
            at = text.lower().find(value.lower())
            if at < 0:
                raise HTTPException(422, f"entities.{i}: {value!r} does not occur in the message")
            start, end = at, at + len(value)
        if any(not (end <= e.start or start >= e.end) for e in out):
            raise HTTPException(422, f"entities.{i}: {value!r} overlaps another entity")
        out.append(Entity(name, value, start, end))
    return out


async def correct(store: ConversationStore, spec: BotSpec, conversation: Conversation, seq: int, intent: str,
                  entities: Sequence[Mapping[str, Any]], by: str) -> Turn:
    """Append a CORRECTION event for the customer's message at ``seq`` and tag the conversation."""
    if intent not in spec.intents:
        raise HTTPException(422, f"intent: {intent!r} is not an intent of bot {spec.name!r} "
                                 f"(known: {', '.join(sorted(spec.intents))})")
    _, text = _user_turn(conversation, seq)
    checked = checked_entities(text, entities)
    event = Event(CORRECTION, {"seq": seq, "intent": intent, "entities": [e.to_dict() for e in checked], "by": by})
    summary = conversation.summary
    return await store.append(spec.name, summary.conversation_id, [event],
                              SummaryUpdate(add_tags=(CORRECTED_TAG,)))

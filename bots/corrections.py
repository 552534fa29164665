"""Corrections made by support agents in the review UI, turned into training data.

An agent's fix of a message's intent or entities is stored as a ``correction`` event
``{"seq": <the customer's turn>, "intent": ..., "entities": [{entity, value, start, end}], "by": ...}``
(with ``"new_intent": true`` when the agent labelled it with an intent the bot does not have yet, a
name ``INTENT_NAME`` allows, and ``"handoff": true`` when the bot should have handed the customer to a
human there, which also tags the conversation ``should-hand-off``) and the conversation is tagged
``corrected`` (``correct``: what the review UI's route calls, raising ``InvalidChange`` for a correction
that cannot be made). ``corrections_document`` turns the latest
correction of every message into a training-data file, in one of two ``FORMATS``:

* ``switchboard``: what ``switchboard train`` reads (``BOT_DIR/corrections.yml``, or ``--data``),
  Rasa's NLU layout with bot.yml's annotation syntax::

      # Corrections exported from the review UI for bot 'shop'. ...
      version: "3.1"
      nlu:
      - intent: cancel_order
        examples:
        - please cancel [123](order_id) now
        - stop that purchase

* ``rasa``: a Rasa 3 ``nlu.yml`` (``examples: |`` blocks, ``[text]{"entity": ..., "value": ...}``
  where the value differs from the text), for a Rasa project.

A new intent is exported like the others and named in the file's header: ``switchboard train`` refuses
an intent the bot does not declare (at its file:line), so it is added to bot.yml with a response first.

Nothing is written into the bot folder: it is the served, often read-only, source of the bot. The
review UI hands the file over as a download; ``export_corrections`` (the CLI) writes the path it is
given, by default under the data dir (``export_path``), 0600. Exporting again to the same file merges:
a message corrected again gets its latest label, examples exported earlier (whose conversations
may have expired since) are kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bots.botspec import BotSpec, parse_example
from bots.errors import ConfigError, InvalidChange
from bots.events import CORRECTION, Event
from bots.files import write_private
from bots.store.base import Conversation, ConversationStore, SummaryUpdate, TranscriptQuery, Turn, load_existing
from bots.types import Entity

CORRECTED_TAG = "corrected"
MISSED_HANDOFF_TAG = "should-hand-off"
INTENT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")  # a new intent's name (bot.yml and Rasa alike)
CORRECTIONS_FILE = "corrections.yml"
FORMATS = ("switchboard", "rasa")
_PAGE = 200


@dataclass(frozen=True)
class CorrectedExample:
    text: str
    intent: str
    entities: tuple[Entity, ...] = ()
    source: str = ""  # "<conversation id>#<seq>" or the file it was read from
    new_intent: bool = False  # the agent labelled it with an intent the bot did not have


@dataclass(frozen=True)
class ExportResult:
    path: Path
    written: int  # examples in the file
    new: int  # examples taken from the store this time
    skipped: tuple[str, ...]  # corrections that could not be written, each with the reason


@dataclass(frozen=True)
class CorrectionsDocument:
    text: str  # the file's content
    written: int
    new: int
    skipped: tuple[str, ...]

    @staticmethod
    def filename(bot: str, fmt: str) -> str:
        """What the file is called: ``corrections.yml`` is what ``switchboard train`` picks up in a bot folder."""
        return CORRECTIONS_FILE if fmt == "switchboard" else f"{bot}-nlu.yml"


def export_path(data_dir: Path, bot: str, fmt: str = "switchboard") -> Path:
    """Where ``switchboard export-corrections`` writes without ``--output``: under the data dir."""
    return data_dir / "exports" / bot / CorrectionsDocument.filename(bot, fmt)


def corrections_in(conversation: Conversation) -> list[CorrectedExample]:
    """The latest correction of each customer message of one conversation, in turn order."""
    texts: dict[int, str] = {}
    for turn in conversation.turns:
        user = turn.user_event
        if user is not None:
            texts[turn.seq] = str(user.data.get("text", ""))
    latest: dict[int, dict[str, Any]] = {}
    for event in conversation.events:
        if event.kind == CORRECTION and isinstance(event.data.get("seq"), int):
            latest[int(event.data["seq"])] = event.data
    found = []
    for seq in sorted(latest):
        if seq not in texts or not texts[seq].strip():
            continue
        data = latest[seq]
        entities = tuple(Entity.from_dict(e) for e in data.get("entities") or ())
        found.append(CorrectedExample(texts[seq], str(data.get("intent", "")), entities,
                                      f"{conversation.summary.conversation_id}#{seq}", bool(data.get("new_intent"))))
    return found


async def collect_corrections(store: ConversationStore, bot: str) -> list[CorrectedExample]:
    """Every corrected message of the bot's stored conversations (found by the ``corrected`` tag)."""
    found: list[CorrectedExample] = []
    offset = 0
    while True:
        page = await store.search(TranscriptQuery(bot=bot, tag=CORRECTED_TAG, sort="started_at", descending=False,
                                                  offset=offset, limit=_PAGE))
        for summary in page.items:
            conversation = await store.load(bot, summary.conversation_id)
            if conversation is not None:
                found.extend(corrections_in(conversation))
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return found


def checked_entities(text: str, entities: Sequence[Mapping[str, Any]]) -> list[Entity]:
    """Entities of a correction: each ``value`` must occur in the text; without ``start``/``end``
    its first occurrence (case-insensitive) is used. ``InvalidChange`` names the entity and the reason."""
    out: list[Entity] = []
    for i, raw in enumerate(entities):
        name, value = str(raw.get("entity", "")).strip(), str(raw.get("value", "")).strip()
        if not name or not value:
            raise InvalidChange(f"entities.{i}: both entity and value are required")
        start, end = raw.get("start"), raw.get("end")
        if isinstance(start, int) and isinstance(end, int):
            if not 0 <= start < end <= len(text):
                raise InvalidChange(f"entities.{i}: {start}..{end} lies outside the message")
        else:
            at = text.lower().find(value.lower())
            if at < 0:
                raise InvalidChange(f"entities.{i}: {value!r} does not occur in the message")
            start, end = at, at + len(value)
        if any(not (end <= e.start or start >= e.end) for e in out):
            raise InvalidChange(f"entities.{i}: {value!r} overlaps another entity")
        out.append(Entity(name, value, start, end))
    return out


def _customer_text(conversation: Conversation, seq: int) -> str:
    for turn in conversation.turns:
        if turn.seq == seq:
            user = turn.user_event
            if user is None or not str(user.data.get("text", "")).strip():
                raise InvalidChange(f"seq: turn {seq} has no customer text to correct")
            return str(user.data["text"])
    raise InvalidChange(f"seq: the conversation has no turn {seq}")


async def correct(store: ConversationStore, spec: BotSpec, conversation_id: str, seq: int, intent: str,
                  entities: Sequence[Mapping[str, Any]], by: str, *, new_intent: bool = False,
                  handoff: bool = False) -> Turn:
    """An agent's correction of the customer's message at ``seq``: a ``correction`` event, and the
    conversation tagged ``corrected`` (and ``should-hand-off`` with ``handoff``). ``new_intent``: the agent
    means an intent the bot does not have yet (validated name). ``ConversationNotFound``, or
    ``InvalidChange`` naming the field."""
    conversation = await load_existing(store, spec.name, conversation_id)
    new_intent = new_intent and intent not in spec.intents
    if new_intent and not INTENT_NAME.match(intent):
        raise InvalidChange(f"intent: {intent[:70]!r}: a new intent's name starts with a letter and has only "
                            "letters, digits and '_' (at most 64)")
    if not new_intent and intent not in spec.intents:
        raise InvalidChange(f"intent: {intent!r} is not an intent of bot {spec.name!r} "
                            f"(known: {', '.join(sorted(spec.intents))}); to add it, mark it as a new intent")
    checked = checked_entities(_customer_text(conversation, seq), entities)
    data: dict[str, Any] = {"seq": seq, "intent": intent, "entities": [e.to_dict() for e in checked], "by": by}
    if new_intent:
        data["new_intent"] = True
    if handoff:
        data["handoff"] = True
    tags = (CORRECTED_TAG, MISSED_HANDOFF_TAG) if handoff else (CORRECTED_TAG,)
    return await store.append(spec.name, conversation_id, [Event(CORRECTION, data)], SummaryUpdate(add_tags=tags))


def annotate(text: str, entities: Sequence[Entity]) -> str:
    """``please cancel 123`` + order_id@14..17 → ``please cancel [123](order_id)``."""
    parts: list[str] = []
    pos = 0
    for e in sorted(entities, key=lambda e: e.start):
        if e.start < pos or not 0 <= e.start < e.end <= len(text):
            raise ValueError(f"entity {e.entity!r} at {e.start}..{e.end} overlaps another or lies outside the text")
        shown = text[e.start:e.end]
        label = e.entity if shown == e.value else f"{e.entity}:{e.value}"
        parts += [text[pos:e.start], f"[{shown}]({label})"]
        pos = e.end
    parts.append(text[pos:])
    return "".join(parts)


def one_line(text: str, entities: Sequence[Entity]) -> tuple[str, tuple[Entity, ...]]:
    """The message on one line with single spaces (an example line of bot.yml; the model's tokenizer
    reads it alike), its entities' offsets moved with it."""
    out: list[str] = []
    moved = [0] * (len(text) + 1)  # old offset -> new offset
    for i, ch in enumerate(text):
        moved[i] = len(out)
        if not ch.isspace():
            out.append(ch)
        elif out and not out[-1].isspace() and any(not c.isspace() for c in text[i:]):
            out.append(" ")
    moved[len(text)] = len(out)
    squeezed = "".join(out)
    shifted = []
    for e in entities:
        start, end = moved[e.start], moved[e.end]
        while end > start and squeezed[end - 1] == " ":
            end -= 1
        shifted.append(Entity(e.entity, e.value, start, end))
    return squeezed, tuple(shifted)


def _check(example: CorrectedExample, spec: BotSpec) -> str:
    """The annotated example line; ValueError with the reason if it cannot be written faithfully."""
    if example.intent not in spec.intents and not (example.new_intent and INTENT_NAME.match(example.intent)):
        raise ValueError(f"intent {example.intent!r} is not an intent of bot {spec.name!r}")
    text, entities = one_line(example.text, example.entities)
    line = annotate(text, entities)
    back = parse_example(line)
    wanted = sorted((e.entity, e.value, e.start, e.end) for e in entities)
    if back.text != text or sorted((e.entity, e.value, e.start, e.end) for e in back.entities) != wanted:
        raise ValueError("the message contains [text](name) markup that bot.yml would read as an entity")
    return line


def read_corrections(path: Path) -> list[tuple[str, str]]:
    """(intent, annotated example in bot.yml's syntax) pairs of an existing corrections file, in either format."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the corrections file ({exc}); move it away and export again") from exc
    pairs = []
    for item in (data or {}).get("nlu") or []:
        if not isinstance(item, dict) or not isinstance(item.get("intent"), str):
            continue
        raw = item.get("examples") or []
        lines = ([x.strip()[2:] for x in raw.splitlines() if x.strip().startswith("- ")] if isinstance(raw, str)
                 else [str(x) for x in raw if isinstance(x, str | int)])
        for line in lines:
            try:
                example = parse_example(line)
            except ValueError as exc:
                raise ConfigError(f"{path}: {line!r}: {exc}; move the file away and export again") from None
            pairs.append((item["intent"], annotate(example.text, example.entities)))
    return pairs


class _Block(str):
    """A string written as a YAML literal block (``|``), as Rasa writes ``examples``."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_Block, lambda dumper, data: dumper.represent_scalar("tag:yaml.org,2002:str", str(data),
                                                                              style="|"))


def _rasa_line(line: str) -> str:
    """bot.yml's ``[shown](entity:value)`` as Rasa 3 writes it, ``[shown]{"entity": ..., "value": ...}``."""
    example = parse_example(line)
    parts: list[str] = []
    pos = 0
    for e in sorted(example.entities, key=lambda e: e.start):
        shown = example.text[e.start:e.end]
        label = (f"({e.entity})" if shown == e.value
                 else json.dumps({"entity": e.entity, "value": e.value}, ensure_ascii=False))
        parts += [example.text[pos:e.start], f"[{shown}]{label}"]
        pos = e.end
    parts.append(example.text[pos:])
    return "".join(parts)


def render(bot: str, pairs: Iterable[tuple[str, str]], fmt: str = "switchboard", skipped: Sequence[str] = (),
           new_intents: Sequence[str] = ()) -> str:
    """The file of ``(intent, example line)`` pairs; ``new_intents`` (not in the bot yet) and the corrections
    that could not be written (each with the reason) are listed in its header."""
    by_intent: dict[str, list[str]] = {}
    for intent, line in pairs:
        by_intent.setdefault(intent, []).append(line)
    if fmt == "rasa":
        nlu: list[dict[str, Any]] = [
            {"intent": i, "examples": _Block("".join(f"- {_rasa_line(x)}\n" for x in by_intent[i]))}
            for i in sorted(by_intent)]
        header = (f"# Corrections exported from Switchboard's review UI for bot {bot!r}: Rasa 3 NLU data.\n")
    else:
        nlu = [{"intent": i, "examples": by_intent[i]} for i in sorted(by_intent)]
        header = (f"# Corrections exported from the review UI for bot {bot!r}.\n"
                  "# Rasa NLU format with bot.yml's [value](entity) annotations; train with them: save as\n"
                  "# BOT_DIR/corrections.yml (merged by `switchboard train BOT_DIR`), or pass --data FILE.\n"
                  "# Re-exporting to the same file merges: the latest label of a message wins.\n")
    for intent in new_intents:
        header += (f"# new intent {intent!r}: add it to the bot (bot.yml, with a response) before training; "
                   "`switchboard train` refuses an intent the bot does not declare\n")
    for reason in skipped:
        header += "# skipped " + " ".join(reason.split()) + "\n"
    body = yaml.dump({"version": "3.1", "nlu": nlu}, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     width=10_000)
    return header + body


def corrections_document(spec: BotSpec, examples: Sequence[CorrectedExample], fmt: str = "switchboard",
                         previous: Sequence[tuple[str, str]] = ()) -> CorrectionsDocument:
    """The training-data file of ``examples`` (merged over ``previous`` pairs of an earlier export)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (use {' or '.join(FORMATS)})")
    merged: dict[str, tuple[str, str]] = {}  # plain text (case-folded) -> (intent, line)
    for intent, line in previous:
        merged[" ".join(parse_example(line).text.lower().split())] = (intent, line)
    skipped: list[str] = []
    new = 0
    for example in examples:
        try:
            line = _check(example, spec)
        except ValueError as exc:
            skipped.append(f"{example.source}: {exc}")
            continue
        merged[" ".join(example.text.lower().split())] = (example.intent, line)
        new += 1
    new_intents = sorted({intent for intent, _ in merged.values()} - set(spec.intents))
    text = render(spec.name, merged.values(), fmt, skipped, new_intents)
    return CorrectionsDocument(text, len(merged), new, tuple(skipped))


def export_corrections(spec: BotSpec, examples: Sequence[CorrectedExample], path: Path, fmt: str = "switchboard"
                       ) -> ExportResult:
    """Merge ``examples`` into the file at ``path`` (created 0600, in 0700 folders, if missing); returns
    what happened. ``path`` is the caller's choice: never the bot folder by default."""
    previous = read_corrections(path) if path.exists() else []
    document = corrections_document(spec, examples, fmt, previous)
    write_private(path, document.text)
    return ExportResult(path, document.written, document.new, document.skipped)

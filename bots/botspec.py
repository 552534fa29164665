"""A bot is a folder with ``bot.yml``. This module loads and validates it.

```yaml
name: support
fallback_threshold: 0.45        # optional: overrides the model's calibrated out-of-scope point (bots/nlu/oos.py)
multi_intent: true              # optional (default true): "cancel order 12345 and also update my email" is read
                                # as two requests, the second offered after the first (bots/nlu/multi.py)
channels: [web, slack, telegram]
intents:
  cancel_order:
    title: Cancel an order      # what a "Did you mean ...?" button shows (default: "Cancel order")
    suggest: true               # false: never offered by "Did you mean ...?" (small talk, out of scope)
    examples:
      - I want to cancel order [123](order_id)
      - cancel my purchase
    response:                   # one text, or variants: the first whose {entities} are all known
      - "Order {order_id} is being cancelled."
      - "Which order would you like to cancel?"
      - text: "Which order?"    # a variant may carry buttons, image, attachment, custom (_rich_response)
        buttons: [{title: My last order, payload: /cancel_order}]
```

Every problem is reported with ``file:line`` and what to fix, all at once. bot.yml is read as
YAML 1.2, as Rasa reads its files (bots/yamlspan.py): an intent ``yes:`` is "yes" and
``response: no`` says "no"; YAML 1.1 once made them ``True`` and ``False``.

A bot folder may instead be a Rasa 3.x project, or bot.yml may point at Rasa files with
``rasa:`` (then ``intents`` may be left out): bots/loader.py chooses, and
bots/dialogue/rasa_project.py reads the Rasa files into this same ``BotSpec``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from bots.errors import ConfigError
from bots.nlu.sentiment import Frustration
from bots.types import Entity
from bots.yamlspan import Located, load_located, plain

KNOWN_CHANNELS = ("web", "slack", "telegram")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Rasa annotations: [value](entity), [value](entity:normalised) (Rasa 1),
# [value]{"entity": "x", "value": "normalised", "role": "r", "group": "g"} (Rasa 2+) and
# [value][{"entity": "x"}, {"entity": "y", "role": "r"}] (several entities on one span).
_ANNOTATION = re.compile(r"\[(?P<text>[^\[\]]+)\](?:\((?P<paren>[^()]+)\)|(?P<json>\{[^{}]*\})"
                         r"|\[(?P<list>\{[^\[\]]*\})\])")
# ``{slot}`` in a response; names may hold '-' (``{amount-of-money}``) and dots between their parts
# (``{fromloc.city_name}``, ATIS-style slots named after their entities), as Rasa's interpolation reads them
# (rasa/core/nlg/interpolator.py rewrites ``{name}`` to ``{0[name]}`` precisely so that dotted names work).
# ``{{`` and ``}}`` are a literal brace, as in Rasa's (str.format) interpolation: a button payload
# '/inform{{"size": "large"}}' is sent as /inform{"size": "large"}. One left-to-right scan reads both.
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)\}")

# Sections validated elsewhere (dialogue engine, answers, training) but allowed here.
_SECTIONS = {
    "name", "description", "language", "fallback_threshold", "channels", "intents",
    "synonyms", "training", "slots", "forms", "rules", "actions", "action_endpoint",
    "session_expiry_minutes", "answers", "knowledge_base", "retention_days", "pii", "rasa", "welcome", "handoff",
    "frustration", "multi_intent",
}


@dataclass(frozen=True)
class Example:
    """A training example: plain text plus entity spans (character offsets)."""

    text: str
    entities: tuple[Entity, ...] = ()
    where: str = ""   # file:line of the example (bot.yml, Rasa nlu files); "" when made in code


@dataclass(frozen=True)
class Intent:
    name: str
    examples: tuple[Example, ...]
    responses: tuple[str, ...]
    line: int = 0
    # Each response variant's rich parts, in the order of ``responses`` (an empty mapping for plain text;
    # empty when no variant has any): ``buttons`` (``{"title", "payload"}`` or ``{"title", "url"}``),
    # ``image``, ``attachment``, ``custom`` (``_rich_response``).
    rich: tuple[Mapping[str, Any], ...] = ()
    # What a button offering this intent shows ("Did you mean ...?"): ``title:`` in bot.yml; None: the name
    # written as words (``shown``).
    title: str | None = None
    # Offered by "Did you mean ...?" when the NLU ranks it high (``suggest:`` in bot.yml): a bot turns it off
    # for intents a button would not help with ("Say hello", "Something else").
    suggest: bool = True

    @property
    def shown(self) -> str:
        """The intent as a customer reads it on a button."""
        return self.title or self.name.replace("_", " ").strip().capitalize()


@dataclass(frozen=True)
class PipelineComponent:
    """One NLU component a Rasa ``config.yml`` names (``- name: DucklingEntityExtractor``) with its
    options, kept for the components Switchboard runs itself (extractors: bots/nlu/)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    where: str = ""


@dataclass(frozen=True)
class BotSpec:
    name: str
    directory: Path
    intents: dict[str, Intent]
    # Set: below this confidence the bot does not understand, instead of the artifact's calibrated operating
    # point (an explicit override, bots/nlu/oos.py). None: the calibrated point decides.
    fallback_threshold: float | None = None
    # A message that asks for two things is read as two (bots/nlu/multi.py); a Rasa project never is.
    multi_intent: bool = True
    channels: tuple[str, ...] = ("web",)
    description: str = ""
    synonyms: dict[str, str] = field(default_factory=dict)  # variant (lower-case) -> canonical
    # Later sections keep their located YAML so their own validators can point at lines.
    sections: dict[str, Located] = field(default_factory=dict)
    # The file the bot is defined by, relative to ``directory`` (a Rasa project: its domain).
    source: str = "bot.yml"
    # Rasa NLU data: ``regex:`` and ``lookup:`` tables by name (the entity they extract, for
    # RegexEntityExtractor), with the NLU components config.yml lists.
    regexes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    lookups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    pipeline: tuple[PipelineComponent, ...] = ()
    # How many of ``pipeline`` a Rasa config.yml lists before the component whose entities Switchboard's model
    # gives (DIETClassifier, CRFEntityExtractor): the model's entities join the message's there (0: first).
    model_entities_at: int = 0
    # A Rasa project folder (config.yml decides its NLU settings): trained on every example, as ``rasa
    # train`` does, since its fallback threshold, not a calibrated point, decides (training/cli.py).
    rasa_project: bool = False
    # What loading noticed without refusing the bot (``file:line: not supported: ...``); shown by
    # ``switchboard check`` and ``train``, logged by ``serve``.
    notes: tuple[str, ...] = ()

    @property
    def two_requests(self) -> bool:
        """Whether a message that asks for two things is read as two (bots/nlu/multi.py): ``multi_intent``, never for
        a Rasa project, whose stories decide every message it says. The one rule serve, evaluate and the dialogue
        follow."""
        return self.multi_intent and not self.rasa_project

    @property
    def file(self) -> Path:
        return self.directory / self.source

    @property
    def models_dir(self) -> Path:
        return self.directory / "models"

    def section(self, key: str, default: Any = None) -> Any:
        item = self.sections.get(key)
        return default if item is None else plain(item)


def parse_example(raw: str) -> Example:
    """``I want to cancel [123](order_id)`` → text without markup + entity offsets."""
    text_parts: list[str] = []
    entities: list[Entity] = []
    pos = 0
    length = 0
    for m in _ANNOTATION.finditer(raw):
        before = raw[pos:m.start()]
        text_parts.append(before)
        length += len(before)
        shown = m.group("text")
        found: list[tuple[str, str, str | None, str | None]] = []  # entity, value, role, group
        if m.group("paren") is not None:
            entity, _, normalised = m.group("paren").partition(":")
            found.append((entity, normalised or shown, None, None))
        else:
            raw_json = m.group("json") if m.group("json") is not None else f"[{m.group('list')}]"
            try:
                meta = json.loads(raw_json)
            except json.JSONDecodeError:
                raise ValueError(f"entity annotation {raw_json} is not valid JSON") from None
            for item in meta if isinstance(meta, list) else [meta]:
                if not isinstance(item, dict) or not isinstance(item.get("entity"), str):
                    raise ValueError(f'entity annotation {raw_json} needs an "entity" key')
                unknown = sorted(set(item) - {"entity", "value", "role", "group"})
                if unknown:
                    raise ValueError(f"entity annotation {raw_json}: unknown key(s) {', '.join(unknown)} "
                                     f"(entity, value, role, group)")
                role, group = item.get("role"), item.get("group")
                found.append((item["entity"], str(item.get("value", shown)),
                               None if role is None else str(role), None if group is None else str(group)))
        for entity, value, role, group in found:
            entity = entity.strip()
            if not entity:
                raise ValueError(f"entity annotation [{shown}] has no entity name")
            entities.append(Entity(entity=entity, value=value, start=length, end=length + len(shown),
                                   role=role, group=group))
        text_parts.append(shown)
        length += len(shown)
        pos = m.end()
    text_parts.append(raw[pos:])
    return Example(text="".join(text_parts), entities=tuple(entities))


def placeholders(template: str) -> set[str]:
    return {m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(1)}


def fill_template(variants: tuple[str, ...] | list[str], values: Mapping[str, str]) -> str | None:
    """The first variant whose placeholders are all known, filled; ``None`` if none is."""
    for variant in variants:
        if placeholders(variant) <= values.keys():
            return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]) if m.group(1) else m.group(0)[0], variant)
    return None


def _quote_hint(value: Any) -> str:
    """Why a YAML boolean is not text, and the fix: ``true``/``false`` are booleans, quoted they are words."""
    if isinstance(value, bool):
        word = "true" if value else "false"
        return f" (YAML reads {word} as a boolean: write it in quotes, \"{word}\", to mean the word)"
    return ""


def block_examples(item: Located) -> list[tuple[int, str | None]]:
    """Rasa's block string of examples (``examples: |`` and ``- `` lines) split as Rasa's reader splits it
    (RasaYAMLReader._parse_multiline_example): for each line that is not blank, its line number and its
    example (the text after the leading ``-``, stripped; empty for a lone ``-``), or None when the line does
    not start with ``-`` (Rasa skips it). The one splitter of bot.yml's and the Rasa data files' examples
    (bots/dialogue/rasa_yaml.example_lines); each says what a skipped or empty line is."""
    first = item.line + 1  # a block scalar's text starts on the line after "examples: |"
    out: list[tuple[int, str | None]] = []
    for offset, raw in enumerate(str(item.value).splitlines()):
        stripped = raw.strip()
        if stripped:
            out.append((first + offset, stripped[1:].strip() if stripped.startswith("-") else None))
    return out


def _examples_of(item: Located, problems: list[str], intent: str) -> list[tuple[str, int]]:
    """Examples as a YAML list or as Rasa's block string of ``- `` lines."""
    if isinstance(item.value, str):
        lines = []
        for line, text in block_examples(item):
            if text is None:  # bot.yml has no notes: a line Rasa would skip is refused, never dropped unsaid
                problems.append(f"{item.file}:{line}: intent {intent!r}: example lines must start with '- '")
            elif not text:
                problems.append(f"{item.file}:{line}: intent {intent!r}: empty example")
            else:
                lines.append((text, line))
        return lines
    if isinstance(item.value, list):
        out = []
        for x in item.value:
            if not isinstance(x.value, str | int | float) or isinstance(x.value, bool) or not str(x.value).strip():
                problems.append(f"{x.where()}: intent {intent!r}: each example must be non-empty text"
                                + _quote_hint(x.value))
                continue
            out.append((str(x.value).strip(), x.line))
        return out
    problems.append(f"{item.where()}: intent {intent!r}: 'examples' must be a list of texts")
    return []


def _parse_intent(name: str, item: Located, problems: list[str]) -> Intent | None:
    if not _NAME.match(name):
        problems.append(f"{item.where()}: intent name {name!r} must be letters, digits, '_', '-' or '.'")
        return None
    if not isinstance(item.value, dict):
        problems.append(f"{item.where()}: intent {name!r} must be a mapping with 'examples' and 'response'")
        return None
    fields: dict[str, Located] = item.value
    for key, located in fields.items():
        if key not in ("examples", "response", "title", "suggest"):
            problems.append(f"{located.where()}: intent {name!r}: unknown key {key!r} "
                            f"(expected examples, response, title, suggest)")
    suggest = True
    if "suggest" in fields:
        flag = fields["suggest"]
        if not isinstance(flag.value, bool):
            problems.append(f"{flag.where()}: intent {name!r}: 'suggest' must be true or false (whether \"Did you "
                            f"mean ...?\" may offer it)")
        else:
            suggest = flag.value
    title: str | None = None
    if "title" in fields:
        t = fields["title"]
        if not isinstance(t.value, str) or not t.value.strip():
            problems.append(f"{t.where()}: intent {name!r}: 'title' must be non-empty text (what a button shows)"
                            + _quote_hint(t.value))
        else:
            title = " ".join(t.value.split())
    examples: list[Example] = []
    if "examples" not in fields:
        problems.append(f"{item.where()}: intent {name!r} has no 'examples'")
    else:
        for raw, line in _examples_of(fields["examples"], problems, name):
            try:
                examples.append(replace(parse_example(raw), where=f"{item.file}:{line}"))
            except ValueError as exc:
                problems.append(f"{item.file}:{line}: {exc}")
        if not examples and isinstance(fields["examples"].value, list | str):
            problems.append(f"{fields['examples'].where()}: intent {name!r} needs at least one example")
    responses: list[str] = []
    rich: dict[int, Mapping[str, Any]] = {}  # variant index → its rich parts
    if "response" in fields:
        r = fields["response"]
        raw_list = r.value if isinstance(r.value, list) else [r]
        for x in raw_list:
            if isinstance(x.value, dict):  # a variant with buttons, image, attachment, custom
                variant = _rich_response(x, f"intent {name!r}", problems)
                if variant is not None:
                    rich[len(responses)] = variant[1]
                    responses.append(variant[0])
                continue
            if not isinstance(x.value, str) or not x.value.strip():
                problems.append(f"{x.where()}: intent {name!r}: a response must be non-empty text"
                                + _quote_hint(x.value))
            else:
                responses.append(x.value)
    return Intent(name=name, examples=tuple(examples), responses=tuple(responses), line=item.line,
                  rich=tuple(rich.get(i, {}) for i in range(len(responses))) if rich else (), title=title,
                  suggest=suggest)



# How a rule's ``answer:`` (dialogue) and ``answers.intents`` (training/answers_config.py) find an answer: one list
# for both (docs/answers.md); bots.answers.retrieval implements them.
AnswerKind = Literal["template", "knowledge", "retrieval", "generation"]
ANSWER_KINDS: tuple[str, ...] = ("template", "knowledge", "retrieval", "generation")

_RICH_KEYS = ("text", "buttons", "image", "attachment", "custom")
_URL = re.compile(r"^https?://[^\s/?#@]+(?:[/?#]\S*)?$|^data:image/(png|jpeg|gif|webp);base64,", re.IGNORECASE)


def _rich_response(item: Located, what: str, problems: list[str]) -> tuple[str, Mapping[str, Any]] | None:
    """A response variant written as a mapping: ``text`` and its rich parts (docs/channels.md)::

        - text: Here is our menu.
          image: https://example.com/menu.png        # http(s) (or a data:image/... URL)
          attachment: https://example.com/menu.pdf
          buttons:
            - {title: Order a pizza, payload: '/order{"dish": "pizza"}'}
            - {title: Opening hours, url: https://example.com/hours}
          custom: {kind: menu}                        # JSON for the channel (the web page's event, ...)
    """
    fields: dict[str, Located] = item.value
    count = len(problems)
    for key, value in fields.items():
        if key not in _RICH_KEYS:
            problems.append(f"{value.where()}: {what}: unknown response key {key!r} (expected {', '.join(_RICH_KEYS)})")
    text = fields.get("text")
    if text is None or not isinstance(text.value, str) or not text.value.strip():
        problems.append(f"{(text or item).where()}: {what}: a response needs 'text' (non-empty)")
    rich: dict[str, Any] = {}
    for key in ("image", "attachment"):
        if key in fields:
            value = fields[key].value
            if not isinstance(value, str) or not _URL.match(value):
                problems.append(f"{fields[key].where()}: {what}: '{key}' must be an http(s) URL (or a "
                                "data:image/png|jpeg|gif|webp;base64 URL)")
            else:
                rich[key] = value
    if "custom" in fields:
        if not isinstance(fields["custom"].value, dict):
            problems.append(f"{fields['custom'].where()}: {what}: 'custom' must be a mapping (sent to the channel "
                            "as JSON)")
        else:
            rich["custom"] = plain(fields["custom"])
    if "buttons" in fields:
        buttons = fields["buttons"]
        if not isinstance(buttons.value, list) or not buttons.value:
            problems.append(f"{buttons.where()}: {what}: 'buttons' must be a list of {{title, payload}} or "
                            "{title, url}")
        else:
            rich["buttons"] = [b for b in (_rich_button(x, what, problems) for x in buttons.value) if b]
    if len(problems) > count or text is None:
        return None
    return str(text.value), rich


def _rich_button(item: Located, what: str, problems: list[str]) -> dict[str, str] | None:
    fields = item.value if isinstance(item.value, dict) else None
    if fields is None or set(fields) - {"title", "payload", "url"}:
        problems.append(f"{item.where()}: {what}: a button is a mapping of title with payload or url")
        return None
    title, payload, url = (fields[k].value if k in fields else None for k in ("title", "payload", "url"))
    if not isinstance(title, str) or not title.strip():
        problems.append(f"{item.where()}: {what}: a button needs a 'title' (text)")
        return None
    if (payload is None) == (url is None):
        problems.append(f"{item.where()}: {what}: the button {title!r} needs a 'payload' (sent back when clicked) "
                        "or a 'url' (a link), one of them")
        return None
    if url is not None and (not isinstance(url, str) or not url.lower().startswith(("http://", "https://"))
                            or not _URL.match(url)):
        problems.append(f"{fields['url'].where()}: {what}: the button {title!r}: 'url' must be an http(s) URL")
        return None
    if payload is not None and (not isinstance(payload, str) or not payload.strip()):
        problems.append(f"{fields['payload'].where()}: {what}: the button {title!r}: 'payload' must be text, "
                        "e.g. '/order{\"dish\": \"pizza\"}'")
        return None
    return {"title": title, "payload": payload or "", **({"url": url} if url else {})}


def mapping_section(sections: Mapping[str, Located], key: str, what: str, problems: list[str]) -> dict[str, Located]:
    """The entries of the mapping section ``key`` (none where it is absent); a section that is not a mapping
    is a problem (``'key' must map <what>``) and gives none."""
    if key not in sections:
        return {}
    section = sections[key]
    if not isinstance(section.value, dict):
        problems.append(f"{section.where()}: {key!r} must map {what}")
        return {}
    return section.value


def load_bot(directory: Path | str) -> BotSpec:
    """Load ``DIR/bot.yml``; raise ConfigError listing every problem as ``file:line: ...``."""
    directory = Path(directory)
    path = directory / "bot.yml"
    if not directory.is_dir():
        raise ConfigError(f"{directory}: not a bot folder (expected a folder containing bot.yml)")
    root = load_located(path, yaml12=True)  # YAML 1.2 scalars (bots/yamlspan.py): `no` is text
    return parse_bot(root, directory)


def parse_bot(root: Located, directory: Path) -> BotSpec:
    problems: list[str] = []
    if not isinstance(root.value, dict):
        raise ConfigError(f"{root.where()}: bot.yml must be a mapping with name, intents, ...")
    top: dict[str, Located] = root.value
    for key, item in top.items():
        if key not in _SECTIONS:
            problems.append(f"{item.where()}: unknown key {key!r} (known: {', '.join(sorted(_SECTIONS))})")

    name = ""
    if "name" not in top:
        problems.append(f"{root.file}:1: missing 'name' (the bot's id, e.g. name: support)")
    elif not isinstance(top["name"].value, str) or not _NAME.match(top["name"].value):
        problems.append(f"{top['name'].where()}: 'name' must be letters, digits, '_', '-' or '.' (max 64)")
    else:
        name = top["name"].value

    threshold: float | None = None
    if "fallback_threshold" in top:
        t = top["fallback_threshold"]
        if isinstance(t.value, bool) or not isinstance(t.value, int | float) or not 0.0 <= t.value <= 1.0:
            problems.append(f"{t.where()}: 'fallback_threshold' must be a number between 0 and 1")
        else:
            threshold = float(t.value)

    multi_intent = True
    if "multi_intent" in top:
        m = top["multi_intent"]
        if not isinstance(m.value, bool):
            problems.append(f"{m.where()}: 'multi_intent' must be true or false")
        else:
            multi_intent = m.value

    if "retention_days" in top:
        r = top["retention_days"]
        if isinstance(r.value, bool) or not isinstance(r.value, int | float) or r.value <= 0:
            problems.append(f"{r.where()}: 'retention_days' must be a positive number of days (or leave it out "
                            "to keep conversations forever)")

    channels: tuple[str, ...] = ("web",)
    if "channels" in top:
        c = top["channels"]
        if not isinstance(c.value, list) or not c.value:
            problems.append(f"{c.where()}: 'channels' must be a non-empty list of {', '.join(KNOWN_CHANNELS)}")
        else:
            found = []
            for x in c.value:
                if x.value not in KNOWN_CHANNELS:
                    problems.append(f"{x.where()}: unknown channel {x.value!r} (use {', '.join(KNOWN_CHANNELS)})")
                else:
                    found.append(x.value)
            channels = tuple(found)

    synonyms: dict[str, str] = {}
    for canonical, variants in mapping_section(top, "synonyms", "a canonical value to a list of variants",
                                               problems).items():
        if not isinstance(variants.value, list):
            problems.append(f"{variants.where()}: synonyms of {canonical!r} must be a list")
            continue
        for v in variants.value:
            synonyms[str(v.value).lower()] = canonical

    intents: dict[str, Intent] = {}
    if "intents" not in top and "rasa" in top:
        pass  # the intents come from the Rasa files bot.yml points at (bots/loader.py)
    elif "intents" not in top:
        problems.append(f"{root.file}:1: missing 'intents' (a mapping of intent name to examples and response)")
    elif not isinstance(top["intents"].value, dict) or not top["intents"].value:
        problems.append(f"{top['intents'].where()}: 'intents' must be a non-empty mapping of intent names")
    else:
        for intent_name, item in top["intents"].value.items():
            intent = _parse_intent(intent_name, item, problems)
            if intent is not None:
                intents[intent_name] = intent
        if len(intents) < 2 and not problems:
            problems.append(f"{top['intents'].where()}: a bot needs at least two intents to classify")

    Frustration.parse(top.get("frustration"), problems)  # an angry customer's hand-off (bots/nlu/sentiment.py)

    if problems:
        raise ConfigError(problems)
    sections = {k: v for k, v in top.items() if k not in ("name", "fallback_threshold", "channels", "intents",
                                                          "synonyms", "description", "multi_intent")}
    description = top["description"].value if "description" in top else ""
    return BotSpec(
        name=name,
        directory=directory,
        intents=intents,
        fallback_threshold=threshold,
        channels=channels,
        description=str(description or ""),
        synonyms=synonyms,
        sections=sections,
        multi_intent=multi_intent,
    )

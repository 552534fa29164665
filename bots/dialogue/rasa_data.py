"""Rasa 3.x training data files: ``nlu:``, ``stories:`` and ``rules:`` (any mix, in any file).

A file is training data by its content, as Rasa decides it (top-level ``nlu``, ``stories``,
``rules`` or ``responses``), wherever it lies below the data folders. ``responses`` are read as the
domain's are and merged into the domain (bots/dialogue/rasa_project.py), as Rasa merges them. NLU items (``intent``,
``synonym``, ``regex``, ``lookup``; examples as a block of ``- `` lines or a list, with
``[text](entity)`` and ``[text]{"entity": ..., "role": ..., "group": ..., "value": ...}``
annotations) become the bot's intents and extraction tables; stories and rules become
``Story`` values of the one dialogue model (bots/dialogue/domain.py), each step with its
``file:line``.

Steps are read as Rasa's YAML story reader reads them: ``intent`` (with ``entities`` as a list of
names, of ``{entity: value}`` with optional ``role``/``group``, or one mapping), ``user`` (text
with annotated entities; test stories), ``action``, ``bot``, ``slot_was_set`` (a list of
``{slot: value}`` or names: a name alone means "set, any value", stored as ``...``),
``active_loop`` (a form or null), ``checkpoint`` (with optional ``slot_was_set`` conditions)
and ``or`` (of intents or slot_was_set). Rules add ``condition``, ``conversation_start`` and
``wait_for_user_input``; rules have no checkpoints and no ``bot:`` steps (Rasa's schema).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bots.botspec import Example, parse_example
from bots.dialogue.domain import ResponseVariation, Step, Story, StoryEntity
from bots.dialogue.rasa_domain import parse_response
from bots.dialogue.rasa_yaml import (
    Findings,
    as_list,
    as_mapping,
    boolean,
    check_keys,
    check_version,
    example_lines,
    name_of,
    plain_json,
    read_yaml,
    text_of,
)
from bots.yamlspan import Located

DATA_KEYS = ("nlu", "stories", "rules", "responses", "version")
_NLU_KINDS = ("intent", "synonym", "regex", "lookup")
_STEP_KEYS = {
    "user": ("intent", "user", "entities", "metadata"),
    "action": ("action", "metadata"),
    "bot": ("bot", "metadata"),
    "checkpoint": ("checkpoint", "slot_was_set"),
    "slot_was_set": ("slot_was_set",),
    "active_loop": ("active_loop",),
    "or": ("or",),
}


@dataclass
class TrainingData:
    """What the data files hold, gathered across files in path order."""

    examples: dict[str, list[Example]] = field(default_factory=dict)
    intent_where: dict[str, str] = field(default_factory=dict)
    synonyms: dict[str, str] = field(default_factory=dict)
    regexes: dict[str, list[str]] = field(default_factory=dict)
    lookups: dict[str, list[str]] = field(default_factory=dict)
    stories: list[Story] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    # Retrieval intents (``chitchat/ask_name``): per intent, each response key's example texts; the examples
    # also train the intent itself (``chitchat``), as Rasa's intent classifier learns it.
    retrieval: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # ``responses:`` of the data files (Rasa reads them as NLU data and merges them into the domain, where they
    # win over a same-named domain response), and where each is defined
    responses: dict[str, tuple[ResponseVariation, ...]] = field(default_factory=dict)
    response_where: dict[str, str] = field(default_factory=dict)


def is_data_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in (".yml", ".yaml")


def data_files(paths: list[Path], findings: Findings) -> list[Path]:
    """Every YAML file below ``paths`` (files or folders), path order, each once. Rasa 1/2 Markdown or
    JSON training data is noted: Rasa 3 does not read it either."""
    out: dict[Path, None] = {}
    for path in paths:
        candidates = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for p in candidates:
            if is_data_file(p):
                out[p] = None
            elif p.suffix.lower() in (".md", ".json") and _old_format(p):
                findings.unsupported(f"{p}:1", "Rasa 1/2 Markdown or JSON training data (convert it to YAML with "
                                               "`rasa data convert`)")
    return list(out)


def _old_format(path: Path) -> bool:
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:4000]
    except OSError:
        return False
    return bool(re.search(r"^##\s*(intent|story|synonym|regex|lookup):?", head, re.MULTILINE)) \
        or '"rasa_nlu_data"' in head


def read_data_file(path: Path, data: TrainingData, findings: Findings, *, nlu: bool = True,
                   dialogue: bool = True, root: Located | None = None) -> bool:
    """Read one file into ``data``; False when it is not training data (no nlu/stories/rules).
    ``root``: the file already loaded (YAML 1.2), to read it once."""
    root = root or read_yaml(path, findings)
    if root is None:
        return True
    if not isinstance(root.value, dict) or not any(k in root.value for k in ("nlu", "stories", "rules",
                                                                              "responses")):
        return False
    top: dict[str, Located] = root.value
    data.files.append(path)
    for key, item in top.items():
        if key not in DATA_KEYS:
            findings.note(item.key_where(), f"'{key}' is not training data: not read")
    check_version(top, findings)
    if "responses" in top and nlu:
        _responses(top["responses"], data, findings)
    if "nlu" in top and nlu:
        for item in as_list(top["nlu"], "'nlu'", findings) or []:
            _nlu_item(item, data, findings)
    if dialogue:
        for key, is_rule in (("stories", False), ("rules", True)):
            if key in top:
                for item in as_list(top[key], f"'{key}'", findings) or []:
                    story = parse_story(item, is_rule, findings)
                    if story is not None:
                        data.stories.append(story)
    return True


def read_nlu_file(path: Path, root: Located | None = None) -> tuple[TrainingData, list[str]]:
    """One file's NLU data (``nlu:``, and ``responses:`` as Rasa's NLU reader reads them) exactly as a Rasa
    project's loader reads that file, for a file given on its own (``switchboard train --data nlu.yml``):
    the data and the notes (``file:line: ...``), or ConfigError with every error. Stories and rules are
    not read."""
    findings = Findings()
    data = TrainingData()
    read_data_file(path, data, findings, dialogue=False, root=root)
    findings.raise_errors()
    return data, list(findings.notes)


def _responses(section: Located, data: TrainingData, findings: Findings) -> None:
    """A data file's ``responses:`` (e.g. a retrieval intent's ``utter_faq/ask_x`` kept in data/responses.yml),
    read as the domain's are; a name defined again in the data keeps its first definition (noted)."""
    for name, item in (as_mapping(section, "'responses'", findings) or {}).items():
        variations = parse_response(name, item, findings)
        if variations is None:
            findings.broken.add(name)
            continue
        if name in data.responses:
            findings.note(item.key_where(), f"response '{name}' is defined again (first at "
                                            f"{data.response_where[name]}); the first definition is used")
            continue
        data.responses[name] = variations
        data.response_where[name] = item.key_where()


def _nlu_item(item: Located, data: TrainingData, findings: Findings) -> None:
    fields = as_mapping(item, "an nlu item", findings)
    if fields is None:
        return
    kinds = [k for k in _NLU_KINDS if k in fields]
    if len(kinds) != 1:
        findings.error(item.key_where(), f"an nlu item needs exactly one of {', '.join(_NLU_KINDS)}")
        return
    kind = kinds[0]
    name = name_of(fields[kind], f"the {kind} name", findings)
    if name is None:
        return
    what = f"{kind} '{name}'"
    check_keys(fields, what, (kind, "examples", "metadata"), findings)
    if "metadata" in fields:
        findings.unsupported(fields["metadata"].key_where(), f"{what}: metadata (only custom NLU components read it)")
    if "examples" not in fields:
        findings.error(item.key_where(), f"{what} has no 'examples'")
        return
    lines = example_lines(fields["examples"], what, findings)
    if not lines and kind != "intent" and fields["examples"].value:  # an intent's are reported by check
        findings.note(item.key_where(), f"{what} has no example left: it matches nothing, as in Rasa")
    if kind == "intent":
        key = None
        if "/" in name:  # a retrieval intent: its examples train the intent and pick the response key
            name, key = name.split("/", 1)
        bucket = data.examples.setdefault(name, [])
        data.intent_where.setdefault(name, item.key_where())
        for raw, where in lines:
            try:
                example = parse_example(raw)
            except ValueError as exc:
                findings.error(where, str(exc))
                continue
            bucket.append(Example(example.text, example.entities, where=where))
            if key is not None:
                data.retrieval.setdefault(name, {}).setdefault(key, []).append(example.text)
    elif kind == "synonym":
        for raw, _ in lines:
            if raw != name:  # Rasa's mapper skips an example that is the synonym itself (original == replacement)
                data.synonyms[raw.lower()] = name
    elif kind == "regex":
        for raw, where in lines:
            try:
                re.compile(raw)
            except re.error as exc:
                findings.error(where, f"{what}: invalid regular expression: {exc}")
                continue
            data.regexes.setdefault(name, []).append(raw)
    else:
        data.lookups.setdefault(name, []).extend(raw for raw, _ in lines)


# ---------------------------------------------------------------------------------------------------------
# Stories and rules.

def parse_story(item: Located, is_rule: bool, findings: Findings) -> Story | None:
    title = "rule" if is_rule else "story"
    fields = as_mapping(item, f"a {title}", findings)
    if fields is None:
        return None
    known = ("rule", "steps", "condition", "conversation_start", "wait_for_user_input", "metadata") if is_rule \
        else ("story", "steps", "metadata")
    check_keys(fields, f"a {title}", known, findings)
    if title not in fields:
        findings.error(item.key_where(), f"a {title} needs '{title}:' (its name)")
        return None
    name = name_of(fields[title], f"the {title} name", findings)
    if name is None:
        return None
    what = f"{title} '{name}'"
    raw_steps = as_list(fields["steps"], f"{what}: 'steps'", findings) if "steps" in fields else []
    if raw_steps is None:
        return None
    if not raw_steps:
        findings.note(item.key_where(), f"{what} has no steps: skipped (as Rasa does)")
        return None
    steps = [s for s in (parse_step(x, what, is_rule, findings) for x in raw_steps) if s is not None]
    condition: list[Step] = []
    start = False
    wait = True
    if is_rule:
        if "condition" in fields:
            for c in as_list(fields["condition"], f"{what}: 'condition'", findings) or []:
                cf = as_mapping(c, f"{what}: a condition", findings)
                if cf is None:
                    continue
                if "active_loop" in cf and len(cf) == 1:
                    step = _active_loop(cf["active_loop"], what, findings)
                elif "slot_was_set" in cf and len(cf) == 1:
                    step = _slot_was_set(cf["slot_was_set"], what, findings)
                else:
                    findings.error(c.key_where(), f"{what}: a condition is '- active_loop: FORM' or "
                                              f"'- slot_was_set: [...]'")
                    continue
                if step is not None:
                    condition.append(step)
        if "conversation_start" in fields:
            start = boolean(fields["conversation_start"], f"{what}: 'conversation_start'", findings) is True
        if "wait_for_user_input" in fields:
            wait = boolean(fields["wait_for_user_input"], f"{what}: 'wait_for_user_input'", findings) is not False
    return Story(name, tuple(steps), is_rule=is_rule, condition=tuple(condition), conversation_start=start,
                 wait_for_user_input=wait, where=item.key_where())


def parse_step(item: Located, what: str, is_rule: bool, findings: Findings) -> Step | None:
    fields = as_mapping(item, f"{what}: a step", findings)
    if fields is None:
        return None
    if "intent" in fields or "user" in fields:
        kind = "user"
    else:
        kind = next((k for k in ("or", "action", "bot", "checkpoint", "slot_was_set", "active_loop") if k in fields),
                    "")
    if not kind:
        if set(fields) == {"metadata"}:
            return None
        findings.error(item.key_where(), f"{what}: unknown step {', '.join(fields) or '{}'} (a step is one of intent, "
                                     f"user, action, bot, slot_was_set, active_loop, checkpoint, or)")
        return None
    check_keys(fields, f"{what}: the {kind} step", _STEP_KEYS[kind], findings)
    if is_rule and kind in ("checkpoint", "bot"):
        findings.error(item.key_where(), f"{what}: rules cannot have '{kind}' steps (write a story)")
        return None
    if kind == "user":
        return _user_step(item, fields, what, findings)
    if kind == "action":
        name = name_of(fields["action"], f"{what}: 'action'", findings)
        return None if name is None else Step("action", name, where=item.key_where())
    if kind == "bot":
        text = text_of(fields["bot"], f"{what}: 'bot'", findings)
        return None if text is None else Step("bot", text, where=item.key_where())
    if kind == "checkpoint":
        name = name_of(fields["checkpoint"], f"{what}: 'checkpoint'", findings)
        slots: tuple[tuple[str, Any], ...] = ()
        if "slot_was_set" in fields:
            cond = _slot_was_set(fields["slot_was_set"], what, findings, names_allowed=False)
            slots = cond.slots if cond is not None else ()
        return None if name is None else Step("checkpoint", name, slots=slots, where=item.key_where())
    if kind == "slot_was_set":
        return _slot_was_set(fields["slot_was_set"], what, findings)
    if kind == "active_loop":
        return _active_loop(fields["active_loop"], what, findings)
    alternatives: list[Step] = []
    for alt in as_list(fields["or"], f"{what}: 'or'", findings) or []:
        af = as_mapping(alt, f"{what}: an 'or' alternative", findings)
        if af is None:
            continue
        if "intent" in af or "user" in af:
            check_keys(af, f"{what}: an 'or' alternative", ("intent", "user", "entities"), findings)
            step = _user_step(alt, af, what, findings)
        elif "slot_was_set" in af and len(af) == 1:
            step = _slot_was_set(af["slot_was_set"], what, findings)
        else:
            findings.error(alt.key_where(), f"{what}: an 'or' alternative is an intent or a slot_was_set")
            continue
        if step is not None:
            alternatives.append(step)
    if len(alternatives) < 2:
        findings.error(item.key_where(), f"{what}: 'or' needs at least two alternatives")
        return None
    return Step("or", alternatives=tuple(alternatives), where=item.key_where())


def _user_step(item: Located, fields: dict[str, Located], what: str, findings: Findings) -> Step | None:
    intent = None
    if "intent" in fields:
        intent = name_of(fields["intent"], f"{what}: 'intent'", findings)
        if intent is None:
            return None
        if intent.startswith("/"):
            findings.note(fields["intent"].key_where(), f"{what}: intent '{intent}' starts with '/': read as "
                                                    f"'{intent[1:]}' (as Rasa does)")
            intent = intent[1:]
        if "/" in intent:
            base = intent.split("/", 1)[0]
            findings.unsupported(fields["intent"].key_where(), f"{what}: retrieval intent '{intent}': read as '{base}'")
            intent = base
    entities: list[StoryEntity] = []
    user_text = None
    if "user" in fields:
        raw = text_of(fields["user"], f"{what}: 'user'", findings)
        if raw is None:
            return None
        raw = raw.strip()
        if raw.startswith("/"):
            user_text = raw  # "/intent{...}": a payload, sent as it is
            entities = _payload_entities(raw, fields["user"], what, findings)
        else:
            try:
                example = parse_example(raw)
            except ValueError as exc:
                findings.error(fields["user"].key_where(), f"{what}: {exc}")
                return None
            user_text = example.text
            entities = [StoryEntity(e.entity, e.value, e.role, e.group, e.start, e.end) for e in example.entities]
        if "entities" in fields:
            # Rasa's reader takes a user step's entities from the text's annotations and ignores 'entities'
            # beside 'user' (the step expects what the text annotates): read the same, with a note.
            findings.note(fields["entities"].key_where(), f"{what}: 'entities' beside 'user' is not read: a 'user' "
                                                      f"step's entities are the ones annotated in its text "
                                                      f"([Berlin](city)), as Rasa reads it")
    elif "entities" in fields:
        entities = _entities(fields["entities"], what, findings)
    return Step("intent", intent, entities=tuple(entities), user_text=user_text, where=item.key_where())


def _payload_entities(raw: str, item: Located, what: str, findings: Findings) -> list[StoryEntity]:
    """A payload's entities (``/share_location{"latitude": 52.52}``): what the step expects, as Rasa's
    reader takes them (``YAMLStoryReader._parse_raw_user_utterance`` unpacks a ``/`` text as a payload, so
    its entities are the target, not the text's annotations); a list value is one entity per item."""
    brace = raw.find("{")
    if brace < 0:
        return []
    try:
        values = json.loads(raw[brace:])
    except json.JSONDecodeError as exc:
        findings.error(item.key_where(), f"{what}: the payload's entities are not JSON ({exc.msg}): {raw!r}")
        return []
    if not isinstance(values, dict):
        findings.error(item.key_where(), f"{what}: the payload's entities must be a JSON object: {raw!r}")
        return []
    return [StoryEntity(str(name), value) for name, given in values.items()
            for value in (given if isinstance(given, list) else [given])]


def _entities(item: Located, what: str, findings: Findings) -> list[StoryEntity]:
    """``entities:`` of an intent step: ``- city`` (any value), ``- city: Berlin`` with optional
    ``role``/``group`` keys beside it, ``- entity: city`` with ``value``/``role``/``group``, or one
    mapping ``{city: Berlin}``."""
    out: list[StoryEntity] = []
    if isinstance(item.value, dict):
        for key, value in item.value.items():
            out.append(StoryEntity(key, plain_json(value)))
        return out
    for x in as_list(item, f"{what}: 'entities'", findings) or []:
        if isinstance(x.value, dict):
            props: dict[str, Located] = x.value
            if "entity" in props:
                check_keys(props, f"{what}: an entity", ("entity", "value", "role", "group"), findings)
                name = name_of(props["entity"], f"{what}: an entity name", findings)
                value = plain_json(props["value"]) if "value" in props else None
            else:
                named = [k for k in props if k not in ("role", "group")]
                if len(named) != 1:
                    findings.error(x.key_where(),
                                   f"{what}: an entity is '- NAME: VALUE' (with optional role and group)")
                    continue
                name, value = named[0], plain_json(props[named[0]])
            role = name_of(props["role"], f"{what}: an entity's role", findings) if "role" in props else None
            group = name_of(props["group"], f"{what}: an entity's group", findings) if "group" in props else None
            if name is not None:
                out.append(StoryEntity(name, value, role, group))
        else:
            name = name_of(x, f"{what}: an entity", findings)
            if name is not None:
                out.append(StoryEntity(name))
    return out


def _slot_was_set(item: Located, what: str, findings: Findings, *, names_allowed: bool = True) -> Step | None:
    raw = as_list(item, f"{what}: 'slot_was_set'", findings)
    if raw is None:
        return None
    slots: list[tuple[str, Any]] = []
    for x in raw:
        if isinstance(x.value, dict):
            for key, value in x.value.items():
                slots.append((key, plain_json(value)))
        elif names_allowed and isinstance(x.value, str) and x.value.strip():
            slots.append((x.value.strip(), ...))  # set, whatever its value
        else:
            findings.error(x.key_where(), f"{what}: each slot_was_set item is '- SLOT: VALUE'"
                                      + (" or a slot name" if names_allowed else ""))
    if not slots:
        findings.error(item.key_where(), f"{what}: 'slot_was_set' lists no slot")
        return None
    return Step("slot_was_set", slots=tuple(slots), where=item.key_where())


def _active_loop(item: Located, what: str, findings: Findings) -> Step | None:
    if item.value is None:
        return Step("active_loop", None, where=item.key_where())
    name = name_of(item, f"{what}: 'active_loop'", findings)
    return None if name is None else Step("active_loop", name, where=item.key_where())


def read_test_stories(paths: list[Path], notes: list[str] | None = None) -> tuple[Story, ...]:
    """Rasa test stories (``tests/test_*.yml``: stories whose user steps carry ``user:`` text) in the one
    model; ConfigError with every problem. ``notes`` (when given) gets what was read differently from how it
    is written (``file:line: ...``). For ``switchboard test``."""
    findings = Findings()
    data = TrainingData()
    for path in paths:
        if not read_data_file(path, data, findings, nlu=False):
            # Rasa reads a file as stories only by its 'stories' or 'rules' key (e.g. not 'test_stories')
            root = read_yaml(path, Findings())
            keys = ", ".join(f"'{k}'" for k in root.value) if root is not None and isinstance(root.value, dict) \
                else "none"
            findings.note(f"{path}:1", f"no 'stories' or 'rules' here (top-level keys: {keys}): not test stories, "
                                       "not read (Rasa reads test stories under 'stories:')")
    findings.raise_errors()
    if notes is not None:
        notes.extend(findings.notes)
    return tuple(data.stories)

"""A Rasa 3.x domain (``domain.yml``, or every ``.yml`` file of a ``domain/`` folder) as a ``Domain``.

Every key of Rasa 3.x's domain format is read: ``version``, ``intents`` (plain, or with
``use_entities``/``ignore_entities``), ``entities`` (with ``roles``, ``groups``,
``influence_conversation``), ``slots`` of every type with ``influence_conversation``,
``initial_value`` and ``mappings`` (``from_entity``, ``from_text``, ``from_intent``,
``from_trigger_intent``, ``custom``; ``conditions`` with ``active_loop``/``requested_slot``),
``responses`` (text, buttons, image, attachment, custom, channel, condition, id, metadata),
``forms`` (``required_slots``, ``ignored_intents``), ``actions``, ``session_config``.

Several files merge as Rasa merges them: lists (intents, entities, actions) are united in order,
and a slot, response or form defined in two files keeps the first definition (files in path
order), with a note naming both places. Keys Rasa knows and Switchboard does not run are notes
(``not supported: ...``); anything else wrong is an error with its ``file:line``.
Cross-references (a form's slot that no ``slots:`` declares, an intent no NLU example has) are
``switchboard check``'s job (bots/dialogue/check.py), so that one run reports them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar, cast

from bots.dialogue.domain import (
    MAPPING_TYPES,
    SLOT_TYPES,
    Domain,
    EntityProperties,
    Form,
    IntentProperties,
    MappingCondition,
    MappingType,
    ResponseButton,
    ResponseVariation,
    SessionConfig,
    Slot,
    SlotMapping,
    SlotType,
)
from bots.dialogue.rasa_yaml import (
    Findings,
    as_list,
    as_mapping,
    boolean,
    check_keys,
    check_version,
    name_of,
    names_of,
    number,
    plain_json,
    read_mapping,
    text_of,
)
from bots.yamlspan import Located

DOMAIN_KEYS = ("version", "intents", "entities", "slots", "responses", "forms", "actions", "session_config")
_DOMAIN_UNSUPPORTED = {
    "config": "Rasa 2's store_entities_as_slots; Rasa 3 fills slots through their 'mappings'",
    "e2e_actions": "end-to-end bot texts as actions; write responses",
    "state_machine": "Rasa Pro's state machines",
}
# Top-level keys that belong elsewhere, with where Rasa reads them (the domain schema takes them, and Rasa then
# ignores them: a project that puts its synonyms in the domain trains without them).
_DOMAIN_MISPLACED = {
    "synonyms": "Rasa reads synonyms from the NLU data ('- synonym: NAME' items under 'nlu:' in data/)",
    "nlu": "NLU data is read from the data/ files",
    "stories": "stories are read from the data/ files",
    "rules": "rules are read from the data/ files",
    "pipeline": "the pipeline is read from config.yml",
    "policies": "the policies are read from config.yml",
}
_MAPPING_KEYS: dict[str, tuple[str, ...]] = {
    "from_entity": ("type", "entity", "role", "group", "intent", "not_intent", "conditions"),
    "from_text": ("type", "intent", "not_intent", "conditions"),
    "from_intent": ("type", "value", "intent", "not_intent", "conditions"),
    "from_trigger_intent": ("type", "value", "intent", "not_intent", "conditions"),
    "custom": ("type", "action", "conditions"),
}
_VARIATION_KEYS = ("text", "image", "custom", "buttons", "attachment", "channel", "condition", "id", "metadata")
_VARIATION_UNSUPPORTED = {
    "button_type": "buttons are laid out by each channel",
    "quick_replies": "Facebook quick replies; use 'buttons'",
    "elements": "Facebook generic templates; use 'custom'",
}


@dataclass
class _Merged:
    """The domain being built from one or more files (first definition wins)."""

    intents: dict[str, IntentProperties] = field(default_factory=dict)
    entities: dict[str, EntityProperties] = field(default_factory=dict)
    slots: dict[str, Slot] = field(default_factory=dict)
    responses: dict[str, tuple[ResponseVariation, ...]] = field(default_factory=dict)
    forms: dict[str, Form] = field(default_factory=dict)
    actions: dict[str, str] = field(default_factory=dict)    # name -> where declared
    defined_at: dict[tuple[str, str], str] = field(default_factory=dict)  # (slot|response|form, name)
    session: SessionConfig | None = None


def domain_files(path: Path) -> list[Path]:
    """``domain.yml`` itself, or every YAML file below a ``domain/`` folder (path order)."""
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in (".yml", ".yaml"))
    return [path]


def parse_domain(files: list[Path], findings: Findings) -> tuple[Domain, dict[str, str]]:
    """The merged domain, and where each custom action is declared (for the checks)."""
    merged = _Merged()
    for path in files:
        top = read_mapping(path, "a domain file", findings)
        if top is None:
            continue
        _parse_file(top, merged, findings)
    forms = {name: replace(form, validation_action=f"validate_{name}") if f"validate_{name}" in merged.actions
             else form for name, form in merged.forms.items()}
    domain = Domain(intents=merged.intents, entities=merged.entities, slots=merged.slots,
                    responses=merged.responses, forms=forms, actions=tuple(merged.actions),
                    session=merged.session or SessionConfig())
    return domain, dict(merged.actions)


def _check_top_keys(top: dict[str, Located], findings: Findings) -> None:
    """Rasa's domain schema takes any top-level key (``allowempty: True``) and ``Domain.from_dict`` reads only its
    own: a key it does not know is not read, and the project trains and serves without it. Noted at its line (with
    where Rasa reads what it holds, for the usual misplaced sections), not refused; the keys Rasa reads and
    Switchboard does not run keep their 'not supported' note."""
    for key, value in top.items():
        if key in DOMAIN_KEYS or key in _DOMAIN_UNSUPPORTED:
            continue
        hint = f"; {_DOMAIN_MISPLACED[key]}" if key in _DOMAIN_MISPLACED else ""
        findings.note(value.key_where(), f"domain: '{key}' is not a domain key ({', '.join(DOMAIN_KEYS)}): not "
                                         f"read, as Rasa does not read it{hint}")
    check_keys({k: v for k, v in top.items() if k in DOMAIN_KEYS or k in _DOMAIN_UNSUPPORTED}, "domain",
               DOMAIN_KEYS, findings, _DOMAIN_UNSUPPORTED)


def _parse_file(top: dict[str, Located], merged: _Merged, findings: Findings) -> None:
    _check_top_keys(top, findings)
    check_version(top, findings)
    if "intents" in top:
        _merge_listed(top["intents"], "'intents'", "intent", _intent, merged.intents, findings)
    if "entities" in top:
        _merge_listed(top["entities"], "'entities'", "entity", _entity, merged.entities, findings)
    if "slots" in top:
        _merge_defined(top["slots"], "slot", _slot, merged.slots, merged.defined_at, findings)
    if "responses" in top:
        _merge_defined(top["responses"], "response", parse_response, merged.responses, merged.defined_at, findings)
    if "forms" in top:
        _merge_defined(top["forms"], "form", _form, merged.forms, merged.defined_at, findings)
    if "actions" in top:
        for item in as_list(top["actions"], "'actions'", findings) or []:
            action = _action(item, findings)
            if action is None:
                continue
            if action in merged.actions:
                continue
            merged.actions[action] = item.key_where()
    if "session_config" in top:
        session = _session(top["session_config"], findings)
        if session is not None and merged.session is None:
            merged.session = session


_Listed = TypeVar("_Listed", IntentProperties, EntityProperties)
_Defined = TypeVar("_Defined")


def _merge_listed(section: Located, label: str, what: str, parse: Callable[[Located, Findings], _Listed | None],
                  into: dict[str, _Listed], findings: Findings) -> None:
    """A list section (intents, entities) into ``into``: lists merge in order, as Rasa merges them; a name
    listed again is skipped, with a note where its properties differ from the first's (the first is used)."""
    for item in as_list(section, label, findings) or []:
        value = parse(item, findings)
        if value is None:
            findings.broken.update(_item_names(item))
            continue
        first = into.get(value.name)
        if first is not None:
            if replace(value, where="") != replace(first, where=""):
                findings.note(item.key_where(), f"{what} '{value.name}' is listed again with other properties "
                                            f"(first at {first.where}); the first is used")
            continue
        into[value.name] = value


def _merge_defined(section: Located, what: str, parse: Callable[[str, Located, Findings], _Defined | None],
                   into: dict[str, _Defined], defined_at: dict[tuple[str, str], str], findings: Findings) -> None:
    """A mapping section (slots, responses, forms) into ``into``: a name defined again keeps the first
    definition, with a note naming both places (``defined_at``: (what, name) -> where first defined)."""
    for name, item in (as_mapping(section, f"'{what}s'", findings) or {}).items():
        value = parse(name, item, findings)
        if value is None:
            findings.broken.add(name)
            continue
        if name in into:
            findings.note(item.key_where(), f"{what} '{name}' is defined again (first at "
                                        f"{defined_at[what, name]}); the first definition is used")
            continue
        into[name] = value
        defined_at[what, name] = item.key_where()


def _item_names(item: Located) -> set[str]:
    if isinstance(item.value, dict):
        return {str(k) for k in item.value}
    return {str(item.value)} if isinstance(item.value, str | int | float) else set()


def _single_key(item: Located, what: str, findings: Findings) -> tuple[str, Located] | None:
    """``- name`` or ``- name: {properties}``: the name and the properties' located value."""
    if isinstance(item.value, dict):
        if len(item.value) != 1:
            findings.error(item.key_where(), f"{what}: each item is a name, or one name with its properties "
                                         f"(e.g. '- inform: {{use_entities: [city]}}')")
            return None
        key, props = next(iter(item.value.items()))
        if not str(key).strip():
            findings.error(item.key_where(), f"{what} must be a name (text)")
            return None
        return str(key).strip(), props
    name = name_of(item, what, findings)
    return None if name is None else (name, Located(None, item.line, item.file))


def _named_properties(item: Located, kind: str, findings: Findings) -> tuple[str, dict[str, Located]] | None:
    """An intents/entities item (``- name`` or ``- name: {properties}``): the name and its properties."""
    found = _single_key(item, f"an {kind}", findings)
    if found is None:
        return None
    name, props_item = found
    props = as_mapping(props_item, f"{kind} '{name}'", findings)
    return None if props is None else (name, props)


def _intent(item: Located, findings: Findings) -> IntentProperties | None:
    found = _named_properties(item, "intent", findings)
    if found is None:
        return None
    name, props = found
    check_keys(props, f"intent '{name}'", ("use_entities", "ignore_entities"), findings,
               {"triggers": "Rasa 2's MappingPolicy; write a rule instead",
                "is_retrieval_intent": "retrieval intents (ResponseSelector)"})
    use: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    if "use_entities" in props and "ignore_entities" in props:
        findings.error(props["ignore_entities"].key_where(), f"intent '{name}': give 'use_entities' or "
                                                         f"'ignore_entities', not both")
    if "use_entities" in props:
        u = props["use_entities"]
        if u.value is True:
            use = None
        elif u.value is False or u.value is None:
            use = ()
        elif isinstance(u.value, list):
            use = tuple(n for n, _ in names_of(u, f"intent '{name}': an entity in 'use_entities'", findings))
        else:
            findings.error(u.key_where(), f"intent '{name}': 'use_entities' must be true, false or a list of entities")
    if "ignore_entities" in props:
        i = props["ignore_entities"]
        if not isinstance(i.value, list):
            findings.error(i.key_where(), f"intent '{name}': 'ignore_entities' must be a list of entities")
        else:
            ignore = tuple(n for n, _ in names_of(i, f"intent '{name}': an entity in 'ignore_entities'", findings))
    return IntentProperties(name, use_entities=use, ignore_entities=ignore, where=item.key_where())


def _entity(item: Located, findings: Findings) -> EntityProperties | None:
    found = _named_properties(item, "entity", findings)
    if found is None:
        return None
    name, props = found
    check_keys(props, f"entity '{name}'", ("roles", "groups", "influence_conversation"), findings)
    labels: dict[str, tuple[str, ...]] = {"roles": (), "groups": ()}
    for key in labels:
        if key in props:
            if not isinstance(props[key].value, list):
                findings.error(props[key].key_where(), f"entity '{name}': '{key}' must be a list")
                continue
            labels[key] = tuple(n for n, _ in names_of(props[key], f"entity '{name}': one of its {key}", findings))
    influence = True
    if "influence_conversation" in props:
        influence = boolean(props["influence_conversation"], f"entity '{name}': 'influence_conversation'",
                            findings) is not False
    return EntityProperties(name, roles=labels["roles"], groups=labels["groups"], influence_conversation=influence,
                            where=item.key_where())


def _slot(name: str, item: Located, findings: Findings) -> Slot | None:
    what = f"slot '{name}'"
    fields = as_mapping(item, what, findings)
    if fields is None:
        return None
    check_keys(fields, what, ("type", "influence_conversation", "initial_value", "values", "min_value",
                              "max_value", "mappings"), findings,
               {"auto_fill": "Rasa 2's auto-filling; Rasa 3 fills slots through 'mappings'"})
    if "type" not in fields:
        findings.error(item.key_where(), f"{what} needs a 'type' ({', '.join(SLOT_TYPES)})")
        return None
    t = fields["type"]
    kind = t.value
    if kind == "unfeaturized":
        findings.error(t.key_where(), f"{what}: type 'unfeaturized' is Rasa 2's: use 'type: any' with "
                                  f"'influence_conversation: false'")
        return None
    if not isinstance(kind, str) or kind not in SLOT_TYPES:
        if isinstance(kind, str) and "." in kind:
            findings.error(t.key_where(), f"{what}: not supported: a custom slot type ({kind}); use one of "
                                      f"{', '.join(SLOT_TYPES)}")
        else:
            findings.error(t.key_where(), f"{what}: unknown type {kind!r} (use {', '.join(SLOT_TYPES)})")
        return None
    influence = kind != "any"
    if "influence_conversation" in fields:
        flag = boolean(fields["influence_conversation"], f"{what}: 'influence_conversation'", findings)
        if flag is not None:
            influence = flag
        if kind == "any" and flag:
            findings.error(fields["influence_conversation"].key_where(), f"{what}: a slot of type 'any' cannot "
                                                                     f"influence the conversation (as in Rasa)")
    values: tuple[str, ...] = ()
    if "values" in fields:
        v = fields["values"]
        if kind != "categorical":
            findings.error(v.key_where(), f"{what}: 'values' applies to categorical slots only")
        elif not isinstance(v.value, list):
            findings.error(v.key_where(), f"{what}: 'values' must be a list")
        else:
            values = tuple(_categorical(x.value) for x in v.value)
    elif kind == "categorical":
        findings.error(item.key_where(), f"{what} is categorical: list its 'values'")
    bounds = {"min_value": 0.0, "max_value": 1.0}
    for key in bounds:
        if key in fields:
            if kind != "float":
                findings.error(fields[key].key_where(), f"{what}: '{key}' applies to float slots only")
                continue
            found = number(fields[key], f"{what}: '{key}'", findings)
            if found is not None:
                bounds[key] = found
    if bounds["min_value"] > bounds["max_value"]:
        findings.error(item.key_where(), f"{what}: 'min_value' is above 'max_value'")
    initial: Any = None
    if "initial_value" in fields:
        initial = _initial(fields["initial_value"], what, kind, values, findings)
    mappings: list[SlotMapping] = []
    if "mappings" in fields:
        for m in as_list(fields["mappings"], f"{what}: 'mappings'", findings) or []:
            mapping = _mapping(m, what, findings)
            if mapping is not None:
                mappings.append(mapping)
    else:  # Rasa 3's domain schema requires the key (rasa train: "Cannot find required key 'mappings'")
        findings.note(item.key_where(), f"{what} has no 'mappings', which Rasa 3 requires (rasa train refuses the "
                                        f"domain: \"Cannot find required key 'mappings'\"); here only actions set "
                                        f"it, as with a custom mapping")
    return Slot(name, type=cast(SlotType, kind), values=values, min_value=bounds["min_value"],
                max_value=bounds["max_value"], influence_conversation=influence, initial_value=initial,
                mappings=tuple(mappings), where=item.key_where())


def _categorical(value: Any) -> str:
    """A categorical value as Rasa compares it (text; booleans as YAML writes them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _initial(item: Located, what: str, kind: str, values: tuple[str, ...], findings: Findings) -> Any:
    value = item.value
    if value is None:
        return None
    ok = {
        "text": isinstance(value, str | int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "float": isinstance(value, int | float) and not isinstance(value, bool),
        "list": isinstance(value, list),
        "categorical": _categorical(value).lower() in {v.lower() for v in values},
        "any": True,
    }[kind]
    if not ok:
        expected = {"text": "text", "bool": "true or false", "float": "a number", "list": "a list",
                    "categorical": f"one of its values ({', '.join(values)})", "any": ""}[kind]
        findings.error(item.key_where(), f"{what}: 'initial_value' must be {expected}")
        return None
    return plain_json(item)


def _mapping(item: Located, slot_what: str, findings: Findings) -> SlotMapping | None:
    fields = as_mapping(item, f"{slot_what}: a mapping", findings)
    if fields is None:
        return None
    t = fields.get("type")
    if t is None:
        findings.error(item.key_where(), f"{slot_what}: a mapping needs 'type' ({', '.join(MAPPING_TYPES)})")
        return None
    if t.value not in MAPPING_TYPES:
        findings.error(t.key_where(), f"{slot_what}: unknown mapping type {t.value!r} (use {', '.join(MAPPING_TYPES)})")
        return None
    kind = str(t.value)
    what = f"{slot_what}: the {kind} mapping"
    check_keys(fields, what, _MAPPING_KEYS[kind], findings)
    entity = role = group = action = None
    if kind == "from_entity":
        if "entity" not in fields:
            findings.error(item.key_where(), f"{what} needs 'entity'")
            return None
        entity = name_of(fields["entity"], f"{what}: 'entity'", findings)
        role = name_of(fields["role"], f"{what}: 'role'", findings) if "role" in fields else None
        group = name_of(fields["group"], f"{what}: 'group'", findings) if "group" in fields else None
    value: Any = None
    if kind in ("from_intent", "from_trigger_intent"):
        if "value" not in fields:
            findings.error(item.key_where(), f"{what} needs 'value' (what the slot is set to)")
            return None
        value = plain_json(fields["value"])
    if kind == "custom" and "action" in fields:
        action = name_of(fields["action"], f"{what}: 'action'", findings)
    intents = tuple(n for n, _ in names_of(fields["intent"], f"{what}: 'intent'", findings)) \
        if "intent" in fields and fields["intent"].value is not None else ()
    not_intents = tuple(n for n, _ in names_of(fields["not_intent"], f"{what}: 'not_intent'", findings)) \
        if "not_intent" in fields and fields["not_intent"].value is not None else ()
    conditions: list[MappingCondition] = []
    if "conditions" in fields:
        for c in as_list(fields["conditions"], f"{what}: 'conditions'", findings) or []:
            cf = as_mapping(c, f"{what}: a condition", findings)
            if cf is None:
                continue
            check_keys(cf, f"{what}: a condition", ("active_loop", "requested_slot"), findings)
            if "active_loop" not in cf:
                findings.error(c.key_where(), f"{what}: a condition needs 'active_loop' (a form, or null)")
                continue
            loop = None if cf["active_loop"].value is None else name_of(cf["active_loop"],
                                                                        f"{what}: 'active_loop'", findings)
            requested = name_of(cf["requested_slot"], f"{what}: 'requested_slot'", findings) \
                if "requested_slot" in cf and cf["requested_slot"].value is not None else None
            conditions.append(MappingCondition(loop, requested))
    return SlotMapping(cast(MappingType, kind), entity=entity, role=role, group=group, intent=intents,
                       not_intent=not_intents, value=value, action=action, conditions=tuple(conditions),
                       where=item.key_where())


def parse_response(name: str, item: Located, findings: Findings) -> tuple[ResponseVariation, ...] | None:
    """One response (``utter_x:``): its list of variations."""
    what = f"response '{name}'"
    raw = as_list(item, what, findings)
    if raw is None:
        return None
    if not raw:
        findings.error(item.key_where(), f"{what} has no variations (give at least one '- text: ...')")
        return None
    out: list[ResponseVariation] = []
    for x in raw:
        if isinstance(x.value, str):  # Rasa 1's "- text" shorthand is refused by Rasa 3's schema too
            findings.error(x.key_where(), f"{what}: each variation is a mapping, e.g. '- text: \"...\"'")
            continue
        fields = as_mapping(x, f"{what}: a variation", findings)
        if fields is None:
            continue
        variation = _variation(what, x, fields, findings)
        if variation is not None:
            out.append(variation)
    return tuple(out)


def _variation(what: str, x: Located, fields: dict[str, Located], findings: Findings) -> ResponseVariation | None:
    check_keys(fields, what, _VARIATION_KEYS, findings, _VARIATION_UNSUPPORTED)
    text = text_of(fields["text"], f"{what}: 'text'", findings) if "text" in fields and \
        fields["text"].value is not None else None
    custom = None
    if "custom" in fields:
        if not isinstance(fields["custom"].value, dict):
            findings.error(fields["custom"].key_where(), f"{what}: 'custom' must be a mapping (the payload sent as is)")
        else:
            custom = plain_json(fields["custom"])
    if text is None and not custom:
        findings.error(x.key_where(), f"{what}: a variation needs 'text' or 'custom' (as in Rasa)")
        return None
    buttons: list[ResponseButton] = []
    if "buttons" in fields:
        for b in as_list(fields["buttons"], f"{what}: 'buttons'", findings) or []:
            button = _button(b, what, findings)
            if button is not None:
                buttons.append(button)
    image = text_of(fields["image"], f"{what}: 'image'", findings) if "image" in fields else None
    attachment = None
    if "attachment" in fields:
        a = fields["attachment"]
        if isinstance(a.value, dict):
            findings.unsupported(a.key_where(), f"{what}: an attachment object (give the attachment's URL as text)")
        else:
            attachment = text_of(a, f"{what}: 'attachment'", findings)
    channel = name_of(fields["channel"], f"{what}: 'channel'", findings) if "channel" in fields else None
    ident = text_of(fields["id"], f"{what}: 'id'", findings) if "id" in fields else None
    metadata: dict[str, Any] = {}
    if "metadata" in fields and fields["metadata"].value is not None:
        if not isinstance(fields["metadata"].value, dict):
            findings.error(fields["metadata"].key_where(), f"{what}: 'metadata' must be a mapping")
        else:
            metadata = plain_json(fields["metadata"])
    conditions: list[tuple[str, Any]] = []
    if "condition" in fields:
        for c in as_list(fields["condition"], f"{what}: 'condition'", findings) or []:
            cf = as_mapping(c, f"{what}: a condition", findings)
            if cf is None:
                continue
            check_keys(cf, f"{what}: a condition", ("type", "name", "value"), findings)
            if "type" not in cf or cf["type"].value != "slot":
                findings.error(c.key_where(), f"{what}: a condition needs 'type: slot' (the only type Rasa 3 has)")
                continue
            if "name" not in cf:
                findings.error(c.key_where(), f"{what}: a condition needs 'name' (the slot)")
                continue
            slot = name_of(cf["name"], f"{what}: a condition's 'name'", findings)
            if slot is not None:
                conditions.append((slot, plain_json(cf["value"]) if "value" in cf else None))
    return ResponseVariation(text=text, buttons=tuple(buttons), image=image, attachment=attachment, custom=custom,
                             channel=channel, conditions=tuple(conditions), id=ident, metadata=metadata,
                             where=x.key_where())


def _button(item: Located, what: str, findings: Findings) -> ResponseButton | None:
    fields = as_mapping(item, f"{what}: a button", findings)
    if fields is None:
        return None
    check_keys(fields, f"{what}: a button", ("title", "payload", "url"), findings,
               {"type": "button types are rendered by each channel"})
    if "title" not in fields:
        findings.error(item.key_where(), f"{what}: a button needs 'title'")
        return None
    title = text_of(fields["title"], f"{what}: a button's 'title'", findings)
    payload = text_of(fields["payload"], f"{what}: a button's 'payload'", findings) if "payload" in fields else None
    url = text_of(fields["url"], f"{what}: a button's 'url'", findings) if "url" in fields else None
    if title is None:
        return None
    if payload is None and url is None:
        findings.note(item.key_where(), f"{what}: the button {title!r} has no 'payload': a click sends its title")
        payload = title
    return ResponseButton(title=title, payload=payload or "", url=url)


def _form(name: str, item: Located, findings: Findings) -> Form | None:
    what = f"form '{name}'"
    fields = as_mapping(item, what, findings)
    if fields is None:
        return None
    if "required_slots" not in fields and fields and all(isinstance(v.value, list) for v in fields.values()) \
            and "ignored_intents" not in fields:
        findings.error(item.key_where(), f"{what}: Rasa 2 form syntax (slots with their mappings): Rasa 3 lists the "
                                     f"slot names under 'required_slots' and keeps their mappings under 'slots:'")
        return None
    check_keys(fields, what, ("required_slots", "ignored_intents"), findings)
    required: list[str] = []
    if "required_slots" in fields:
        r = fields["required_slots"]
        if isinstance(r.value, dict):
            findings.error(r.key_where(), f"{what}: Rasa 2 form syntax ('required_slots' with mappings): Rasa 3 lists "
                                      f"the slot names and keeps their mappings under 'slots:'")
            return None
        for slot, x in names_of(r, f"{what}: a required slot", findings) if r.value is not None else []:
            if slot in required:
                findings.error(x.key_where(), f"{what}: slot '{slot}' is required twice")
            else:
                required.append(slot)
    ignored: tuple[str, ...] = ()
    if "ignored_intents" in fields and fields["ignored_intents"].value is not None:
        ignored = tuple(n for n, _ in names_of(fields["ignored_intents"], f"{what}: an ignored intent", findings))
    return Form(name, tuple(required), ignored_intents=ignored, where=item.key_where())


def _action(item: Located, findings: Findings) -> str | None:
    if isinstance(item.value, dict):  # Rasa 3.x: "- action_x: {send_domain: true}"
        found = _single_key(item, "an action", findings)
        if found is None:
            return None
        name, props = found
        fields = as_mapping(props, f"action '{name}'", findings) or {}
        check_keys(fields, f"action '{name}'", (), findings,
                   {"send_domain": "the domain is always sent to actions run in process and on request of "
                                   "an action server"})
        return name
    return name_of(item, "an action", findings)


def _session(item: Located, findings: Findings) -> SessionConfig | None:
    fields = as_mapping(item, "'session_config'", findings)
    if fields is None:
        return None
    check_keys(fields, "'session_config'", ("session_expiration_time", "carry_over_slots_to_new_session"), findings)
    minutes = 60.0
    carry = True
    if "session_expiration_time" in fields:
        found = number(fields["session_expiration_time"], "'session_expiration_time' (minutes)", findings, low=0)
        minutes = minutes if found is None else found
    if "carry_over_slots_to_new_session" in fields:
        carry = boolean(fields["carry_over_slots_to_new_session"], "'carry_over_slots_to_new_session'",
                        findings) is not False
    return SessionConfig(session_expiration_time_min=minutes, carry_over_slots_to_new_session=carry)

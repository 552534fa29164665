"""Forms: which slot to ask for next, and whether an answer is a valid value for a slot.

Everything here is pure; the dialogue engine (bots.dialogue.engine) turns the results into events.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bots.botspec import fill_template, placeholders
from bots.dialogue.spec import FormSpec, SlotSpec

_TRUE = {"yes", "y", "true", "1", "yeah", "yep", "sure", "ok", "okay", "correct", "right"}
_FALSE = {"no", "n", "false", "0", "nope", "nah", "wrong", "incorrect"}
# Words that answer a yes/no question wherever they stand in the answer ("ok yes", "yes please cancel it", "no
# thanks, keep it"); not "ok", "sure" or "right", which do not confirm anything in "ok wait" or "right, which order?"
_PLAIN_YES = {"yes", "yeah", "yep", "yup", "yea"}
_PLAIN_NO = {"no", "nope", "nah"}
_NEGATION = {"not", "don't", "dont", "do not", "never", "doesn't", "isn't", "won't"}  # "yes, don't": no answer
_YES_PHRASES = ("no problem", "no worries", "of course", "go ahead")  # a "no" that says yes


@dataclass(frozen=True)
class Checked:
    """The outcome of checking an answer: the normalised value, or why it was refused."""

    value: Any = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def label(slot: SlotSpec) -> str:
    """How the bot names the slot to the customer: its ``label`` (bot.yml), else its name in words."""
    return slot.label or slot.name.replace("_", " ")


def _refuse(slot: SlotSpec, default: str) -> Checked:
    return Checked(reason=slot.invalid or default)


def _number(slot: SlotSpec, text: str) -> Checked:
    try:
        number = float(text.replace(",", "."))
    except ValueError:
        return _refuse(slot, f"Please answer with a number for the {label(slot)}.")
    if slot.type == "integer":
        if not number.is_integer():
            return _refuse(slot, f"Please answer with a whole number for the {label(slot)}.")
    low, high = slot.minimum, slot.maximum
    if (low is not None and number < low) or (high is not None and number > high):
        if low is not None and high is not None:
            bounds = f"between {low:g} and {high:g}"
        elif low is not None:
            bounds = f"of at least {low:g}"
        else:
            bounds = f"of at most {high:g}"
        return _refuse(slot, f"Please give a {label(slot)} {bounds}.")
    return Checked(value=int(number) if slot.type == "integer" else number)


def check_value(slot: SlotSpec, raw: Any) -> Checked:
    """Check one candidate value against the slot's type, choices, bounds and regex."""
    if slot.type == "any":
        return Checked(value=raw)
    if isinstance(raw, bool):
        text = "true" if raw else "false"
    else:
        text = "" if raw is None else str(raw).strip()
    if not text:
        return _refuse(slot, f"I still need the {label(slot)}.")
    if slot.type in ("float", "integer"):
        return _number(slot, text)
    if slot.type == "bool":
        answer = yes_or_no(text)
        return _refuse(slot, "Please answer yes or no.") if answer is None else Checked(value=answer)
    if slot.choices:
        for choice in slot.choices:
            if choice.lower() == text.lower():
                return Checked(value=choice)
        return _refuse(slot, f"Please choose one of: {', '.join(slot.choices)}.")
    if slot.regex is not None and slot.regex.fullmatch(text) is None:
        return _refuse(slot, f"That doesn't look like a valid {label(slot)}.")
    return Checked(value=text)


def yes_or_no(text: str) -> bool | None:
    """What an answer to a yes/no question says: the whole answer ("ok", "nope"), else the plain yes or no words
    in it ("ok yes", "yes please cancel it", "no thanks, keep it", "No, I wanted to track it"); None when it says
    neither or both ("ok wait", "not sure", "yes, don't", "no... yes")."""
    words = text.lower().strip(" .!?")
    if words in _TRUE:
        return True
    if words in _FALSE:
        return False
    if any(re.search(rf"\b{phrase}\b", words) for phrase in _YES_PHRASES):
        words = re.sub("|".join(rf"\b{phrase}\b" for phrase in _YES_PHRASES), " yes ", words)
    tokens = re.findall(r"[a-z]+(?:'[a-z]+)?", words)
    joined = f" {' '.join(tokens)} "
    yes = any(t in _PLAIN_YES for t in tokens)
    no = any(t in _PLAIN_NO for t in tokens)
    negated = any(f" {n} " in joined for n in _NEGATION)
    if yes and not no and not negated:
        return True
    if no and not yes:
        return False
    return None


def next_slot(form: FormSpec, slots: Mapping[str, Any]) -> str | None:
    """The first required slot without a value, in the order the form lists them."""
    return next((name for name in form.required_slots if slots.get(name) is None), None)


def render(variants: tuple[str, ...], slots: Mapping[str, Any]) -> str:
    """The first variant whose placeholders are all filled; otherwise the variant with the fewest unknowns,
    unknown placeholders left out (a question is never shown with a raw ``{placeholder}``)."""
    values = {k: _shown(v) for k, v in slots.items() if v is not None}
    filled = fill_template(variants, values)
    if filled is not None:
        return filled
    best = min(variants, key=lambda v: len(placeholders(v) - values.keys()))
    for name in placeholders(best) - values.keys():
        best = best.replace("{" + name + "}", "")
    return fill_template((best,), values) or " ".join(best.split())


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def shown_values(slots: Mapping[str, Any]) -> dict[str, str]:
    """Slot values as they appear in response templates."""
    return {k: _shown(v) for k, v in slots.items() if v is not None}

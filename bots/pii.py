"""PII redaction, applied before anything is stored or logged.

``Redactor.redact(text)`` replaces

* e-mail addresses with ``[EMAIL]``,
* payment card numbers (13-19 digits, spaces or dashes allowed, Luhn-valid) with ``[CARD]``,
* phone numbers (international ``+``/``00`` prefix, or 9-15 digits written in groups such as
  ``(555) 123-4567`` or ``020 7946 0958``) with ``[PHONE]``,
* whatever the bot's extra patterns match, with ``[NAME]`` (the pattern's name, upper-cased).

It leaves alone what support conversations are full of: order numbers (``123456``,
``#A-99812``), dates (``2024-01-15``, ``15.01.2024``), times, amounts, and digit runs that
fail the Luhn check. ``RedactingFilter`` is a ``logging.Filter`` that redacts log records.

Identifiers are not text: a customer's user id (on the web channel whatever the embedding site
sends, often an e-mail address) cannot be recognised by a pattern, and replacing it with a
placeholder would lose which conversations belong to one person. ``Pseudonymiser`` turns it into
a keyed pseudonym, HMAC-SHA256 under ``SWITCHBOARD_PII_KEY``: the same id always gives the same
pseudonym (the review UI still groups a person's conversations, across replicas sharing the key),
and without the key nobody can compute it from a list of likely addresses, or reverse it.

``Privacy`` is what a bot with ``pii:`` asks of its conversation store: both stores apply it to
everything they are about to write (the customer's message, the bot's and agents' replies, slot
values, the search index built from them, the user id), so no writer can forget it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bots.errors import ConfigError
from bots.events import Event

EMAIL_ADDRESS = _EMAIL = re.compile(  # (also what the dialogue engine takes for an address: bots/dialogue/engine.py)
    r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
)
# 13-19 digits, single spaces or dashes between them; validated with Luhn below.
_CARD = re.compile(r"(?<![\w+-])\d(?:[ -]?\d){12,18}(?![\w-])")
# Phone candidates: an optional + or 00 prefix, an optional "(0)" / area code in parentheses,
# then digit groups separated by single spaces, dots or dashes. ``_is_phone`` decides.
_PHONE = re.compile(
    r"(?<![\w+(/.-])"
    r"(?P<intl>\+|00)?"
    r"(?:\(\d{1,4}\)[ .-]?)?"
    r"\d+(?:(?:[ .-]|[ .-]?\(\d{1,4}\)[ .-]?)\d+){0,6}"
    r"(?![\w/-]|\.\d)"
)
# North American numbering: (555) 123-4567, 555-123-4567, 555.123.4567, 1-800-555-0199
_NANP = re.compile(r"(?:1[ .-]?)?(?:\(\d{3}\) ?|\d{3}[ .-]?)\d{3}[ .-]\d{4}")
_DATE = re.compile(r"^\d{1,4}([./-])\d{1,2}\1\d{1,4}$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_BUILTIN = ("email", "phone", "card")

# LogRecord attributes that are not user data (left untouched by RedactingFilter).
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def luhn_valid(digits: str) -> bool:
    """The payment card check digit test (ISO/IEC 7812)."""
    if not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _is_phone(candidate: str, intl: bool) -> bool:
    """International numbers by their prefix; national ones by the trunk prefix 0 (020 7946 0958,
    06 12 34 56 78, 07911123456) or the North American format. Anything else (order and
    reference numbers such as 123456 or 2024-0001-7788, dates, amounts) is not a phone number."""
    digits = sum(ch.isdigit() for ch in candidate)
    if _DATE.match(candidate):
        return False
    if intl:
        return 8 <= digits <= 15
    if _NANP.fullmatch(candidate):
        return True
    if not candidate.lstrip("(").startswith("0"):
        return False
    grouped = any(ch in " .-()" for ch in candidate)
    return 9 <= digits <= 12 if grouped else 10 <= digits <= 11


class Redactor:
    """Replaces personal data in text. ``patterns`` adds named regular expressions, e.g.
    ``{"member_id": r"\\bMBR-\\d{6}\\b"}``; ``disable`` turns built-ins off."""

    def __init__(self, patterns: Mapping[str, str] | None = None, *, disable: tuple[str, ...] = ()) -> None:
        unknown = [name for name in disable if name not in _BUILTIN]
        if unknown:
            raise ConfigError(f"pii: unknown built-in detector(s) {', '.join(unknown)} (known: {', '.join(_BUILTIN)})")
        self.enabled = tuple(name for name in _BUILTIN if name not in disable)
        self.patterns: dict[str, re.Pattern[str]] = {}
        problems = []
        for name, pattern in (patterns or {}).items():
            if not _NAME.match(name):
                problems.append(f"pii pattern name {name!r}: use letters, digits and '_'")
                continue
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                problems.append(f"pii pattern {name!r}: invalid regular expression: {exc}")
                continue
            if compiled.match(""):
                problems.append(f"pii pattern {name!r} matches the empty string")
                continue
            self.patterns[name] = compiled
        if problems:
            raise ConfigError(problems)

    @classmethod
    def from_config(cls, section: Any, where: str = "pii") -> Redactor | None:
        """The bot's ``pii:`` section: ``true``/``false``, or a mapping with ``enabled`` (default
        true), ``patterns`` (name -> regex) and ``disable`` (built-ins to turn off). ``None``: off."""
        if section is None or section is False:
            return None
        if section is True:
            return cls()
        if not isinstance(section, Mapping):
            raise ConfigError(f"{where}: expected true, false or a mapping with enabled/patterns/disable")
        unknown = sorted(set(section) - {"enabled", "patterns", "disable"})
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(map(str, unknown))} (known: enabled, patterns, disable)")
        if not section.get("enabled", True):
            return None
        patterns = section.get("patterns") or {}
        disable = section.get("disable") or []
        if not isinstance(patterns, Mapping) or not all(isinstance(v, str) for v in patterns.values()):
            raise ConfigError(f"{where}.patterns: expected a mapping of name: regular expression")
        if not isinstance(disable, list) or not all(isinstance(v, str) for v in disable):
            raise ConfigError(f"{where}.disable: expected a list, e.g. [phone]")
        try:
            return cls({str(k): v for k, v in patterns.items()}, disable=tuple(disable))
        except ConfigError as exc:
            raise ConfigError([f"{where}: {p}" for p in exc.problems]) from exc

    def redact(self, text: str) -> str:
        if not text:
            return text
        for name, pattern in self.patterns.items():
            text = pattern.sub(f"[{name.upper()}]", text)
        if "email" in self.enabled and "@" in text:
            text = _EMAIL.sub("[EMAIL]", text)
        if not any(ch.isdigit() for ch in text):
            return text
        if "card" in self.enabled:
            text = _CARD.sub(self._card, text)
        if "phone" in self.enabled:
            text = _PHONE.sub(self._phone, text)
        return text

    @staticmethod
    def _card(match: re.Match[str]) -> str:
        digits = re.sub(r"[ -]", "", match.group())
        return "[CARD]" if luhn_valid(digits) else match.group()

    @staticmethod
    def _phone(match: re.Match[str]) -> str:
        candidate = match.group()
        return "[PHONE]" if _is_phone(candidate, intl=bool(match.group("intl"))) else candidate

    def redact_data(self, value: Any) -> Any:
        """Every string inside JSON-like data (event data, metadata), redacted; keys are kept."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {k: self.redact_data(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_data(v) for v in value]
        return value


PSEUDONYM_PREFIX = "anon-"
MIN_KEY_CHARS = 32


class Pseudonymiser:
    """Keyed pseudonyms of identifiers: ``anon-`` and 32 hex digits (128 bits of HMAC-SHA256).

    One key, one pseudonym per identifier (stable across restarts and replicas); a new key gives
    every identifier a new pseudonym, so rotating it separates old conversations from new ones.
    The empty identifier (a channel that sends none) stays empty."""

    def __init__(self, key: str) -> None:
        if len(key) < MIN_KEY_CHARS:
            raise ConfigError(f"the pseudonym key needs at least {MIN_KEY_CHARS} characters "
                              "(e.g. `openssl rand -hex 32`)")
        self._key = key.encode("utf-8")

    def __repr__(self) -> str:
        return "Pseudonymiser(key=***)"

    def pseudonym(self, identifier: str) -> str:
        if not identifier:
            return identifier
        digest = hmac.new(self._key, identifier.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
        return PSEUDONYM_PREFIX + digest[:32]


@dataclass(frozen=True)
class Privacy:
    """A bot's ``pii:`` as its store applies it before each write: texts redacted, ids pseudonymised."""

    redactor: Redactor
    pseudonymiser: Pseudonymiser

    def user_id(self, user_id: str) -> str:
        return self.pseudonymiser.pseudonym(user_id)

    def event(self, event: Event) -> Event:
        return Event(event.kind, self.redactor.redact_data(dict(event.data)), timestamp=event.timestamp)

    def events(self, events: Iterable[Event]) -> tuple[Event, ...]:
        return tuple(self.event(e) for e in events)


class PrivacyRules:
    """Each bot's ``Privacy`` (absent: the bot stores what it is given), kept by a conversation store
    and set when the bot is loaded (``ConversationStore.set_privacy``)."""

    def __init__(self) -> None:
        self._by_bot: dict[str, Privacy] = {}

    def set(self, bot: str, privacy: Privacy | None) -> None:
        if privacy is None:
            self._by_bot.pop(bot, None)
        else:
            self._by_bot[bot] = privacy

    def user_id(self, bot: str, user_id: str) -> str:
        privacy = self._by_bot.get(bot)
        return user_id if privacy is None else privacy.user_id(user_id)

    def event(self, bot: str, event: Event) -> Event:
        privacy = self._by_bot.get(bot)
        return event if privacy is None else privacy.event(event)

    def events(self, bot: str, events: Iterable[Event]) -> tuple[Event, ...]:
        privacy = self._by_bot.get(bot)
        return tuple(events) if privacy is None else privacy.events(events)


class RedactingFilter(logging.Filter):
    """Redacts a log record's message, arguments, exception text and ``extra`` string fields.

    Attach it to the handlers (a logger's filters do not see records of child loggers):
    ``for h in logging.getLogger().handlers: h.addFilter(RedactingFilter(redactor))``.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor.redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor.redact(record.exc_text)
            record.exc_info = None  # formatters print exc_text; nothing can re-render the raw one
        if record.stack_info:
            record.stack_info = self.redactor.redact(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _RECORD_FIELDS and isinstance(value, (str, Mapping, list, tuple)):
                setattr(record, key, self.redactor.redact_data(value))
        return True

"""Entities like Duckling, without a model: numbers, ordinals, money, times, durations, e-mails, phones, URLs.

Rasa bots put ``DucklingEntityExtractor`` in their ``config.yml`` pipeline and rely on its entity names and
value shapes: slots fill from ``time``, actions read ``amount-of-money`` as a number. Running the Haskell
Duckling server is an extra service many teams would rather not operate, so this module gives the same
entities in process, built on maintained libraries where one exists (``dateparser`` finds and resolves
dates and times relative to a reference time and timezone, ``phonenumbers`` finds phone numbers,
``number-parser`` reads numbers written in words); the rest (money, durations, e-mail, URLs) are small
rules on top. When the pipeline's ``DucklingEntityExtractor`` names a ``url``, ``DucklingHTTPExtractor``
asks that real Duckling server instead. Both are torch-free and answer the same shape.

How the runtime calls it (after the NLU model, once per message)::

    from bots.nlu.extractors import extractor_for
    duckling = extractor_for(component)          # the pipeline entry: {"name": "DucklingEntityExtractor", ...}
    entities = await duckling.extract(text, reference_time=message.received_at)
    understanding = dataclasses.replace(understanding, entities=understanding.entities + tuple(entities))

or, without a pipeline entry, the plain function (synchronous, ~1 ms, no I/O)::

    extract(text, dimensions=["time", "number"], locale="en_US", timezone="Europe/Berlin",
            reference_time=datetime(2026, 12, 1, 10, 30, tzinfo=UTC))

Contract of every entity returned (``bots.types.Entity``), as Rasa's ``DucklingEntityExtractor`` gives it:

* ``entity`` is Duckling's dimension name: ``number``, ``ordinal``, ``amount-of-money``, ``time``,
  ``duration``, ``email``, ``phone-number``, ``url``;
* ``start``/``end`` are character offsets into ``text``; ``confidence`` is 1.0; ``extractor`` is
  ``"DucklingEntityExtractor"``;
* ``additional_info`` is Duckling's value object: ``{"value": 21, "type": "value"}`` for numbers and
  ordinals, ``{"value": 20, "unit": "USD", "type": "value"}`` for money, ``{"value": 3, "day": 3,
  "unit": "day", "normalized": {"value": 259200, "unit": "second"}, "type": "value"}`` for durations,
  ``{"value": "2026-12-03T00:00:00.000+00:00", "grain": "day", "type": "value", "values": [...]}`` for a
  time (ISO 8601 with milliseconds and offset, in the requested timezone, truncated to its grain) and
  ``{"from": {"value", "grain"}, "to": {"value", "grain"}, "type": "interval", "values": [...]}`` for an
  interval (``to`` exclusive as Duckling's: "from 3pm to 5pm" ends at 18:00; an open side is absent);
* ``value`` is that value as text (``"21"``, ``"20"``, the ISO string; an interval ``FROM/TO`` with ``..``
  for an open side) and ``Entity.rasa_value`` gives it as Rasa does (a number, the ISO string, or
  ``{"from", "to"}``).

Overlaps are resolved as Duckling ranks them: among the requested dimensions an entity whose span lies
strictly inside another's is dropped ("20 dollars" is money, not also the number 20; "in 3 days" is a
time, not also a duration; the digits of a phone number are not numbers), partial overlaps are kept.
Words (number words, currency and duration units, "ago", "from ... to ...") are English; dates and times
follow ``dateparser``'s support for the locale's language. Bad configuration (an unknown dimension or
timezone) raises ``ValueError`` with the reason; no input text ever raises.
"""

from __future__ import annotations

import json
import logging
import re
import time as _time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import number_parser
import phonenumbers
from dateparser.date import DateDataParser
from dateparser.search import search_dates
from dateutil.relativedelta import relativedelta

from bots.types import JSON, Entity

log = logging.getLogger(__name__)

EXTRACTOR = "DucklingEntityExtractor"
DIMENSIONS: tuple[str, ...] = ("number", "ordinal", "amount-of-money", "time", "duration", "email", "phone-number",
                               "url")

# -- numbers -------------------------------------------------------------------------------------------------

_CARDINAL_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million "
    "billion trillion").split()
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_ORDINAL_WORDS = (
    "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth fourteenth "
    "fifteenth sixteenth seventeenth eighteenth nineteenth twentieth thirtieth fortieth fiftieth sixtieth "
    "seventieth eightieth ninetieth hundredth thousandth millionth billionth").split()
_CW = "(?:" + "|".join(sorted(_CARDINAL_WORDS, key=len, reverse=True)) + ")"
_OW = "(?:" + "|".join(sorted(_ORDINAL_WORDS, key=len, reverse=True)) + ")"
# A run of number words: "twenty one", "twenty-one", "one hundred and five", "a hundred".
_WORD_RUN = re.compile(rf"\b(?:an?\s+(?=(?:hundred|thousand|million|billion)\b))?{_CW}(?:(?:\s+|-|\s+and\s+){_CW})*\b",
                       re.IGNORECASE)
_ORDINAL_WORD_RUN = re.compile(rf"\b(?:{_CW}(?:\s+|-))*{_OW}\b", re.IGNORECASE)
_ORDINAL_DIGITS = re.compile(r"(?<![\w.,])(\d+)\s?(st|nd|rd|th)\b", re.IGNORECASE)
# Digits: 12, 1,200, 3.5, -4; not inside a longer token (ids, versions, times, e-mails).
_DIGITS = re.compile(r"(?:(?<![\w-])-)?(?<![\w.,/:@])(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?(?![\d]|[.,]\d)")
_DIGIT_SCALE = re.compile(r"\s*(?:(?P<k>[kK])\b|\s(?P<word>hundred|thousand|million|billion|trillion)\b)",
                          re.IGNORECASE)


@dataclass(frozen=True)
class _Number:
    start: int
    end: int
    value: int | float
    words: bool  # written in words ("twenty one"); digits otherwise
    glued: bool  # digits directly followed by a letter ("5pm", "20USD"): money may use it, ``number`` not


def _as_number(v: float) -> int | float:
    """Duckling's JSON numbers: integral values are written without a fraction (Rasa then sees an int)."""
    if isinstance(v, int):
        return v
    return int(v) if v.is_integer() and abs(v) < 2**53 else v


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    return str(v)


def _word_number(words: str) -> int | None:
    words = re.sub(r"^an?\s+", "one ", words.strip(), flags=re.IGNORECASE)
    value = number_parser.parse_number(words)
    return value if isinstance(value, int) else None


def _split_word_run(text: str, start: int, end: int) -> list[_Number]:
    """Numbers in a run of number words: the longest prefix that reads as one number, then the rest
    ("one two" is two numbers, "one hundred and five" one; "and" joins only after a scale word)."""
    tokens = [(m.start() + start, m.end() + start, m.group()) for m in re.finditer(r"[A-Za-z]+", text[start:end])]
    out: list[_Number] = []
    i = 0
    while i < len(tokens):
        if tokens[i][2].lower() == "and":
            i += 1
            continue
        found = None
        for j in range(len(tokens), i, -1):
            if tokens[j - 1][2].lower() == "and":
                continue
            chunk = text[tokens[i][0]:tokens[j - 1][1]]
            if re.search(r"\band\b", chunk, re.IGNORECASE) and not re.search(
                    r"\b(?:hundred|thousand|million|billion|trillion)\s+and\b", chunk, re.IGNORECASE):
                continue
            value = _word_number(chunk)
            if value is not None:
                found = (j, value)
                break
        if found is None:
            i += 1
            continue
        j, value = found
        out.append(_Number(tokens[i][0], tokens[j - 1][1], value, True, False))
        i = j
    return out


def _numbers(text: str) -> list[_Number]:
    out: list[_Number] = []
    for m in _DIGITS.finditer(text):
        raw = m.group().replace(",", "")
        value: float = float(raw) if "." in raw else int(raw)
        end = m.end()
        scale = _DIGIT_SCALE.match(text, end)
        if scale is not None:
            value = value * (1000 if scale.group("k") else _SCALES[scale.group("word").lower()])
            end = scale.end()
        glued = end < len(text) and text[end].isalpha()
        out.append(_Number(m.start(), end, _as_number(value), False, glued))
    for m in _WORD_RUN.finditer(text):
        out.extend(_split_word_run(text, m.start(), m.end()))
    return sorted(out, key=lambda n: n.start)


def _ordinals(text: str) -> list[tuple[int, int, int]]:
    out = [(m.start(), m.end(), int(m.group(1))) for m in _ORDINAL_DIGITS.finditer(text)]
    for m in _ORDINAL_WORD_RUN.finditer(text):
        value = number_parser.parse_ordinal(m.group().lower())
        start = m.start()
        if not isinstance(value, int):  # "one second": the ordinal is the last word alone
            last = re.search(rf"{_OW}$", m.group(), re.IGNORECASE)
            assert last is not None
            start = m.start() + last.start()
            value = number_parser.parse_ordinal(last.group().lower())
        if isinstance(value, int):
            out.append((start, m.end(), value))
    return out


# -- money ---------------------------------------------------------------------------------------------------

_DOLLAR_BY_REGION = {"AU": "AUD", "CA": "CAD", "NZ": "NZD", "SG": "SGD", "HK": "HKD", "JM": "JMD", "TT": "TTD"}
_SYMBOLS = {"$": "$", "US$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "₹": "INR", "₩": "KRW", "₽": "RUB", "₺": "TRY",
            "฿": "THB", "₪": "ILS", "₫": "VND", "₱": "PHP", "₦": "NGN", "₴": "UAH", "zł": "PLN", "R$": "BRL"}
_CODES = set(
    "AED ARS AUD BGN BRL BYN CAD CHF CLP CNY COP CZK DKK EGP EUR GBP GEL HKD HRK HUF IDR ILS INR IQD ISK JMD JOD JPY "
    "KES KRW KWD LBP MAD MNT MXN MYR NGN NOK NZD PEN PHP PKR PLN QAR RON RUB SAR SEK SGD THB TRY TTD TWD UAH USD VND "
    "ZAR BTC".split())
_CURRENCY_WORDS = {"dollar": "$", "dollars": "$", "buck": "$", "bucks": "$", "euro": "EUR", "euros": "EUR",
                   "pound": "GBP", "pounds": "GBP", "quid": "GBP", "cent": "cent", "cents": "cent", "yen": "JPY",
                   "rupee": "INR", "rupees": "INR", "yuan": "CNY", "rmb": "CNY", "franc": "CHF", "francs": "CHF",
                   "won": "KRW", "ruble": "RUB", "rubles": "RUB", "bitcoin": "BTC", "bitcoins": "BTC"}
_SYM = "|".join(re.escape(s) for s in sorted(_SYMBOLS, key=len, reverse=True))
_CODE = "|".join(sorted(_CODES))
_MONEY_BEFORE = re.compile(rf"(?:(?P<sym>{_SYM})|\b(?P<code>{_CODE})\b)\s?$", re.IGNORECASE)
_WORD_CURRENCY = "|".join(sorted(_CURRENCY_WORDS, key=len, reverse=True))
_MONEY_AFTER = re.compile(rf"\s?(?:(?P<sym>{_SYM})|(?P<code>{_CODE})\b|(?P<word>{_WORD_CURRENCY})\b)", re.IGNORECASE)


def _unit_of(match: re.Match[str], region: str) -> str:
    if match.group("sym"):
        unit = _SYMBOLS[match.group("sym").upper() if match.group("sym").isascii() else match.group("sym")]
    elif match.group("code"):
        unit = match.group("code").upper()
    else:
        unit = _CURRENCY_WORDS[match.group("word").lower()]
    if unit == "$":  # Duckling resolves the ambiguous dollar by the locale's region
        unit = _DOLLAR_BY_REGION.get(region, "USD")
    return unit


def _money(text: str, numbers: Sequence[_Number], region: str) -> list[tuple[int, int, JSON]]:
    out: list[tuple[int, int, JSON]] = []
    for n in numbers:
        before = _MONEY_BEFORE.search(text, max(0, n.start - 5), n.start)
        after = _MONEY_AFTER.match(text, n.end)
        if before is not None and before.end() == n.start and not n.words:
            start, end, unit = before.start(), n.end, _unit_of(before, region)
        elif after is not None:
            start, end, unit = n.start, after.end(), _unit_of(after, region)
        else:
            continue
        if n.glued and not (after is not None and end == after.end()):
            continue
        out.append((start, end, {"value": n.value, "type": "value", "unit": unit}))
    return out


# -- durations -----------------------------------------------------------------------------------------------

_GRAINS = ("second", "minute", "hour", "day", "week", "month", "quarter", "year")
_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800, "month": 2592000,
            "quarter": 7776000, "year": 31536000}
_UNIT_WORDS = {"second": "second", "seconds": "second", "sec": "second", "secs": "second", "minute": "minute",
               "minutes": "minute", "min": "minute", "mins": "minute", "hour": "hour", "hours": "hour", "hr": "hour",
               "hrs": "hour", "day": "day", "days": "day", "week": "week", "weeks": "week", "wk": "week",
               "wks": "week", "month": "month", "months": "month", "quarter": "quarter", "quarters": "quarter",
               "year": "year", "years": "year", "yr": "year", "yrs": "year"}
_UNIT = "(?P<unit>" + "|".join(sorted(_UNIT_WORDS, key=len, reverse=True)) + r")\b"
_UNIT_AFTER_NUMBER = re.compile(rf"\s*-?\s*(?:(?P<half>and\s+a\s+half)\s+)?{_UNIT}(?P<tail>\s+and\s+a\s+half\b)?",
                                re.IGNORECASE)
_ARTICLE_UNIT = re.compile(rf"\b(?P<half>half\s+)?(?:an?|one)\s+{_UNIT}(?P<tail>\s+and\s+a\s+half\b)?", re.IGNORECASE)
_FINER = {"year": ("month", 12), "quarter": ("month", 3), "month": ("day", 30), "week": ("day", 7),
          "day": ("hour", 24), "hour": ("minute", 60), "minute": ("second", 60)}


@dataclass(frozen=True)
class _Duration:
    start: int
    end: int
    value: int
    grain: str

    def info(self) -> JSON:
        return {"value": self.value, self.grain: self.value, "type": "value", "unit": self.grain,
                "normalized": {"value": self.value * _SECONDS[self.grain], "unit": "second"}}


def _whole(value: float, grain: str) -> tuple[int, str]:
    """1.5 hours is 90 minutes: Duckling gives durations as a whole number of their finest grain."""
    while not float(value).is_integer() and grain in _FINER:
        grain, factor = _FINER[grain]
        value = value * factor
    return round(value), grain


def _durations(text: str, numbers: Sequence[_Number]) -> list[_Duration]:
    single: list[_Duration] = []
    for n in numbers:
        m = _UNIT_AFTER_NUMBER.match(text, n.end)
        if m is None or (n.glued and m.start() != n.end):
            continue
        value = float(n.value) + (0.5 if m.group("half") or m.group("tail") else 0.0)
        if value < 0:
            continue
        whole, grain = _whole(value, _UNIT_WORDS[m.group("unit").lower()])
        single.append(_Duration(n.start, m.end(), whole, grain))
    for m in _ARTICLE_UNIT.finditer(text):
        value = (0.5 if m.group("half") else 1.0) + (0.5 if m.group("tail") else 0.0)
        whole, grain = _whole(value, _UNIT_WORDS[m.group("unit").lower()])
        single.append(_Duration(m.start(), m.end(), whole, grain))
    single.sort(key=lambda d: (d.start, -d.end))
    # "1 hour 30 minutes", "2 hours and 15 minutes": one duration in the finer unit
    merged: list[_Duration] = []
    for d in single:
        if merged and d.start < merged[-1].end:
            continue
        if merged:
            last = merged[-1]
            gap = text[last.end:d.start]
            if re.fullmatch(r"\s*(?:,|and|,\s*and)?\s*", gap, re.IGNORECASE) and \
                    _GRAINS.index(d.grain) < _GRAINS.index(last.grain) and d.grain != "quarter":
                total = last.value * _SECONDS[last.grain] // _SECONDS[d.grain] + d.value
                merged[-1] = _Duration(last.start, d.end, total, d.grain)
                continue
        merged.append(d)
    return merged


# -- time ----------------------------------------------------------------------------------------------------

_PART_OF_DAY = {"morning": (4, 12), "afternoon": (12, 19), "evening": (18, 24), "night": (18, 24),
                "tonight": (18, 24), "lunch": (12, 14)}
_LEADING = re.compile(r"^(?:(?:on|at|in|by|of|for|from|since|after|during)\s+)+", re.IGNORECASE)
_STRIP_FROM_SPAN = re.compile(r"(?:(?:of|for|from|during)\s+)+", re.IGNORECASE)
_TRAILING = re.compile(r"(?:\s+(?:in|at|on|of|for|from|by|and|to|the))+$", re.IGNORECASE)
_OPEN_FROM = re.compile(r"^(?:after|since)\s+", re.IGNORECASE)
_OPEN_TO_BEFORE = re.compile(r"\b(?:before|until|till|til|up\s+to)\s+$", re.IGNORECASE)
_DATE_SHAPE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|\d{1,2}/\d{1,2}|\d{1,2}:\d{2}")
_YEAR = re.compile(r"^(?:in|since|until|till|before|after|by)\s+(1[89]\d\d|20\d\d|2100)$", re.IGNORECASE)
# Bare words that dateparser reads as dates but people mostly mean otherwise ("May I ...", "a second").
_AMBIGUOUS = {"may", "march", "mar", "sat", "sun", "mon", "tue", "wed", "thu", "fri", "jan", "feb", "apr", "jun",
              "jul", "aug", "sep", "sept", "oct", "nov", "dec", "second", "a", "an"}
_DATE_WORD = re.compile(
    r"\b(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?|"
    r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?|mon(?:day)?|tue(?:s(?:day)?)?|wed(?:nesday)?|thu(?:rs(?:day)?)?|"
    r"fri(?:day)?|sat(?:urday)?|sun(?:day)?|today|tomorrow|tonight|yesterday|now|noon|midnight|morning|"
    r"afternoon|evening|night|weekend|days?|weeks?|fortnight|months?|years?|hours?|minutes?|seconds?|ago|"
    r"o'clock)\b|\d\s*(?:am|pm|a\.m\.|p\.m\.)(?!\w)", re.IGNORECASE)
_DAY_OF_MONTH = re.compile(r"^(?:on\s+)?the\s+(\d{1,2})(?:st|nd|rd|th)$", re.IGNORECASE)
_INTERVAL = re.compile(r"\b(?P<kw>from|between)\s+(?P<a>\S+(?:\s+\S+){0,3}?)\s*(?P<conj>\bto\b|\band\b|\buntil\b|"
                       r"\btill\b|\bthrough\b|-|\u2013)\s*(?P<b>\S+(?:\s+\S+){0,3})", re.IGNORECASE)
_RELATIVE_BEFORE = re.compile(r"\b(?P<kw>in|within)\s+$", re.IGNORECASE)
_RELATIVE_AFTER = re.compile(r"\s+(?P<kw>ago|from\s+now|hence|before\s+now)\b", re.IGNORECASE)


@dataclass(frozen=True)
class _Instant:
    at: datetime
    grain: str

    def info(self) -> JSON:
        return {"value": _iso(self.at), "grain": self.grain}


def _iso(d: datetime) -> str:
    offset = d.strftime("%z")
    return f"{d:%Y-%m-%dT%H:%M:%S}.{d.microsecond // 1000:03d}{offset[:3]}:{offset[3:]}"


def _truncate(d: datetime, grain: str) -> datetime:
    tz = d.tzinfo
    d = d.replace(microsecond=0)
    if grain == "second":
        return d
    d = d.replace(second=0)
    if grain == "minute":
        return d
    d = d.replace(minute=0)
    if grain == "hour":
        return d
    d = d.replace(hour=0)
    if grain == "week":
        d = d - timedelta(days=d.weekday())
    elif grain == "month":
        d = d.replace(day=1)
    elif grain == "quarter":
        d = d.replace(day=1, month=(d.month - 1) // 3 * 3 + 1)
    elif grain == "year":
        d = d.replace(day=1, month=1)
    return d.replace(tzinfo=tz)


def _plus(d: datetime, grain: str, n: int) -> datetime:
    if grain in ("month", "quarter", "year"):
        months = n * {"month": 1, "quarter": 3, "year": 12}[grain]
        return d + relativedelta(months=months)
    return d + timedelta(seconds=n * _SECONDS[grain])


def _point(instant: _Instant) -> JSON:
    one = {**instant.info(), "type": "value"}
    return {"values": [one], **one}


def _interval(start: _Instant | None, end: _Instant | None) -> JSON:
    one: JSON = {"type": "interval"}
    if start is not None:
        one["from"] = start.info()
    if end is not None:
        one["to"] = end.info()
    return {"values": [dict(one)], **one}


@dataclass
class _TimeContext:
    ref: datetime  # aware, in ``zone``
    zone: ZoneInfo
    tz_name: str
    languages: list[str]

    def settings(self, base: datetime | None = None) -> dict[str, Any]:
        return {"RELATIVE_BASE": (base or self.ref).replace(tzinfo=None), "PREFER_DATES_FROM": "future",
                "RETURN_TIME_AS_PERIOD": True, "TIMEZONE": self.tz_name, "RETURN_AS_TIMEZONE_AWARE": True}

    def parse(self, phrase: str, base: datetime | None = None) -> _Instant | tuple[_Instant, _Instant] | None:
        """One phrase as Duckling would resolve it: an instant truncated to its grain, or (parts of day) an
        interval; ``None`` when dateparser does not read all of it as a date or time."""
        data = DateDataParser(languages=self.languages, settings=self.settings(base)).get_date_data(phrase)
        if data.date_obj is None:
            return None
        at = data.date_obj.astimezone(self.zone) if data.date_obj.tzinfo else data.date_obj.replace(tzinfo=self.zone)
        period = data.period or "day"
        if period == "part_of_day":
            words = phrase.lower().split()
            part = next((w for w in reversed(words) if w in _PART_OF_DAY), None)
            if part is not None:
                lo, hi = _PART_OF_DAY[part]
                day = _truncate(at, "day")
                return _Instant(_plus(day, "hour", lo), "hour"), _Instant(_plus(day, "hour", hi), "hour")
            period = "time"
        if period == "time":
            if phrase.strip().lower() == "now":
                return _Instant(at.replace(microsecond=0), "second")
            grain = "second" if at.second else "minute" if at.minute else "hour"
        else:
            grain = period if period in _GRAINS else "day"
        return _Instant(_truncate(at, grain), grain)


def _bare_duration(core: str) -> bool:
    """"3 days", "a second", "1 hour 30 minutes": a duration, which dateparser alone would read as a time."""
    return re.fullmatch(rf"(?:(?:an?|the)\s+)?(?:(?:\d+(?:\.\d+)?|{_CW}(?:[\s-]+{_CW})*|an?|half\s+an?|one)[\s-]*"
                        rf"{_UNIT}[\s,]*(?:and\s+)?)+", core.strip(), re.IGNORECASE) is not None


def _keep_found_time(text: str, start: int, end: int, english: bool) -> bool:
    """Whether a phrase dateparser found is a date or time as people write one: never a bare number, an
    amount, an ambiguous word ("May I"), a duration alone; in English it must name a date or time
    ("the 3rd one" is an ordinal, not March)."""
    phrase = text[start:end]
    core = _LEADING.sub("", phrase).strip()
    lowered = core.lower()
    if len(core) <= 2 or lowered in _AMBIGUOUS or re.search(r"[$€£¥₹]", phrase):
        return False
    if english and not (_DATE_WORD.search(core) or _DATE_SHAPE.search(core) or _YEAR.match(phrase.strip())):
        return False
    if not re.search(r"[A-Za-z]", core) and not _DATE_SHAPE.search(core):
        return _YEAR.match(phrase.strip()) is not None
    if _bare_duration(core) or re.fullmatch(r"\d+\s?(?:st|nd|rd|th)", lowered):
        return False
    return not re.fullmatch(r"\d{1,2}\s*[-\u2013]\s*\d{1,2}", core)


def _locate(text: str, phrase: str, cursor: int) -> int:
    at = text.find(phrase, cursor)
    if at < 0:
        m = re.compile(r"\s+".join(re.escape(w) for w in phrase.split()), re.IGNORECASE).search(text, cursor)
        at = m.start() if m else -1
    return at


def _times(text: str, durations: Sequence[_Duration], ctx: _TimeContext,
           masked: Sequence[tuple[int, int]] = ()) -> list[tuple[int, int, JSON]]:
    """Times and intervals; ``masked`` spans (e-mails, URLs, phone numbers, money) are blanked out before
    dateparser reads the text, so that "+44 20 7946 0958" or "$12" are never read as dates."""
    out: list[tuple[int, int, JSON]] = []
    taken: list[tuple[int, int]] = list(masked)
    for s, e in masked:
        text = text[:s] + " " * (e - s) + text[e:]

    def free(s: int, e: int) -> bool:
        return all(e <= a or s >= b for a, b in taken)

    # 1. "in 3 days", "2 weeks ago", "within an hour": Duckling's shift of the reference time by a duration,
    #    rounded to the grain below the duration's (in 3 days -> the hour, 3 days on).
    for d in durations:
        before = _RELATIVE_BEFORE.search(text, 0, d.start)
        after = _RELATIVE_AFTER.match(text, d.end)
        if before is not None and before.end() == d.start:
            start, end, kw = before.start(), d.end, before.group("kw").lower()
        elif after is not None:
            start, end, kw = d.start, after.end(), re.sub(r"\s+", " ", after.group("kw").lower())
        else:
            continue
        sign = -1 if kw in ("ago", "before now") else 1
        if kw == "within":
            now = _Instant(ctx.ref.replace(microsecond=0), "second")
            value = _interval(now, _Instant(_plus(now.at, d.grain, d.value), "second"))
        else:
            grain = {"second": "second", "year": "month", "month": "day", "quarter": "day", "week": "day"}.get(
                d.grain, _GRAINS[_GRAINS.index(d.grain) - 1])
            value = _point(_Instant(_plus(_truncate(ctx.ref, grain), d.grain, sign * d.value), grain))
        out.append((start, end, value))
        taken.append((start, end))

    # 2. "from monday to friday", "between 3pm and 5pm": both ends read by dateparser, the end after the start.
    for m in _INTERVAL.finditer(text):
        if not free(m.start(), m.end()):
            continue
        a_words = m.group("a")
        first = ctx.parse(a_words)
        if first is None or isinstance(first, tuple):
            continue
        b_tokens = list(re.finditer(r"\S+", m.group("b")))
        for k in range(len(b_tokens), 0, -1):
            phrase = m.group("b")[:b_tokens[k - 1].end()].rstrip(",.;!?")
            second = ctx.parse(phrase, base=first.at)
            if second is None or isinstance(second, tuple):
                continue
            end_at = _plus(second.at, second.grain, 1)  # Duckling's "to" is exclusive
            end = m.start("b") + len(phrase)
            out.append((m.start(), end, _interval(first, _Instant(end_at, second.grain))))
            taken.append((m.start(), end))
            break

    # 3. everything else dateparser finds
    if re.search(r"[A-Za-z0-9]", text):
        found = search_dates(text, languages=ctx.languages, settings=ctx.settings()) or []
        cursor = 0
        for phrase, _ in found:
            start = _locate(text, phrase, cursor)
            if start < 0:
                continue
            end = start + len(phrase)
            cursor = end
            strip = _STRIP_FROM_SPAN.match(text, start, end)
            if strip is not None:
                start = strip.end()
            while end > start and text[end - 1] in ",.;:!? ":
                end -= 1
            trailing = _TRAILING.search(text, start, end)
            if trailing is not None:
                end = trailing.start()
            phrase = text[start:end]
            dom = _DAY_OF_MONTH.match(phrase)
            if not free(start, end) or (dom is None and not _keep_found_time(text, start, end,
                                                                              ctx.languages == ["en"])):
                continue
            parsed: _Instant | tuple[_Instant, _Instant] | None
            if dom is not None:
                parsed = _day_of_month(ctx.ref, int(dom.group(1)))
            else:
                parsed = ctx.parse(_LEADING.sub("", phrase) or phrase)
            if parsed is None:
                continue
            if isinstance(parsed, tuple):
                value = _interval(*parsed)
            elif _OPEN_FROM.match(phrase):
                value = _interval(parsed, None)
            else:
                opener = _OPEN_TO_BEFORE.search(text, 0, start)
                if opener is not None and opener.end() == start:
                    start = opener.start()
                    value = _interval(None, parsed)
                else:
                    value = _point(parsed)
            out.append((start, end, value))
            taken.append((start, end))
    return out


def _day_of_month(ref: datetime, day: int) -> _Instant | None:
    """"on the 5th": the next 5th of a month from the reference day on (dateparser reads it as May)."""
    if not 1 <= day <= 31:
        return None
    month = _truncate(ref, "month")
    for k in range(0, 13):
        candidate = month + relativedelta(months=k)
        try:
            at = candidate.replace(day=day)
        except ValueError:
            continue
        if at >= _truncate(ref, "day"):
            return _Instant(at, "day")
    return None


# -- e-mail, URL, phone --------------------------------------------------------------------------------------

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]*[A-Za-z0-9_%+-])?@"
                    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,24}\b")
_TLDS = ("com|org|net|edu|gov|io|co|ai|app|dev|info|biz|me|tv|uk|us|de|fr|es|it|nl|be|ch|at|se|no|dk|fi|pl|pt|ie|"
         "ca|au|nz|in|jp|cn|br|mx|ru|za|eu|shop|store|online|site|tech|cloud")
_URL = re.compile(
    r"(?<![\w@.-])(?:(?:https?|ftp)://[^\s<>\"']+|www\.[^\s<>\"']+|"
    rf"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+(?:{_TLDS})\b(?:[:/?#][^\s<>\"']*)?)", re.IGNORECASE)


def _urls(text: str) -> list[tuple[int, int, JSON]]:
    out = []
    for m in _URL.finditer(text):
        end = m.end()
        while end > m.start() and text[end - 1] in ".,;:!?)]}'\"":
            if text[end - 1] == ")" and text[m.start():end].count("(") >= text[m.start():end].count(")"):
                break
            end -= 1
        url = text[m.start():end]
        host = re.sub(r"^(?:[a-z]+://)?", "", url, flags=re.IGNORECASE)
        host = re.split(r"[:/?#]", host, maxsplit=1)[0].lower()
        domain = host[4:] if host.startswith("www.") else host
        if "." not in domain:
            continue
        out.append((m.start(), end, {"value": url, "domain": domain}))
    return out


def _phones(text: str, region: str) -> list[tuple[int, int, JSON]]:
    out = []
    for m in phonenumbers.PhoneNumberMatcher(text, region or "US", leniency=phonenumbers.Leniency.VALID):
        national = str(m.number.national_number)
        value = f"(+{m.number.country_code}) {national}" if m.raw_string.lstrip().startswith("+") else national
        e164 = phonenumbers.format_number(m.number, phonenumbers.PhoneNumberFormat.E164)
        out.append((m.start, m.end, {"value": value, "e164": e164}))
    return out


# -- putting it together ---------------------------------------------------------------------------------------

def _locale_parts(locale: str) -> tuple[str, str]:
    m = re.fullmatch(r"([A-Za-z]{2,3})(?:[_-]([A-Za-z]{2}))?", locale.strip())
    if m is None:
        raise ValueError(f"locale {locale!r}: expected a language with an optional region, like 'en_US'")
    return m.group(1).lower(), (m.group(2) or "").upper()


def _zone(timezone: str | None) -> tuple[ZoneInfo, str]:
    name = timezone or "UTC"
    try:
        return ZoneInfo(name), name
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone {name!r}: not an IANA timezone name (like 'Europe/Berlin')") from None


def _dimensions(dimensions: Iterable[str] | None, known: Sequence[str] | None) -> tuple[str, ...]:
    if dimensions is None:
        return tuple(known or DIMENSIONS)
    if isinstance(dimensions, str):
        raise ValueError("dimensions: expected a list of dimension names, got a string")
    dims = tuple(dimensions)
    bad = [d for d in dims if not isinstance(d, str) or (known is not None and d not in known)]
    if bad:
        raise ValueError(f"dimensions: unknown {', '.join(map(repr, bad))}; known: {', '.join(known or ())}")
    return dims


def _reference(reference_time: datetime | float | None, zone: ZoneInfo) -> datetime:
    if reference_time is None:
        return datetime.now(zone)
    if isinstance(reference_time, datetime):
        if reference_time.tzinfo is None:
            return reference_time.replace(tzinfo=zone)
        return reference_time.astimezone(zone)
    return datetime.fromtimestamp(float(reference_time), zone)


def _rank(found: list[tuple[str, int, int, JSON]]) -> list[tuple[str, int, int, JSON]]:
    """Duckling's ranking: drop a candidate lying strictly inside another; an identical span of the same
    dimension is kept once; partial overlaps stay."""
    kept: list[tuple[str, int, int, JSON]] = []
    seen: set[tuple[str, int, int]] = set()
    for c in found:
        dim, s, e, _ = c
        if e <= s or (dim, s, e) in seen:
            continue
        if any(s2 <= s and e <= e2 and (s2, e2) != (s, e) for _, s2, e2, _ in found):
            continue
        seen.add((dim, s, e))
        kept.append(c)
    return sorted(kept, key=lambda c: (c[1], c[2], DIMENSIONS.index(c[0]) if c[0] in DIMENSIONS else 99))


def _value_text(dim: str, info: Mapping[str, Any]) -> str:
    if info.get("type") == "interval":
        ends = [info.get(k) for k in ("from", "to")]
        return "/".join(str(v.get("value")) if isinstance(v, Mapping) else ".." for v in ends)
    return _fmt(info.get("value"))


def _entity(dim: str, start: int, end: int, info: JSON) -> Entity:
    return Entity(entity=dim, value=_value_text(dim, info), start=start, end=end, confidence=1.0,
                  extractor=EXTRACTOR, additional_info=info)


def extract(text: str, *, dimensions: Iterable[str] | None = None, locale: str = "en_US",
            timezone: str | None = None, reference_time: datetime | float | None = None) -> list[Entity]:
    """Duckling-compatible entities of ``text``, sorted by position.

    ``dimensions``: the dimension names to return (``DIMENSIONS``; ``None`` for all, as Rasa's default).
    ``locale``: ``en_US``-style; the language selects dateparser's language, the region resolves ``$`` and
    numbers written without a country code. ``timezone``: IANA name, default UTC; every ``time`` value is
    written in it. ``reference_time``: what "tomorrow" is relative to: an aware datetime, a naive one
    (read in ``timezone``), epoch seconds (``UserMessage.received_at``), or ``None`` for now.
    Raises ``ValueError`` for an unknown dimension, timezone or malformed locale, never for the text.
    """
    dims = _dimensions(dimensions, DIMENSIONS)
    language, region = _locale_parts(locale)
    zone, tz_name = _zone(timezone)
    if not text or not text.strip():
        return []
    want = set(dims)
    found: list[tuple[str, int, int, JSON]] = []
    numbers = _numbers(text) if want & {"number", "amount-of-money", "duration", "time"} else []
    money = _money(text, numbers, region) if want & {"amount-of-money", "time"} else []
    emails = [(m.start(), m.end(), {"value": m.group()}) for m in _EMAIL.finditer(text)] \
        if want & {"email", "url", "time"} else []
    urls = _urls(text) if want & {"url", "time"} else []
    phones = _phones(text, region) if want & {"phone-number", "time"} and re.search(r"\d{3}", text) else []
    if "number" in want:
        found += [("number", n.start, n.end, {"value": n.value, "type": "value"}) for n in numbers if not n.glued]
    if "ordinal" in want:
        found += [("ordinal", s, e, {"value": v, "type": "value"}) for s, e, v in _ordinals(text)]
    if "amount-of-money" in want:
        found += [("amount-of-money", s, e, v) for s, e, v in money]
    durations = _durations(text, numbers) if want & {"duration", "time"} else []
    if "duration" in want:
        found += [("duration", d.start, d.end, d.info()) for d in durations]
    if "email" in want:
        found += [("email", s, e, v) for s, e, v in emails]
    if "url" in want:
        # the domain of an e-mail address is not a URL of its own
        found += [("url", s, e, v) for s, e, v in urls if not any(a <= s and e <= b for a, b, _ in emails)]
    if "phone-number" in want:
        found += [("phone-number", s, e, v) for s, e, v in phones]
    if "time" in want:
        ctx = _TimeContext(_reference(reference_time, zone), zone, tz_name, [language])
        masked = [(s, e) for s, e, _ in (*emails, *urls, *phones, *money)]
        # order numbers, long digit runs and 1,200-style numbers are never dates (dateparser is slowest on them)
        masked += [(n.start, n.end) for n in numbers if re.fullmatch(r"\d{5,}|\d{1,3}(?:,\d{3})+(?:\.\d+)?",
                                                                   text[n.start:n.end])]
        found += [("time", s, e, v) for s, e, v in _times(text, durations, ctx, masked)]
    return [_entity(dim, s, e, info) for dim, s, e, info in _rank(found)]


def warm_up() -> None:
    """Load dateparser's language data and phonenumbers' metadata now (~0.3 s) rather than on the first
    customer's messages."""
    for text in ("order 12345 of $20 tomorrow at 5pm, in 3 days, twenty one dollars, the 2nd, from monday to friday",
                 "call +1 650 253 0000 or (650) 253-0001, mail bob@example.com, see www.example.com in 5 minutes"):
        extract(text, reference_time=datetime(2026, 1, 1, tzinfo=UTC))


# -- the pipeline component -----------------------------------------------------------------------------------

class EntityExtractor(Protocol):
    async def extract(self, text: str, *, reference_time: datetime | float | None = None) -> list[Entity]: ...


@dataclass(frozen=True)
class LocalDucklingExtractor:
    """``DucklingEntityExtractor`` without a ``url``: ``extract`` above, with the component's settings."""

    dimensions: tuple[str, ...] | None = None
    locale: str = "en_US"
    timezone: str | None = None

    def __post_init__(self) -> None:  # bad settings fail at load, not on the first message
        extract("", dimensions=self.dimensions, locale=self.locale, timezone=self.timezone)

    async def extract(self, text: str, *, reference_time: datetime | float | None = None) -> list[Entity]:
        return extract(text, dimensions=self.dimensions, locale=self.locale, timezone=self.timezone,
                       reference_time=reference_time)


class DucklingHTTPExtractor:
    """A real Duckling server: ``POST {url}/parse`` with the form fields Duckling reads (``text``, ``locale``,
    ``tz``, ``reftime`` in epoch milliseconds, ``dims`` as a JSON list), its JSON list of ``{dim, body, start,
    end, value}`` turned into the same entities as ``extract``. A server that is down, slow (``timeout``
    seconds), answers an error status or malformed JSON costs the message its Duckling entities and a
    logged warning, never the message: ``extract`` does not raise."""

    def __init__(self, url: str, *, dimensions: Iterable[str] | None = None, locale: str = "en_US",
                 timezone: str | None = None, timeout: float = 3.0, client: httpx.AsyncClient | None = None) -> None:
        if not re.match(r"^https?://[^\s/]+", url or ""):
            raise ValueError(f"url {url!r}: expected the Duckling server's http(s) address")
        self.url = url.rstrip("/") + "/parse"
        self.dimensions = None if dimensions is None else _dimensions(dimensions, None)
        _locale_parts(locale)
        self.locale = locale
        self.timezone = timezone if timezone is None else _zone(timezone)[1]
        if not timeout or timeout <= 0:
            raise ValueError(f"timeout {timeout!r}: expected a positive number of seconds")
        self.timeout = float(timeout)
        self._client = client
        self._owns_client = client is None

    async def aclose(self) -> None:
        if self._client is not None and self._owns_client:
            await self._client.aclose()
        self._client = None

    def _form(self, text: str, reference_time: datetime | float | None) -> dict[str, str]:
        if reference_time is None:
            ms = int(_time.time() * 1000)
        elif isinstance(reference_time, datetime):
            ref = reference_time if reference_time.tzinfo else reference_time.replace(
                tzinfo=_zone(self.timezone)[0])
            ms = int(ref.timestamp() * 1000)
        else:
            ms = int(float(reference_time) * 1000)
        form = {"text": text, "locale": self.locale, "reftime": str(ms)}
        if self.timezone:
            form["tz"] = self.timezone
        if self.dimensions is not None:
            form["dims"] = json.dumps(list(self.dimensions))
        return form

    async def extract(self, text: str, *, reference_time: datetime | float | None = None) -> list[Entity]:
        if not text or not text.strip():
            return []
        if self._client is None:
            self._client = httpx.AsyncClient()
        started = _time.perf_counter()
        try:
            response = await self._client.post(self.url, data=self._form(text, reference_time), timeout=self.timeout)
        except httpx.TimeoutException:
            log.warning("duckling %s: no answer within %.1fs; message has no duckling entities", self.url,
                        self.timeout)
            return []
        except httpx.HTTPError as e:
            log.warning("duckling %s: %s: %s; message has no duckling entities", self.url, type(e).__name__, e)
            return []
        if response.status_code != 200:
            log.warning("duckling %s: HTTP %d: %s", self.url, response.status_code, response.text[:200])
            return []
        try:
            matches = response.json()
        except ValueError:
            log.warning("duckling %s: answer is not JSON: %r", self.url, response.text[:200])
            return []
        entities = parse_duckling(matches, text)
        log.debug("duckling %s: %d entities in %.1f ms", self.url, len(entities),
                  (_time.perf_counter() - started) * 1000)
        return [e for e in entities if self.dimensions is None or e.entity in self.dimensions]


def parse_duckling(matches: Any, text: str | None = None) -> list[Entity]:
    """Duckling's ``/parse`` answer as entities (Rasa's ``convert_duckling_format_to_rasa``); items that are
    not of Duckling's shape are skipped with a warning, so one odd item does not lose the others."""
    if not isinstance(matches, list):
        log.warning("duckling: expected a JSON list, got %s", type(matches).__name__)
        return []
    out: list[Entity] = []
    for item in matches:
        try:
            dim, start, end, info = item["dim"], item["start"], item["end"], item["value"]
            if not (isinstance(dim, str) and isinstance(info, dict) and isinstance(start, int)
                    and isinstance(end, int) and 0 <= start <= end):
                raise TypeError("dim/start/end/value of the wrong type")
            if text is not None and end > len(text):
                raise ValueError(f"span {start}..{end} past the text's end")
            if info.get("type") != "interval" and "value" not in info:
                raise KeyError("value.value")
        except (KeyError, TypeError, ValueError) as e:
            log.warning("duckling: skipped a match not of Duckling's shape (%s): %.200r", e, item)
            continue
        out.append(_entity(dim, start, end, info))
    return out


def extractor_for(component: Mapping[str, Any]) -> LocalDucklingExtractor | DucklingHTTPExtractor:
    """The extractor for a ``config.yml`` pipeline entry ``{"name": "DucklingEntityExtractor", ...}``:
    the Duckling server at ``url`` when one is given, the in-process extractor otherwise. Reads Rasa's keys
    ``url``, ``dimensions``, ``locale``, ``timezone``, ``timeout``; raises ``ValueError`` naming the key for a
    bad value (the loader reports it as ``file:line``)."""
    known = {"name", "url", "dimensions", "locale", "timezone", "timeout"}
    unknown = sorted(set(component) - known)
    if unknown:
        raise ValueError(f"DucklingEntityExtractor: not supported: {', '.join(unknown)}")
    dims = component.get("dimensions")
    if dims is not None and (not isinstance(dims, list) or not all(isinstance(d, str) for d in dims)):
        raise ValueError("dimensions: expected a list of dimension names")
    locale = component.get("locale") or "en_US"
    timezone = component.get("timezone")
    if not isinstance(locale, str) or (timezone is not None and not isinstance(timezone, str)):
        raise ValueError("locale and timezone: expected text")
    url = component.get("url")
    if url:
        if not isinstance(url, str):
            raise ValueError("url: expected text")
        timeout = component.get("timeout", 3)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise ValueError("timeout: expected a number of seconds")
        return DucklingHTTPExtractor(url, dimensions=dims, locale=locale, timezone=timezone, timeout=float(timeout))
    return LocalDucklingExtractor(dimensions=None if dims is None else tuple(dims), locale=locale, timezone=timezone)

"""How the customer feels: a sentiment score and frustration signals for each message they type.

Each customer turn gets a ``Mood``, stored with the turn as a ``sentiment`` event
(``{"score", "signals", "frustrated"}``) and rolled up on the conversation (lowest score, number of
frustrated turns: bots/store). The score is VADER's compound polarity (vaderSentiment: a lexicon
and rules, no model, about 5-30 µs a message; -1 very negative .. +1 very positive) of the first
``MAX_CHARS`` characters. The signals:

* ``negative``: the score is ``NEGATIVE_BELOW`` or lower ("I was charged twice and I am furious");
* ``profanity``: a swear word or a masked one ("f***ing");
* ``repeated_question``: the same or nearly the same words as one of the customer's last
  ``REPEAT_WINDOW`` messages of the session (at least three words);
* ``repeated_fallback``: the bot did not understand this message either (two fallbacks in a row);
* ``repeated_answer``: the bot's answer is one it already gave in the customer's last ``REPEAT_WINDOW``
  turns ("I forgot my password", then "I don't get the reset email": the same instructions twice): the
  customer asked again in other words, and the answer did not help. Counted for knowledge answers
  (retrieved or generated) and for templates of at least ``REPEAT_ANSWER_MIN_WORDS`` words, not for
  a form's question, a short small-talk reply ("You're welcome!" after a second "thanks"), what the bot
  tells a customer waiting for an agent (their place in the queue), or the answer to a message understood
  as out of scope (``NOT_REPEATED``): "Sorry, I can't help with that" answers every off-topic question
  alike, so saying it again to a second, different one shows nothing about the customer (QA, issue 14: three
  polite off-topic questions, sentiment +0.57, were handed to a person "I can see it's frustrating"); the
  same off-topic question again is ``repeated_question``;
* ``shouting``: mostly capital letters (at least ``SHOUT_MIN_LETTERS`` letters), unless the customer's
  previous message was in capitals too: that is how they write (caps lock), not a raised voice (QA, issue
  14: "ORDER 12345 WHERE IS IT", then "WHEN WILL IT ARRIVE", both answered, was handed to a person);
* ``exclamations``: "!!", "?!" or "!?".

A turn is **frustrated** when it has one of the first five signals, or shouting or exclamations
without a positive score ("THANK YOU!!" is not frustrated, "WHERE IS MY ORDER" is). Button clicks
and reminders are not scored (nobody typed them).

A bot may hand an angry customer to a person: ``frustration: {handoff_after: N}`` in bot.yml makes
the N-th frustrated turn since the bot last got the conversation (its session's turns, since the
last hand-off or hand-back) pause the bot (the one hand-off path: a ``pause`` event, bots/handoff.py)
after telling the customer ``message``; below that, ``offer`` (optional) is said once after the bot's
answer at the stretch's first frustrated turn (never inside a form): another way out, e.g. "If this
doesn't help, say 'talk to a person'".
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from bots.events import AGENT, BOT, FORM, PAUSE, RESTART, RESUME, SENTIMENT, USER, Event, customer_text
from bots.nlu.oos import OUT_OF_SCOPE
from bots.types import BotResponse
from bots.yamlspan import Located

MAX_CHARS = 300  # scored of a message (VADER's time grows with the text; the first lines carry the tone)
NEGATIVE_BELOW = -0.5  # a score at or below this is the ``negative`` signal
POSITIVE_FROM = 0.05  # VADER's own threshold for "positive": shouting that is positive is not frustration
SHOUT_MIN_LETTERS = 8
SHOUT_RATIO = 0.7
REPEAT_WINDOW = 5  # earlier customer messages a message is compared with
REPEAT_MIN_WORDS = 3
REPEAT_OVERLAP = 0.75  # shared words / all words (of both) for "nearly the same"
REPEAT_ANSWER_MIN_WORDS = 15  # a template this long said twice is the ``repeated_answer`` signal
SIGNALS = ("negative", "profanity", "repeated_question", "repeated_fallback", "repeated_answer", "shouting",
           "exclamations")
_STRONG = frozenset(SIGNALS[:5])
_KNOWLEDGE = ("retrieval", "generation")  # answer sources that are always compared for ``repeated_answer``
NOT_REPEATED = frozenset({OUT_OF_SCOPE})  # intents whose answer said again is no ``repeated_answer``
DEFAULT_HANDOFF_MESSAGE = ("I'm sorry this has been frustrating. I'm passing you to a member of our support team, "
                           "who will reply here as soon as possible.")
_MAX_HANDOFF_AFTER = 100
_MAX_MESSAGE_CHARS = 1000

# Common English swear words (their inflections too) and masked ones ("f***", "s#!t"). Insults and
# complaints without swearing ("useless", "ridiculous") are left to the sentiment score.
_PROFANE = re.compile(
    r"\b(?:(?:mother)?fu+c+k\w*|f+u+k+\w*|fck\w*|sh[i1]t\w*|bullsh[i1]t\w*|crap\w*|(?:god)?damn\w*|dammit"
    r"|bloody|bastard\w*|bitch\w*|(?:ass|arse)holes?|piss(?:ed|ing)?|wtf|ffs|stfu|omfg|jfc|dick(?:head)?s?"
    r"|twat\w*|wank\w*|bollocks|the hell)\b"
    r"|\b[a-z][*#@$%!]{2,}[a-z]*",
    re.IGNORECASE,
)
_EXCLAIM = re.compile(r"!!|\?!|!\?")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Mood:
    """One customer message's sentiment ``score`` (-1..1) and frustration ``signals`` (of ``SIGNALS``)."""

    score: float
    signals: tuple[str, ...] = ()

    @property
    def frustrated(self) -> bool:
        return bool(_STRONG.intersection(self.signals)) or (bool(self.signals) and self.score < POSITIVE_FROM)

    def with_signal(self, signal: str) -> Mood:
        return self if signal in self.signals else Mood(self.score, (*self.signals, signal))

    def event(self, timestamp: float) -> Event:
        return Event(SENTIMENT, {"score": self.score, "signals": list(self.signals), "frustrated": self.frustrated},
                     timestamp=timestamp)

    @classmethod
    def of_event(cls, event: Event) -> Mood | None:
        """The mood a ``sentiment`` event stored; None for another event or a malformed one."""
        score = event.data.get("score")
        if event.kind != SENTIMENT or isinstance(score, bool) or not isinstance(score, int | float):
            return None
        signals = event.data.get("signals")
        return cls(float(score), tuple(s for s in signals if isinstance(s, str)) if isinstance(signals, list) else ())


class SentimentScorer:
    """Scores customer messages (``score``); one per process is enough (the lexicon is read once)."""

    def __init__(self) -> None:
        self._vader = SentimentIntensityAnalyzer()

    def polarity(self, text: str) -> float:
        """VADER's compound score of the first ``MAX_CHARS`` characters, rounded to 3 decimals."""
        return round(float(self._vader.polarity_scores(text[:MAX_CHARS])["compound"]), 3)

    def score(self, text: str, earlier: Sequence[str] = ()) -> Mood:
        """The mood of ``text``; ``earlier``: the customer's previous messages (oldest first), for
        ``repeated_question``. ``repeated_fallback`` is known only once the bot has answered: ``with_signal``."""
        text = text[:MAX_CHARS]
        score = self.polarity(text)
        signals = []
        if score <= NEGATIVE_BELOW:
            signals.append("negative")
        if _PROFANE.search(text):
            signals.append("profanity")
        if repeats(text, earlier):
            signals.append("repeated_question")
        if _shouting(text) and not (earlier and _capitals(earlier[-1])):
            signals.append("shouting")  # (capitals after capitals: the customer's way of writing)
        if _EXCLAIM.search(text):
            signals.append("exclamations")
        return Mood(score, tuple(signals))


def _shouting(text: str) -> bool:
    letters = sum(map(str.isalpha, text))
    return letters >= SHOUT_MIN_LETTERS and sum(map(str.isupper, text)) >= SHOUT_RATIO * letters


def _capitals(text: str) -> bool:
    """Written mostly in capitals, however short ("OK", "ORDER 123")."""
    text = text[:MAX_CHARS]
    letters = sum(map(str.isalpha, text))
    return letters >= 2 and sum(map(str.isupper, text)) >= SHOUT_RATIO * letters


@functools.lru_cache(maxsize=4096)  # a message is compared again by the customer's next REPEAT_WINDOW ones
def _words(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(text.lower()))


def repeats(text: str, earlier: Sequence[str]) -> bool:
    """Whether ``text`` says what one of the last ``REPEAT_WINDOW`` of ``earlier`` said: the same words
    (at least ``REPEAT_MIN_WORDS``), or nearly (``REPEAT_OVERLAP`` of their distinct words shared, and
    neither over twice as long as the other)."""
    text = text[:MAX_CHARS]
    words = _words(text)
    if len(words) < REPEAT_MIN_WORDS:
        return False
    mine = set(words)
    for other in earlier[-REPEAT_WINDOW:]:
        other = other[:MAX_CHARS]
        if 2 * min(len(other), len(text)) < max(len(other), len(text)):
            continue  # one is over twice as long as the other: not the same question (and not worth splitting)
        theirs = _words(other)
        if theirs == words:
            return True
        if len(theirs) >= REPEAT_MIN_WORDS:
            both = set(theirs)
            if len(mine & both) >= REPEAT_OVERLAP * len(mine | both):
                return True
    return False


def _answer_text(event: Event) -> str | None:
    """The text of a bot answer ``repeated_answer`` compares: a knowledge answer, or a long template that is
    not a form's question; None for anything else."""
    if event.kind != BOT:
        return None
    data = event.data
    text, source, metadata = data.get("text"), data.get("source"), data.get("metadata")
    if not isinstance(text, str) or not text or (isinstance(metadata, dict) and (
            metadata.get("form") or metadata.get("handoff"))):
        return None  # a form's question, or what a customer waiting for an agent is told
    if source in _KNOWLEDGE or (source == "template" and len(_WORD.findall(text)) >= REPEAT_ANSWER_MIN_WORDS):
        return text
    return None


def repeated_answer(history: Sequence[Event], events: Iterable[Event], intent: str | None = None) -> bool:
    """Whether the turn's answer (``events``: what the bot decided) is one the bot gave in the customer's last
    ``REPEAT_WINDOW`` turns of ``history`` (the events before the turn), since a person last had the
    conversation or it restarted; never for a message understood as ``intent`` of ``NOT_REPEATED``. Walks back
    that far only (a few dozen events)."""
    if intent in NOT_REPEATED:
        return False
    answers = {text for text in map(_answer_text, events) if text is not None}
    if not answers:
        return False
    turns = 0
    for event in reversed(history):
        if event.kind == USER:  # the answers seen so far were those of this turn
            turns += 1
            if turns >= REPEAT_WINDOW:
                return False
        elif event.kind in (PAUSE, RESUME, RESTART, AGENT):
            return False
        elif _answer_text(event) in answers:
            return True
    return False


def customer_texts(history: Iterable[Event]) -> list[str]:
    """What the customer typed in ``history`` (a conversation's events), oldest first: neither button
    clicks nor reminder firings. (A dialogue state keeps the last of them rolled up: ``State.customer_texts``.)"""
    return [text for text in map(customer_text, history) if text is not None]


def frustrated_since_handoff(history: Iterable[Event]) -> int:
    """Frustrated turns in ``history`` since the last pause, resume, restart or agent message (the bot's
    stretch of the conversation): what ``handoff_after`` counts."""
    count = 0
    for event in history:
        if event.kind in (PAUSE, RESUME, RESTART, AGENT):
            count = 0
        elif event.kind == SENTIMENT and event.data.get("frustrated") is True:
            count += 1
    return count


def form_after(active_form: str | None, events: Iterable[Event]) -> str | None:
    """The form active after ``events``, ``active_form`` the one active before them."""
    for event in events:
        if event.kind == FORM:
            active_form = event.data.get("name") if isinstance(event.data.get("name"), str) else None
    return active_form


@dataclass(frozen=True)
class Frustration:
    """bot.yml ``frustration:``: hand the conversation to a person at the ``handoff_after``-th frustrated
    turn (``None``: never), telling the customer ``message``; ``offer``: said after the answer at the first
    frustrated turn before that (``None``: nothing)."""

    handoff_after: int | None = None
    message: str = DEFAULT_HANDOFF_MESSAGE
    offer: str | None = None

    @classmethod
    def parse(cls, section: Located | None, problems: list[str]) -> Frustration:
        """The section as bot.yml wrote it; each problem (``file:line: ...``) added to ``problems``."""
        if section is None:
            return cls()
        if not isinstance(section.value, dict):
            problems.append(f"{section.where()}: 'frustration' must map handoff_after (and message, offer), e.g. "
                            "frustration: {handoff_after: 2}")
            return cls()
        fields: dict[str, Located] = section.value
        for key, item in fields.items():
            if key not in ("handoff_after", "message", "offer"):
                problems.append(f"{item.key_where()}: frustration: unknown key {key!r} "
                                "(known: handoff_after, message, offer)")
        after: int | None = None
        if "handoff_after" in fields:
            item = fields["handoff_after"]
            value: Any = item.value
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_HANDOFF_AFTER:
                problems.append(f"{item.where()}: frustration: 'handoff_after' must be a whole number of frustrated "
                                f"turns from 1 to {_MAX_HANDOFF_AFTER}, got {value!r}")
            else:
                after = value
        elif "offer" not in fields:  # an offer alone: the bot never hands off by itself
            problems.append(f"{section.where()}: frustration: 'handoff_after' is missing (the number of frustrated "
                            "turns after which a person takes over)")
        texts: dict[str, str] = {}
        for key, what in (("message", "what the customer is told when a person takes over"),
                          ("offer", "said after the answer at the first frustrated message")):
            if key not in fields:
                continue
            item = fields[key]
            if not isinstance(item.value, str) or not item.value.strip() or len(item.value) > _MAX_MESSAGE_CHARS:
                problems.append(f"{item.where()}: frustration: {key!r} must be text of 1 to {_MAX_MESSAGE_CHARS} "
                                f"characters ({what})")
            else:
                texts[key] = item.value.strip()
        return cls(after, texts.get("message", DEFAULT_HANDOFF_MESSAGE), texts.get("offer"))

    def offered(self, mood: Mood | None, history: Sequence[Event], events: Sequence[Event], *, paused: bool,
                active_form: str | None, timestamp: float) -> list[Event] | None:
        """The turn's events with ``offer`` said after the bot's answer, when this ``mood`` is the first
        frustrated turn of the bot's stretch and no form is active after the turn (a form's question is the
        last thing the customer should read) or gave up on it (its way out offers a person already); arguments
        as ``handoff``'s. None: nothing to add. Only for a
        turn that did not hand off (``handoff`` first)."""
        if (self.offer is None or mood is None or not mood.frustrated or paused
                or form_after(active_form, events) is not None):
            return None
        if frustrated_since_handoff(history) > 0 or not any(e.kind == BOT for e in events) or any(
                isinstance(e.data.get("metadata"), dict) and e.data["metadata"].get("gave_up") for e in events):
            return None  # nothing answered, or a form gave up: its way out already offers a person
        offer = BotResponse(text=self.offer, source="system", metadata={"frustration": "offer"})
        return [*events, Event(BOT, offer.to_dict(), timestamp=timestamp)]

    def handoff(self, mood: Mood | None, history: Iterable[Event], events: Sequence[Event], *, paused: bool,
                active_form: str | None, timestamp: float) -> list[Event] | None:
        """The turn's events with the hand-off added when this ``mood`` is the ``handoff_after``-th
        frustrated turn of the bot's stretch (``history``: the events before the turn; ``events``: what the
        bot decided; ``paused``: whether a person has the conversation after them; ``active_form``: the
        form active before them). The bot's "did not
        understand" replies of the turn are dropped then, and so is the question of a form it ends: the customer
        is told a person takes over.
        A frustrated message the bot did not understand (its reply is the fallback) hands off at once, whatever
        ``handoff_after``: an angry customer is never answered "did you mean ...?".
        None: no hand-off."""
        if self.handoff_after is None or mood is None or not mood.frustrated or paused:
            return None
        fell_back = any(e.kind == BOT and e.data.get("source") == "fallback" for e in events)
        if not fell_back and frustrated_since_handoff(history) + 1 < self.handoff_after:
            return None
        active_form = form_after(active_form, events)
        # Dropped: the fallback's "did not understand", and the question of a form the hand-off ends (nobody
        # would take the answer: "Which order is the refund for?" then "I'm passing you to a colleague").
        kept = [e for e in events if not (e.kind == BOT and (e.data.get("source") == "fallback" or (
            active_form is not None and isinstance(e.data.get("metadata"), dict) and e.data["metadata"].get("form"))))]
        added = [Event(BOT, BotResponse(text=self.message, source="system").to_dict(), timestamp=timestamp)]
        if active_form is not None:  # the form ends, as with the bot's own hand-off
            added.append(Event(FORM, {"name": None}, timestamp=timestamp))
        added.append(Event(PAUSE, {"reason": "frustration"}, timestamp=timestamp))
        return [*kept, *added]

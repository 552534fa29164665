"""The team lead's figures over stored conversations (review UI's analytics page, its API, the gauges).

Each store computes ``AnalyticsRow`` counts per UTC day (of ``started_at``), bot and channel, and the
hand-off to first agent reply times, from indexed summary columns (SQLite: ``conv_analytics``, a
covering index; MongoDB: ``bot_started``/``started``); ``build`` turns them into ``Analytics``:

* containment rate: conversations that never reached a human (no hand-off, no agent reply) / all;
* hand-off rate: conversations handed to a human (by the bot, the customer or an agent taking over) / all;
* fallback rate: conversations where the bot did not understand at least once / all;
* time to first agent reply: from the hand-off (the customer starts waiting) to the first agent
  message, p50 and p90 over the conversations that got one;
* busiest intents: conversations by their last understood intent, most first;
* satisfaction: the conversations the customer rated (bot.yml ``handoff: satisfaction``) and their average
  rating (1-5; thumbs count 5 up, 1 down), read through the partial index of the rated ones.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

DAY_S = 86_400
TOP_INTENTS = 10


@dataclass(frozen=True)
class AnalyticsQuery:
    bot: str | None = None
    channel: str | None = None
    since: float | None = None  # started_at >= since
    until: float | None = None  # started_at < until


@dataclass(frozen=True)
class AnalyticsRow:
    """What a store counts for one (day, bot, channel)."""

    day: str  # YYYY-MM-DD, UTC
    bot: str
    channel: str
    conversations: int
    handed_off: int
    fallback: int
    agent_replied: int


def rate(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q`` (0..1) percentile by linear interpolation between closest ranks; None when empty."""
    if not sorted_values:
        return None
    at = (len(sorted_values) - 1) * q
    lo, hi = math.floor(at), math.ceil(at)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (at - lo)


@dataclass(frozen=True)
class Figures:
    conversations: int = 0
    handed_off: int = 0
    fallback: int = 0
    agent_replied: int = 0
    reply_p50_s: float | None = None
    reply_p90_s: float | None = None
    rated: int = 0
    csat_average: float | None = None

    @property
    def containment_rate(self) -> float | None:
        return rate(self.conversations - self.handed_off, self.conversations)

    def to_dict(self) -> dict[str, Any]:
        return {"conversations": self.conversations, "handed_off": self.handed_off, "fallback": self.fallback,
                "agent_replied": self.agent_replied, "containment_rate": self.containment_rate,
                "handoff_rate": rate(self.handed_off, self.conversations),
                "fallback_rate": rate(self.fallback, self.conversations),
                "first_reply_p50_s": self.reply_p50_s, "first_reply_p90_s": self.reply_p90_s,
                "rated": self.rated, "csat_average": self.csat_average}


@dataclass(frozen=True)
class Analytics:
    total: Figures
    by_day: dict[str, Figures] = field(default_factory=dict)
    by_bot: dict[str, Figures] = field(default_factory=dict)
    by_channel: dict[str, Figures] = field(default_factory=dict)
    intents: tuple[tuple[str, int], ...] = ()  # busiest first

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total.to_dict(),
                "by_day": [{"day": k, **v.to_dict()} for k, v in sorted(self.by_day.items())],
                "by_bot": [{"bot": k, **v.to_dict()} for k, v in sorted(self.by_bot.items())],
                "by_channel": [{"channel": k, **v.to_dict()} for k, v in sorted(self.by_channel.items())],
                "intents": [{"intent": i, "conversations": n} for i, n in self.intents]}


def _figures(rows: Iterable[AnalyticsRow], replies: list[float], scores: Sequence[int] = ()) -> Figures:
    rows = list(rows)
    replies.sort()
    return Figures(sum(r.conversations for r in rows), sum(r.handed_off for r in rows), sum(r.fallback for r in rows),
                   sum(r.agent_replied for r in rows), percentile(replies, 0.5), percentile(replies, 0.9),
                   len(scores), sum(scores) / len(scores) if scores else None)


def build(rows: Iterable[AnalyticsRow], replies: Iterable[tuple[str, str, str, float]],
          intents: Iterable[tuple[str, int]], ratings: Iterable[tuple[str, str, str, int]] = ()) -> Analytics:
    """``replies``: (day, bot, channel, seconds from hand-off to the first agent reply) per conversation;
    ``intents``: (last intent, conversations), merged over bots and channels; ``ratings``: (day, bot, channel,
    the customer's rating) per rated conversation."""
    rows = list(rows)
    replies = list(replies)
    ratings = list(ratings)
    out: dict[str, dict[str, Figures]] = {}
    for name, i in (("day", 0), ("bot", 1), ("channel", 2)):
        keyed_rows: dict[str, list[AnalyticsRow]] = defaultdict(list)
        keyed_replies: dict[str, list[float]] = defaultdict(list)
        keyed_scores: dict[str, list[int]] = defaultdict(list)
        for r in rows:
            keyed_rows[(r.day, r.bot, r.channel)[i]].append(r)
        for day, bot, channel, seconds in replies:
            keyed_replies[(day, bot, channel)[i]].append(seconds)
        for day, bot, channel, score in ratings:
            keyed_scores[(day, bot, channel)[i]].append(score)
        out[name] = {k: _figures(v, keyed_replies[k], keyed_scores[k]) for k, v in keyed_rows.items()}
    counts: dict[str, int] = defaultdict(int)
    for intent, n in intents:
        counts[intent] += n
    busiest = tuple(sorted(counts.items(), key=lambda x: (-x[1], x[0]))[:TOP_INTENTS])
    return Analytics(_figures(rows, [r[3] for r in replies], [r[3] for r in ratings]), out["day"], out["bot"],
                     out["channel"], busiest)

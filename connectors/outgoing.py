"""What channels send out: text cut to a channel's size limit, and API calls retried.

``call_with_retry`` retries a channel API call when the channel asks for it (429 with
Retry-After), when the server fails (5xx) or when the network does, with bounded attempts
and exponential backoff, and counts every retry and every final failure in the metrics.
Each channel supplies a ``classify`` function that maps its client library's exceptions to
a ``Retry`` verdict (or ``None``: not worth retrying, e.g. a bad token).

``split_text`` cuts a long answer on paragraph, then line, then word boundaries.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from bots.metrics import Metrics

log = logging.getLogger("switchboard.outgoing")

T = TypeVar("T")


@dataclass(frozen=True)
class Retry:
    """Why a failed call is worth another try; ``after_s`` is the delay the API asked for."""

    reason: str  # bounded label set: "rate_limited", "server_error", "network"
    after_s: float | None = None


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # calls in all, the first included
    base_delay_s: float = 0.5  # backoff 0.5, 1, 2, ... (with jitter) when the API names no delay
    max_delay_s: float = 30.0  # a longer Retry-After than this is not waited for: the call fails

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")


Classifier = Callable[[BaseException], Retry | None]


async def call_with_retry(
    call: Callable[[], Awaitable[T]],
    *,
    channel: str,
    what: str,
    classify: Classifier,
    metrics: Metrics,
    policy: RetryPolicy,
) -> T:
    """Run ``call`` until it succeeds, the error is not retryable, or attempts run out."""
    attempt = 1
    while True:
        try:
            return await call()
        except Exception as exc:
            verdict = classify(exc)
            delay = _delay(verdict, attempt, policy) if verdict is not None else None
            if verdict is None or delay is None or attempt >= policy.attempts:
                metrics.outgoing_failures.labels(channel).inc()
                log.error("channel API call failed", extra={"channel": channel, "call": what, "attempts": attempt,
                                                            "error": f"{type(exc).__name__}: {exc}"})
                raise
            metrics.outgoing_retries.labels(channel, verdict.reason).inc()
            log.warning("channel API call retried", extra={"channel": channel, "call": what, "attempt": attempt,
                                                           "reason": verdict.reason, "delay_s": round(delay, 3)})
            await asyncio.sleep(delay)
            attempt += 1


def _delay(verdict: Retry, attempt: int, policy: RetryPolicy) -> float | None:
    if verdict.after_s is not None:
        return max(0.0, verdict.after_s) if verdict.after_s <= policy.max_delay_s else None
    backoff = policy.base_delay_s * 2 ** (attempt - 1)
    return min(policy.max_delay_s, backoff * (0.5 + random.random()))  # noqa: S311 - jitter, not crypto


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units: how Telegram counts its 4096-character limit."""
    return len(text.encode("utf-16-le")) // 2


_SEPARATORS = ("\n\n", "\n", " ")


def split_text(text: str, limit: int, measure: Callable[[str], int] = len) -> list[str]:
    """Cut ``text`` into pieces of at most ``limit`` (as ``measure`` counts), on the last
    paragraph break that fits, else the last line break, else the last space, else anywhere.
    Whitespace at the cuts is dropped; nothing else is."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    pieces: list[str] = []
    rest = text
    while measure(rest) > limit:
        window = _fitting_prefix(rest, limit, measure)
        cut = next((i for sep in _SEPARATORS if (i := rest.rfind(sep, 0, window + len(sep))) > 0), window)
        cut = min(cut, window)
        head = rest[:cut].rstrip()
        if head:
            pieces.append(head)
        rest = rest[cut:].lstrip()
    if rest.strip() or not pieces:
        pieces.append(rest)
    return pieces


def _fitting_prefix(text: str, limit: int, measure: Callable[[str], int]) -> int:
    """The largest index i >= 1 with measure(text[:i]) <= limit (binary search; measure grows with i)."""
    low, high = 1, min(len(text), limit)
    while low < high:
        mid = (low + high + 1) // 2
        if measure(text[:mid]) <= limit:
            low = mid
        else:
            high = mid - 1
    return low

"""Free-text transcript search: ONE definition of words, shared by both stores.

Semantics of ``TranscriptQuery.text`` (the review UI's search box):

* text is split into **words**: runs of Unicode word characters (``\\w+``: letters, digits,
  ``_``) after NFKC normalisation and case folding, so ``Refund``, ``REFUND`` and ``refund``
  are one word, ``Straße`` is ``strasse``, and punctuation only separates words;
* a conversation matches when **every query word is the beginning (a prefix) of some word in
  the conversation**: ``refund`` finds "refunds" and "refunded", ``ord 123`` finds "order
  #12345"; the words may be in different messages and in any order;
* every text of a turn counts: the customer's message and the bot's and agents' replies;
* a query without any word (``.*``, ``?!``) matches nothing. Operators and regular
  expressions mean nothing: ``$where`` is the word ``where``, ``a.c`` the words ``a`` and ``c``.

Bounds: a turn indexes its first :data:`MAX_TURN_WORDS` distinct words, each cut to
:data:`MAX_WORD_CHARS` characters (query words are cut the same way, so a long word still
finds itself). MongoDB keeps the words next to each turn (a ``words`` array on the turn document
with a multikey index); SQLite keeps each conversation's distinct words once (the
``conversation_words`` table). Both look a query word up as the index range ``[word, prefix_end(word))``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

MAX_TURN_WORDS = 500
MAX_WORD_CHARS = 64

_WORD = re.compile(r"\w+")


class _HasData(Protocol):
    @property
    def data(self) -> Mapping[str, Any]: ...


def words(text: str) -> list[str]:
    """The distinct words of ``text`` in order of appearance (normalised, case-folded, cut)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return list(dict.fromkeys(w[:MAX_WORD_CHARS] for w in _WORD.findall(folded)))


def turn_words(events: Iterable[_HasData]) -> list[str]:
    """The searchable words of a turn: of every event text, distinct, at most ``MAX_TURN_WORDS``."""
    found: dict[str, None] = {}
    for event in events:
        text = event.data.get("text")
        if not text:
            continue
        for word in words(str(text)):
            found[word] = None
            if len(found) >= MAX_TURN_WORDS:
                return list(found)
    return list(found)


def query_words(text: str) -> list[str]:
    """The words to look up for a query, most selective (longest) first.

    A word that is a prefix of another query word adds nothing (``ref refund`` is ``refund``)
    and is dropped. (The review UI bounds the query to 200 characters, so to 100 words.)"""
    found = words(text)
    kept = [w for w in found if not any(o != w and o.startswith(w) for o in found)]
    return sorted(kept, key=len, reverse=True)


def prefix_end(prefix: str) -> str:
    """The smallest string greater than every string starting with ``prefix``.

    Both stores compare strings in code point order (MongoDB: UTF-8 bytes under the default
    collation; SQLite: ``BINARY``), so ``prefix <= w < prefix_end(prefix)`` is "w starts with prefix".
    """
    if not prefix:
        raise ValueError("empty prefix")
    last = ord(prefix[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:  # no surrogates in UTF-8 strings: skip the block
        last = 0xE000
    if last > 0x10FFFF:  # never a word character; only for completeness
        return prefix_end(prefix[:-1]) if len(prefix) > 1 else "\U0010ffff" * 2
    return prefix[:-1] + chr(last)


def matches(query: str, texts: Sequence[str]) -> bool:
    """The reference semantics, for tests: does a conversation with these texts match?"""
    wanted = query_words(query)
    have = [w for t in texts for w in words(t)]
    return bool(wanted) and all(any(h.startswith(q) for h in have) for q in wanted)

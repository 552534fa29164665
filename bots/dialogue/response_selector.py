"""Rasa's retrieval intents (its ResponseSelector): which ``utter_<intent>/<key>`` response ``utter_<intent>`` says.

A Rasa project may split an intent into retrieval intents (``chitchat/ask_name``, ``chitchat/tell_joke``,
each with its NLU examples and a response ``utter_chitchat/ask_name``, ...). The intent classifier learns
the intent ``chitchat`` from all their examples; the stories and rules only say ``utter_chitchat`` (the
retrieval action), which answers with the response of the key the ResponseSelector picks for the
latest message.

``ResponseSelector`` picks the key whose examples are nearest the message's text: TF-IDF over words and
character n-grams (1-4, within word boundaries: what Rasa's default pipeline feeds its ResponseSelector,
CountVectorsFeaturizer on words and on ``char_wb`` 1-4), cosine similarity, the key of the most similar
example (the first one listed on a tie). It is built from the dialogue spec's examples (``DialogueSpec.retrieval``)
once per spec and needs no model: small, deterministic and the same on every replica, at the cost of
Rasa's learned selector's generalisation beyond the examples' wording.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence

from bots.nlu.ngrams import ngram_counts as _counts  # words and char_wb 1-4, as the intent classifier's n-grams

Vector = dict[str, float]


class ResponseSelector:
    """``examples``: per retrieval intent (``chitchat``), each response key's example texts (``ask_name``: [...])."""

    def __init__(self, examples: Mapping[str, Mapping[str, Sequence[str]]]) -> None:
        docs = [(intent, key, _counts(text)) for intent, keys in examples.items()
                for key, texts in keys.items() for text in texts]
        frequency: Counter[str] = Counter(f for _, _, counts in docs for f in counts)
        n = len(docs)
        # sklearn's smoothed idf: ln((1 + n) / (1 + df)) + 1
        self.idf = {f: math.log((1 + n) / (1 + df)) + 1.0 for f, df in frequency.items()}
        self.examples: dict[str, list[tuple[str, Vector]]] = {}
        for intent, key, counts in docs:
            self.examples.setdefault(intent, []).append((key, self._vector(counts)))

    def _vector(self, counts: Counter[str]) -> Vector:
        weighted = {f: c * self.idf[f] for f, c in counts.items() if f in self.idf}
        norm = math.sqrt(sum(w * w for w in weighted.values()))
        return {f: w / norm for f, w in weighted.items()} if norm else {}

    def select(self, intent: str, text: str) -> str | None:
        """The response key of ``intent`` for ``text``; None when the intent has no retrieval examples."""
        candidates = self.examples.get(intent)
        if not candidates:
            return None
        query = self._vector(_counts(text))
        best_key, best = candidates[0][0], -1.0
        for key, vector in candidates:
            score = sum(w * vector.get(f, 0.0) for f, w in query.items())
            if score > best:
                best_key, best = key, score
        return best_key


_selectors: dict[int, tuple[Mapping[str, Mapping[str, Sequence[str]]], ResponseSelector]] = {}


def selector_for(examples: Mapping[str, Mapping[str, Sequence[str]]]) -> ResponseSelector:
    """The selector of a dialogue spec's retrieval examples, built once per spec."""
    cached = _selectors.get(id(examples))
    if cached is None or cached[0] is not examples:
        cached = (examples, ResponseSelector(examples))
        _selectors[id(examples)] = cached
    return cached[1]

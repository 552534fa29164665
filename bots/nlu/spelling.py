"""Spelling correction against the bot's own vocabulary, before the intent model reads a message.

Customers type fast: "wher is my oder", "cancle my ordr plz". A sentence encoder trained on clean text
reads such words as unknown word pieces, and the intent falls below the out-of-scope point. Botpress's NLU
spell-checks an utterance against its bot's vocabulary for the same reason; Switchboard does it like this:

- The vocabulary is every word of the bot's training examples with its count, kept in the artifact
  (``spelling.json``, manifest ``spelling``; ``training: spelling: false`` turns it off).
- A word of the message is corrected only when it is made of letters, at least ``MIN_LENGTH`` long, not in
  that vocabulary, and not a word the tokenizer knows whole (a WordPiece token that is not a ``##``
  continuation): "weather" or "laptop" stay as they are even when the bot never saw them, so a question the
  bot does not cover is not turned into one it does. Words in capitals (an acronym, a code) stay too, and
  English contractions typed without their apostrophe ("dont", "whats").
- Its correction is the most frequent vocabulary word at one edit (a letter deleted, inserted, replaced,
  or two neighbours swapped: optimal string alignment distance 1) that the tokenizer knows whole or that
  the examples use at least twice (a typo in the examples is not a target). No such word: it stays.

Only what the model reads changes: the message is stored, shown and matched by regexes, lookups and slot
mappings as typed, and an entity the model finds keeps the customer's own characters (``Correction.span``
maps offsets back). ``switchboard evaluate`` and calibration read messages through the same path
(bots/nlu/model.py ``OnnxNLU.score``), so they score what is served. Deterministic per text.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bots.errors import ArtifactError

SPELLING_FILE = "spelling.json"
MIN_LENGTH = 4  # shorter words have too many neighbours one edit away ("ths": this, the, thus)
_WORD = re.compile(r"[^\W\d_]+")  # letters of any script
_TOKEN = re.compile(r"\w+")  # a word with digits or underscores ("abc123") is never corrected
_CACHE = 4096
# English contractions typed without the apostrophe ("dont" is not a typo of "done")
_CONTRACTIONS = frozenset(
    "dont doesnt didnt cant couldnt wont wouldnt shouldnt isnt arent wasnt werent havent hasnt hadnt mustnt "
    "neednt youre youve youll youd theyre theyve theyll weve thats whats wheres hows whos heres theres".split())


def vocabulary(texts: Iterable[str]) -> Counter[str]:
    """The lower-cased words of ``texts`` (letters only) and their counts."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(w.lower() for w in _WORD.findall(text))
    return counts


def write_vocabulary(artifact_dir: Path, texts: Iterable[str]) -> dict[str, Any]:
    """Write ``spelling.json``, the words of ``texts`` (the training examples) and their counts; returns the
    manifest's ``spelling`` entry."""
    counts = vocabulary(texts)
    (artifact_dir / SPELLING_FILE).write_text(json.dumps(dict(sorted(counts.items())), ensure_ascii=False),
                                              encoding="utf-8")
    return {"file": SPELLING_FILE, "words": len(counts), "min_length": MIN_LENGTH}


def known_words(tokenizer_vocab: Iterable[str]) -> frozenset[str]:
    """Words a tokenizer knows whole: WordPiece tokens that are not ``##`` continuations, SentencePiece and
    byte-level BPE word starts (``▁word``, ``Ġword``), lower-cased, letters only."""
    out = set()
    for token in tokenizer_vocab:
        if token.startswith("##"):
            continue
        word = token.lstrip("▁Ġ").lower()
        if len(word) >= 2 and _WORD.fullmatch(word):
            out.add(word)
    return frozenset(out)


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))}


def _one_edit(a: str, b: str) -> bool:
    """Optimal string alignment distance of ``a`` and ``b`` is exactly 1."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


@dataclass(frozen=True)
class Correction:
    """A message as the model reads it: ``text`` and the words changed, as (start, end) in ``text`` and in
    the original."""

    original: str
    text: str
    changes: tuple[tuple[int, int, int, int], ...] = ()  # corrected start, end, original start, end

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Offsets of ``text[start:end]`` in the original; a changed word maps to the whole typed word."""
        return self._at(start, first=True), self._at(end, first=False)

    def _at(self, pos: int, *, first: bool) -> int:
        shift = 0
        for c_start, c_end, o_start, o_end in self.changes:
            if pos < c_start or (not first and pos == c_start):
                break
            if pos < c_end or (not first and pos == c_end):
                return o_start if first else o_end
            shift = o_end - c_end
        return pos + shift


class Speller:
    """Corrects a message's words toward ``counts`` (the training vocabulary); ``known``: words never
    corrected although not in it (the tokenizer's whole words)."""

    def __init__(self, counts: Mapping[str, int], known: frozenset[str]) -> None:
        self.counts = dict(counts)
        self.known = known
        self._index: dict[str, list[str]] = {}  # a target, and each of its one-letter deletes -> targets
        for word, n in self.counts.items():
            if len(word) < MIN_LENGTH - 1 or not (n >= 2 or word in known):
                continue
            for key in (word, *_deletes(word)):
                self._index.setdefault(key, []).append(word)
        self._memo: dict[str, str | None] = {}

    def fix(self, word: str) -> str | None:
        """The correction of one lower-cased word, or None."""
        if word in self._memo:
            return self._memo[word]
        best: str | None = None
        if (len(word) >= MIN_LENGTH and word not in self.counts and word not in self.known
                and word not in _CONTRACTIONS):
            found = set(self._index.get(word, ()))
            for key in _deletes(word):
                found.update(self._index.get(key, ()))
            candidates = [w for w in found if _one_edit(word, w)]
            if candidates:
                best = min(candidates, key=lambda w: (-self.counts[w], w))
        if len(self._memo) >= _CACHE:
            self._memo.clear()
        self._memo[word] = best
        return best

    def correct(self, text: str) -> Correction:
        parts: list[str] = []
        changes: list[tuple[int, int, int, int]] = []
        last = 0
        length = 0
        for m in _TOKEN.finditer(text):
            word = m.group()
            if not _WORD.fullmatch(word) or (word.isupper() and len(word) > 1):
                continue
            fixed = self.fix(word.lower())
            if fixed is None:
                continue
            parts.append(text[last:m.start()])
            length += m.start() - last
            changes.append((length, length + len(fixed), m.start(), m.end()))
            parts.append(fixed)
            length += len(fixed)
            last = m.end()
        if not changes:
            return Correction(text, text)
        parts.append(text[last:])
        return Correction(text, "".join(parts), tuple(changes))

    @classmethod
    def load(cls, artifact_dir: Path, entry: Mapping[str, Any], known: frozenset[str]) -> Speller:
        path = artifact_dir / str(entry.get("file", SPELLING_FILE))
        try:
            counts = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ArtifactError(f"{artifact_dir}: the manifest names {path.name}, which is missing; "
                                "retrain the bot") from None
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        if not isinstance(counts, dict) or not all(isinstance(v, int) for v in counts.values()):
            raise ArtifactError(f"{path}: expected an object of word counts")
        return cls(counts, known)

"""The grounding guard: is a generated answer supported by the passages it was written from?

A cheap, explainable check that runs on every generated answer before a customer sees it:

* support: the share of the answer's content words found in the passages or the question;
* numbers: every number in the answer must occur in the passages, the question or the known values;
* contradiction: an answer sentence that closely matches a passage sentence but flips its
  polarity (a negation added or removed, or an opposite word such as free/paid) is rejected;
* placeholders: the answer may not show a ``{placeholder}`` that no known value fills.

Unsupported answers are not shown; the caller falls back to the best template.

``attribute`` checks one sentence of a composed answer the same way and says which of its sources
(numbered knowledge-base passages and answer templates) supports it best, for the transcript.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_NEGATIONS = frozenset({"not", "no", "never", "cannot", "can't", "won't", "don't", "doesn't", "isn't", "aren't",
                        "wasn't", "weren't", "didn't", "shouldn't", "without", "nothing", "none", "unable"})
_OPPOSITES = (("free", "paid"), ("free", "charge"), ("before", "after"), ("always", "never"),
              ("allowed", "prohibited"), ("accepted", "rejected"),
              ("included", "excluded"), ("open", "closed"), ("increase", "decrease"), ("more", "less"),
              ("same", "different"), ("possible", "impossible"), ("available", "unavailable"))
_STOP = frozenset("""a an the and or but if then so to of in on at by for with from as is are was were be been being
it its this that these those i you your yours we our us they them their he she his her my me do does did have has had
will would shall should can could may might must just also very too please here there what which who whom how when
where why all any each some such own than about into over under again further once more most other only out up down
off both few s t am let lets sure help happy assist""".split())


@dataclass(frozen=True)
class Support:
    grounded: bool
    score: float  # share of content words supported, 0-1
    problems: tuple[str, ...] = ()


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def _content(words: Sequence[str]) -> list[str]:
    return [w for w in words if w not in _STOP and w not in _NEGATIONS]


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _polarity(words: Sequence[str]) -> int:
    return sum(1 for w in words if w in _NEGATIONS or w.startswith("non")) % 2


def _contradiction(sentence: str, passage_sentences: Sequence[str]) -> str | None:
    words = _words(sentence)
    content = {_stem(w) for w in _content(words)}
    if len(content) < 2:
        return None
    best, best_overlap = None, 0.0
    for ps in passage_sentences:
        p_content = {_stem(w) for w in _content(_words(ps))}
        if not p_content:
            continue
        overlap = len(content & p_content) / len(content | p_content)
        if overlap > best_overlap:
            best, best_overlap = ps, overlap
    if best is None or best_overlap < 0.4:
        return None
    p_words = _words(best)
    if _polarity(words) != _polarity(p_words):
        return f"contradicts the passage ({'negates' if _polarity(words) else 'drops the negation of'}: {best!r})"
    mine, theirs = set(words), set(p_words)
    for a, b in _OPPOSITES:
        if (a in mine and b in theirs and b not in mine) or (b in mine and a in theirs and a not in mine):
            return f"contradicts the passage ({a}/{b}: {best!r})"
    return None


def check_support(answer: str, passages: Sequence[str], question: str = "", *,
                  values: Mapping[str, str] | None = None, min_support: float = 0.7) -> Support:
    """Whether ``answer`` is supported by ``passages`` (and the ``question``)."""
    values = values or {}
    problems: list[str] = []
    evidence_text = " ".join([*passages, question, *values.values()])
    evidence = {_stem(w) for w in _words(evidence_text)}
    # Every sentence must be supported on its own: two faithful sentences must not carry an invented
    # third one through an average. The answer's score is its weakest sentence's.
    score = 1.0
    weakest: list[str] = []
    any_content = False
    for sentence in _SENTENCE.split(answer):
        content = _content(_words(_PLACEHOLDER.sub(" ", sentence)))
        if not content:
            continue
        any_content = True
        sentence_score = sum(1 for w in content if _stem(w) in evidence) / len(content)
        if sentence_score < score:
            score, weakest = sentence_score, content
    if not any_content:
        score = 0.0
        problems.append("no content words")
    elif score < min_support:
        missing = sorted({w for w in weakest if _stem(w) not in evidence})[:5]
        problems.append(f"only {score:.0%} of a sentence's words are in the passages (e.g. {', '.join(missing)})")
    known_numbers = {n.replace(",", "") for n in _NUMBER.findall(evidence_text)}
    for number in _NUMBER.findall(answer):
        if number.replace(",", "") not in known_numbers:
            problems.append(f"number {number} is not in the passages")
            break
    for name in _PLACEHOLDER.findall(answer):
        if name not in values:
            problems.append(f"placeholder {{{name}}} cannot be filled")
            break
    passage_sentences = [s for p in passages for s in _SENTENCE.split(p) if s.strip()]
    for sentence in _SENTENCE.split(answer):
        reason = _contradiction(sentence, passage_sentences)
        if reason is not None:
            problems.append(reason)
            break
    return Support(grounded=not problems, score=score, problems=tuple(problems))


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` as the guard cuts them."""
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


@dataclass(frozen=True)
class Attribution:
    verdict: Support  # the guard's, against all the sources (with the question and the known values)
    source: int  # index of the source holding most of the sentence's content words (-1: none holds any)
    score: float  # the share of the sentence's content words found in that source, 0-1


def attribute(sentence: str, sources: Sequence[str], question: str = "", *,
              values: Mapping[str, str] | None = None, min_support: float = 0.7) -> Attribution:
    """Whether one ``sentence`` is supported by ``sources`` (``check_support``), and by which of them."""
    verdict = check_support(sentence, sources, question, values=values, min_support=min_support)
    content = {_stem(w) for w in _content(_words(_PLACEHOLDER.sub(" ", sentence)))}
    best, best_score = -1, 0.0
    for i, source in enumerate(sources if content else ()):
        score = len(content & {_stem(w) for w in _words(source)}) / len(content)
        if score > best_score:
            best, best_score = i, score
    return Attribution(verdict, best, best_score)

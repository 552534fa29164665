"""Training data: labelled texts with entity spans, cleaned and split.

Every input format (bot.yml, Rasa YAML, CSV, Bitext) becomes a ``NluData``; from there
training sees one shape. Cleaning never silently changes labels: exact duplicates are
dropped, the same text under two intents is a warning (the first label wins), and intents
with too few examples are a warning.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from bots.botspec import BotSpec
from bots.nlu.model import entity_label
from bots.types import Entity

OUT_OF_SCOPE = "out_of_scope"


@dataclass(frozen=True)
class Sample:
    text: str
    intent: str
    entities: tuple[Entity, ...] = ()
    source: str = ""  # file:line, for error lists and warnings
    pinned: bool = False  # always trained on, never held out (e.g. a reviewer's correction)


@dataclass(frozen=True)
class NluData:
    samples: tuple[Sample, ...]
    synonyms: dict[str, str] = field(default_factory=dict)  # variant (lower-case) -> canonical
    warnings: tuple[str, ...] = ()
    declared_intents: tuple[str, ...] = ()  # e.g. from a Rasa domain; warned about if without examples

    @property
    def intents(self) -> list[str]:
        return sorted({s.intent for s in self.samples})

    @property
    def entity_types(self) -> list[str]:
        """The entity head's labels: entity names, with role and group where annotated
        (``city#role=from``: bots.nlu.model.entity_label)."""
        return sorted({entity_label(e.entity, e.role, e.group) for s in self.samples for e in s.entities})

    def data_hash(self) -> str:
        h = hashlib.sha256()
        for s in self.samples:
            ents = [(entity_label(e.entity, e.role, e.group), e.value, e.start, e.end) for e in s.entities]
            h.update(json.dumps([s.text, s.intent, ents]).encode("utf-8"))
        h.update(json.dumps(sorted(self.synonyms.items())).encode("utf-8"))
        return h.hexdigest()

    def annotation_synonyms(self) -> dict[str, str]:
        """Values normalised in annotations (``[NYC](city:New York)``) as synonyms, plus the explicit ones."""
        found: dict[str, str] = {}
        for s in self.samples:
            for e in s.entities:
                shown = s.text[e.start:e.end]
                if shown != e.value:
                    found[shown.lower()] = e.value
        found.update(self.synonyms)
        return found


def normalised(text: str) -> str:
    """A text as de-duplication and the overlap check compare it: lower case, single spaces."""
    return " ".join(text.lower().split())


def text_hashes(texts: Iterable[str]) -> np.ndarray:
    """The first 8 bytes of each normalised text's SHA-256, as uint64 (the artifact keeps these, not the
    texts, to tell evaluate which evaluation texts it was trained on)."""
    return np.array([int.from_bytes(hashlib.sha256(normalised(t).encode("utf-8")).digest()[:8], "big")
                     for t in texts], dtype=np.uint64)


def from_bot(bot: BotSpec) -> NluData:
    samples = [Sample(ex.text, intent.name, ex.entities, ex.where or f"{bot.file}:{intent.line}")
               for intent in bot.intents.values() for ex in intent.examples]
    return NluData(tuple(samples), dict(bot.synonyms))


def undeclared_intents(parts: Iterable[NluData], known: Collection[str]) -> dict[str, str]:
    """Intents labelled in ``parts`` (``--data`` files, corrections) that ``known`` (the bot's intents)
    lacks, each with the ``file:line`` of its first example, in the order met. The model would learn
    such an intent and the dialogue would have no answer for it: ``switchboard train`` serves it
    through the bot's answer pairs or refuses it (training/cli.py), never a silent fallback."""
    found: dict[str, str] = {}
    for part in parts:
        for s in part.samples:
            if s.intent not in known and s.intent not in found:
                found[s.intent] = s.source or "?"
    return found


def merge(parts: Iterable[NluData]) -> NluData:
    samples: list[Sample] = []
    synonyms: dict[str, str] = {}
    warnings: list[str] = []
    declared: list[str] = []
    for p in parts:
        samples.extend(p.samples)
        synonyms.update(p.synonyms)
        warnings.extend(p.warnings)
        declared.extend(p.declared_intents)
    return NluData(tuple(samples), synonyms, tuple(warnings), tuple(declared))


SHOWN_DUPLICATES = 5  # the duplicates a warning names, each at its file:line


def _duplicates_warning(duplicates: Sequence[tuple[Sample, Sample]]) -> str:
    """``dropped N duplicate example(s)``, with where the first few are and the example each repeats (the
    same text, compared lower-cased with single spaces, under the same intent): a user can find and delete them."""
    shown = "; ".join(f"{dropped.source or '?'}: {dropped.text!r} (as at {kept.source or '?'})"
                      for dropped, kept in duplicates[:SHOWN_DUPLICATES])
    more = len(duplicates) - SHOWN_DUPLICATES
    return (f"dropped {len(duplicates)} duplicate example(s): {shown}"
            + (f"; and {more} more" if more > 0 else ""))


def clean(data: NluData, *, min_examples: int = 5, max_per_intent: int = 0, seed: int = 0) -> NluData:
    """De-duplicate, warn about conflicting labels and thin intents, optionally cap per intent."""
    warnings = list(data.warnings)
    first: dict[str, Sample] = {}
    kept: list[Sample] = []
    duplicates: list[tuple[Sample, Sample]] = []  # (the dropped one, the one kept)
    for s in data.samples:
        key = normalised(s.text)
        seen = first.get(key)
        if seen is None:
            first[key] = s
            kept.append(s)
        elif s.pinned and not seen.pinned:  # a reviewer's correction overrides the example it corrects
            first[key] = s
            kept[kept.index(seen)] = s
            if seen.intent != s.intent:
                warnings.append(f"{s.source or '?'}: {s.text!r} corrected from {seen.intent!r} to {s.intent!r}")
        elif seen.intent != s.intent:
            warnings.append(f"{s.source or '?'}: {s.text!r} is labelled {s.intent!r} here and {seen.intent!r} "
                            f"at {seen.source or '?'}; keeping {seen.intent!r}")
        else:
            duplicates.append((s, seen))
    if duplicates:
        warnings.append(_duplicates_warning(duplicates))
    if max_per_intent:
        by_intent: dict[str, list[Sample]] = defaultdict(list)
        for s in kept:
            by_intent[s.intent].append(s)
        rng = random.Random(seed)  # noqa: S311 - seeded sampling, not security
        capped: set[int] = set()
        for group in by_intent.values():
            chosen = group if len(group) <= max_per_intent else rng.sample(group, max_per_intent)
            capped.update(id(s) for s in chosen)
            capped.update(id(s) for s in group if s.pinned)  # corrections are never capped away
        kept = [s for s in kept if id(s) in capped]
    counts = Counter(s.intent for s in kept)
    for intent, n in sorted(counts.items()):
        if n < min_examples:
            warnings.append(f"intent {intent!r} has only {n} example(s); {min_examples} or more recommended")
    for intent in dict.fromkeys(data.declared_intents):
        if intent not in counts:
            warnings.append(f"intent {intent!r} is declared but has no examples; the model cannot predict it")
    return NluData(tuple(kept), data.synonyms, tuple(warnings), data.declared_intents)


def stratified_split(samples: Sequence[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Hold out ``fraction`` of each intent (at least one when it has 3+ examples, never all)."""
    if fraction <= 0:
        return list(samples), []
    rng = random.Random(seed)  # noqa: S311 - seeded sampling, not security
    by_intent: dict[str, list[Sample]] = defaultdict(list)
    train: list[Sample] = [s for s in samples if s.pinned]
    for s in samples:
        if not s.pinned:
            by_intent[s.intent].append(s)
    held: list[Sample] = []
    for intent in sorted(by_intent):
        group = list(by_intent[intent])
        rng.shuffle(group)
        n_held = round(len(group) * fraction)
        if len(group) >= 3:
            n_held = max(1, n_held)
        n_held = min(n_held, len(group) - 2) if len(group) > 2 else 0
        held.extend(group[:n_held])
        train.extend(group[n_held:])
    rng.shuffle(train)
    return train, held


def k_folds(samples: Sequence[Sample], k: int, seed: int) -> list[tuple[list[Sample], list[Sample]]]:
    """Stratified K folds: each sample is tested exactly once."""
    rng = random.Random(seed)  # noqa: S311 - seeded sampling, not security
    by_intent: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_intent[s.intent].append(s)
    fold_of: dict[int, int] = {}
    offset = 0
    for intent in sorted(by_intent):
        group = by_intent[intent]
        order = list(range(len(group)))
        rng.shuffle(order)
        for rank, idx in enumerate(order):
            fold_of[id(group[idx])] = (rank + offset) % k
        offset += len(group)
    return [([s for s in samples if fold_of[id(s)] != f], [s for s in samples if fold_of[id(s)] == f])
            for f in range(k)]

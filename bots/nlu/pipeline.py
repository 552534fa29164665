"""The NLU components a Rasa ``config.yml`` runs after the model, in one place: serving and evaluation.

Switchboard's NLU model stands in for Rasa's tokenizers, featurizers and DIET (intent, entities with
their roles and groups). What Rasa runs besides, Switchboard runs here, after the model, in the order
``config.yml``'s ``pipeline:`` lists them (kept in ``BotSpec.pipeline`` by bots/dialogue/rasa_config.py):

* ``RegexEntityExtractor``: the NLU data's ``regex:`` and ``lookup:`` tables whose name is an entity
  annotated in the NLU examples, as Rasa 3 builds them (one pattern per regex; a lookup table is one
  alternation of its escaped elements, ``\\b`` around each unless ``use_word_boundaries: false``),
  matched case-insensitively unless ``case_sensitive: true``; ``use_regexes`` and
  ``use_lookup_tables`` switch the two kinds off. A match's value is the matched text.
* ``DucklingEntityExtractor``: bots/nlu/extractors.py, in process, or the Duckling server at its
  ``url``; ``dimensions``, ``locale`` (default: from config.yml's ``language``, ``en_US`` for English),
  ``timezone`` and ``timeout`` honoured; "tomorrow" is relative to the time the message arrived.
* ``EntitySynonymMapper``: the synonyms (``synonym:`` items and annotated values such as
  ``[NYC]{"entity": "city", "value": "New York"}``, keys case-insensitive, each canonical value mapping
  to itself) replace the value of every entity found *before it* in the pipeline, as Rasa's does.

Entities are appended in that order; overlapping entities of several extractors are all kept (Rasa
keeps them too; slot mappings choose by entity, role and group, and a slot that is no list takes the last
value). The model's own entities, with the text they cover as their value, join where ``config.yml``
lists the entity extractor the model stands in for (``DIETClassifier``: ``BotSpec.model_entities_at``), first
when it lists none (a Rasa pipeline maps synonyms only where it lists ``EntitySynonymMapper``).

A bot whose pipeline names none of the three (every ``bot.yml`` bot) gets ``process`` as the identity:
the model's entities, its synonyms applied, exactly as before this module existed.

Contract of ``NluPipeline.process``: async; the CPU-bound steps (regexes, in-process Duckling) run in a
worker thread, the Duckling server is awaited, so the event loop is never blocked; a step that fails is
logged and skipped (the message keeps what the other steps found), never raised. Button payloads
(``/intent{...}``) do not pass through it: Rasa bypasses its pipeline for them too.
Bad component options raise ConfigError at ``for_bot``; ``check_component`` gives the same reasons to
bots/dialogue/rasa_config.py, which reports them at load as ``config.yml:LINE`` (a served bot never
meets one).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from bots.botspec import BotSpec, PipelineComponent
from bots.errors import ConfigError
from bots.nlu.extractors import DucklingHTTPExtractor, LocalDucklingExtractor, extract, extractor_for
from bots.nlu.ngrams import ANALYZERS, Analyzer, parse_analyzers
from bots.types import Entity, Understanding

log = logging.getLogger("switchboard.nlu")

SYNONYM_MAPPER = "EntitySynonymMapper"
REGEX_EXTRACTOR = "RegexEntityExtractor"
DUCKLING_EXTRACTOR = "DucklingEntityExtractor"
PIPELINE_STEPS = (SYNONYM_MAPPER, REGEX_EXTRACTOR, DUCKLING_EXTRACTOR)
DUCKLING_OPTIONS = ("url", "dimensions", "locale", "timezone", "timeout")
# Rasa's CountVectorsFeaturizer: the intent classifier's n-gram features (bots/nlu/ngrams.py; training reads them
# with ``ngram_features_of``). Its options Switchboard reads, and the ones Rasa has that it does not.
COUNT_VECTORS = "CountVectorsFeaturizer"
COUNT_VECTORS_OPTIONS = ("analyzer", "min_ngram", "max_ngram")
COUNT_VECTORS_UNSUPPORTED = {
    key: "n-grams are lower-cased words of letters and digits, every n-gram of the training examples kept"
    for key in ("lowercase", "stop_words", "min_df", "max_df", "max_features", "token_pattern", "strip_accents")
} | {key: "words unseen in training are dropped, not mapped to one token" for key in ("OOV_token", "OOV_words")} \
  | {"use_shared_vocab": "the intent classifier has one vocabulary", "alias": "not needed",
     "additional_vocabulary_size": "the vocabulary is fixed at training"}
# What a Rasa project without a ``pipeline:`` runs (Rasa's default pipeline's two featurizers).
RASA_DEFAULT_FEATURIZERS = (PipelineComponent(COUNT_VECTORS, {}, "config.yml: Rasa's default pipeline"),
                            PipelineComponent(COUNT_VECTORS, {"analyzer": "char_wb", "min_ngram": 1, "max_ngram": 4},
                                              "config.yml: Rasa's default pipeline"))
REGEX_OPTIONS: dict[str, bool] = {"case_sensitive": False, "use_lookup_tables": True, "use_regexes": True,
                                  "use_word_boundaries": True}   # Rasa 3's defaults

ReferenceTime = datetime | float | None


class Step(Protocol):
    name: str

    async def apply(self, text: str, entities: list[Entity], reference_time: ReferenceTime) -> list[Entity]: ...

    async def aclose(self) -> None: ...


def synonyms_of(spec: BotSpec) -> dict[str, str]:
    """What Rasa's EntitySynonymMapper learns from the NLU data: ``synonym:`` items (each example that is not
    the synonym itself: ``Fire`` of ``synonym: fire`` maps "FIRE" to "fire"), then every annotated value that
    differs from the text it annotates (later ones win, as in Rasa), each key lower-case. A text that is its
    own value maps nothing (``_add_entities_if_synonyms``: ``if original != replacement``), so a value typed in
    another case ("NEW YORK", "Green Circle") stays as typed unless a synonym names it."""
    found: dict[str, str] = {}

    def add(shown: str, value: str) -> None:
        if shown != value:
            found[shown.lower()] = value

    for variant, canonical in spec.synonyms.items():  # keys already lower-cased by the readers
        found[variant.lower()] = canonical
    for intent in spec.intents.values():
        for example in intent.examples:
            for e in example.entities:
                add(example.text[e.start:e.end], e.value)
    return found


def _with_value(e: Entity, value: str) -> Entity:
    """``e`` with its value replaced; a Duckling value object keeps its shape with the new ``value``, so
    ``Entity.rasa_value`` is the mapped value as Rasa's entity dict would carry it."""
    info = e.additional_info
    if info is not None and info.get("type") != "interval":
        info = {**info, "value": value}
    return replace(e, value=value, additional_info=info)


@dataclass
class SynonymStep:
    synonyms: Mapping[str, str]
    name: str = SYNONYM_MAPPER

    def map(self, entities: Iterable[Entity]) -> list[Entity]:
        out = []
        for e in entities:
            key = e.value.lower() if isinstance(e.value, str) else str(e.value).lower()
            canonical = self.synonyms.get(key)
            out.append(e if canonical is None or canonical == e.value else _with_value(e, canonical))
        return out

    async def apply(self, text: str, entities: list[Entity], reference_time: ReferenceTime) -> list[Entity]:
        return self.map(entities)

    async def aclose(self) -> None:
        return None


@dataclass
class RegexStep:
    """Rasa 3's RegexEntityExtractor over the bot's tables: ``patterns`` is (entity, compiled pattern)."""

    patterns: tuple[tuple[str, re.Pattern[str]], ...]
    name: str = REGEX_EXTRACTOR
    unused: tuple[str, ...] = ()   # tables named after no annotated entity (Rasa ignores them too)

    @classmethod
    def build(cls, spec: BotSpec, options: Mapping[str, Any]) -> RegexStep:
        config = dict(REGEX_OPTIONS)
        for key, value in options.items():
            if key not in REGEX_OPTIONS:
                raise ValueError(f"{REGEX_EXTRACTOR}: not supported: {key} (known: {', '.join(REGEX_OPTIONS)})")
            if not isinstance(value, bool):
                raise ValueError(f"{REGEX_EXTRACTOR}: '{key}' must be true or false")
            config[key] = value
        entities = {e.entity for intent in spec.intents.values() for x in intent.examples for e in x.entities}
        flags = 0 if config["case_sensitive"] else re.IGNORECASE
        found: list[tuple[str, re.Pattern[str]]] = []
        unused: list[str] = []
        if config["use_regexes"]:
            for name, regexes in spec.regexes.items():
                if name not in entities:
                    unused.append(f"regex '{name}'")
                    continue
                found += [(name, re.compile(r, flags)) for r in regexes]
        if config["use_lookup_tables"]:
            for name, elements in spec.lookups.items():
                if name not in entities:
                    unused.append(f"lookup '{name}'")
                    continue
                escaped = [re.escape(x) for x in elements]
                if not escaped:
                    continue
                pattern = ("(\\b" + "\\b|\\b".join(escaped) + "\\b)") if config["use_word_boundaries"] \
                    else ("(" + "|".join(escaped) + ")")
                found.append((name, re.compile(pattern, flags)))
        return cls(tuple(found), unused=tuple(unused))

    def extract(self, text: str) -> list[Entity]:
        out = []
        for entity, pattern in self.patterns:
            for m in pattern.finditer(text):
                if m.end() > m.start():  # an empty match names nothing
                    out.append(Entity(entity, m.group(), m.start(), m.end(), 1.0, extractor=REGEX_EXTRACTOR))
        return out

    async def apply(self, text: str, entities: list[Entity], reference_time: ReferenceTime) -> list[Entity]:
        if not self.patterns or not text:
            return entities
        return entities + await asyncio.to_thread(self.extract, text)

    async def aclose(self) -> None:
        return None


@dataclass
class DucklingStep:
    extractor: LocalDucklingExtractor | DucklingHTTPExtractor
    name: str = DUCKLING_EXTRACTOR

    async def apply(self, text: str, entities: list[Entity], reference_time: ReferenceTime) -> list[Entity]:
        x = self.extractor
        if isinstance(x, LocalDucklingExtractor):
            found = await asyncio.to_thread(extract, text, dimensions=x.dimensions, locale=x.locale,
                                            timezone=x.timezone, reference_time=reference_time)
        else:
            found = await x.extract(text, reference_time=reference_time)  # logs and returns [] on any failure
        return entities + found

    async def aclose(self) -> None:
        if isinstance(self.extractor, DucklingHTTPExtractor):
            await self.extractor.aclose()


def duckling_options(component: Mapping[str, Any], language: str | None) -> dict[str, Any]:
    """A DucklingEntityExtractor entry with Rasa's default locale filled in from the bot's ``language``
    (``de`` → ``de_DE``; English → ``en_US``, where Rasa's ``en_EN`` is no region Duckling knows)."""
    options = dict(component)
    if not options.get("locale") and language:
        lang = language.strip().split("_")[0].split("-")[0].lower()
        options["locale"] = "en_US" if lang == "en" else f"{lang}_{lang.upper()}"
    return options


def count_vectors_analyzer(options: Mapping[str, Any]) -> Analyzer:
    """A CountVectorsFeaturizer's analyzer and n-gram range (Rasa's defaults: word, 1-1); ValueError naming the
    option."""
    kind = options.get("analyzer", "word")
    if kind not in ANALYZERS:
        raise ValueError(f"{COUNT_VECTORS}: 'analyzer' must be one of {', '.join(ANALYZERS)}, got {kind!r}")
    low, high = options.get("min_ngram", 1), options.get("max_ngram", 1)
    for key, value in (("min_ngram", low), ("max_ngram", high)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{COUNT_VECTORS}: '{key}' must be a whole number, got {value!r}")
    try:
        return Analyzer(str(kind), low, high)
    except ValueError as exc:
        raise ValueError(f"{COUNT_VECTORS}: {exc}") from None


def ngram_features_of(pipeline: Sequence[PipelineComponent]) -> str:
    """``TrainConfig.ngram_features`` for a pipeline's CountVectorsFeaturizers ("" without any); ValueError for
    two of one analyzer (one range per analyzer)."""
    analyzers = [str(count_vectors_analyzer(c.options)) for c in pipeline if c.name == COUNT_VECTORS]
    text = ",".join(analyzers)
    parse_analyzers(text)
    return text


def check_component(name: str, options: Mapping[str, Any], language: str | None = None) -> str | None:
    """Why a pipeline component's options cannot run (None: they can); what the loader reports as
    ``config.yml:LINE`` so that a bot with bad options never serves."""
    try:
        if name == SYNONYM_MAPPER and options:
            raise ValueError(f"{SYNONYM_MAPPER}: not supported: {', '.join(sorted(options))}")
        if name == REGEX_EXTRACTOR:
            RegexStep.build(BotSpec(name="check", directory=Path("."), intents={}), options)
        if name == DUCKLING_EXTRACTOR:
            extractor_for(duckling_options({"name": DUCKLING_EXTRACTOR, **options}, language))
        if name == COUNT_VECTORS:
            count_vectors_analyzer(options)
    except ValueError as exc:
        reason = str(exc)
        return reason if reason.startswith(name) else f"{name}: {reason}"
    return None


def build_step(component: PipelineComponent, spec: BotSpec) -> Step | None:
    """The step for one pipeline component (None for components that are not steps, e.g.
    FallbackClassifier); ``ValueError`` naming the option for bad options."""
    if component.name == SYNONYM_MAPPER:
        if component.options:
            raise ValueError(f"{SYNONYM_MAPPER}: not supported: {', '.join(sorted(component.options))}")
        return SynonymStep(synonyms_of(spec))
    if component.name == REGEX_EXTRACTOR:
        return RegexStep.build(spec, component.options)
    if component.name == DUCKLING_EXTRACTOR:
        language = spec.section("language")
        options = duckling_options({"name": DUCKLING_EXTRACTOR, **component.options},
                                   language if isinstance(language, str) else None)
        return DucklingStep(extractor_for(options))
    return None


@dataclass
class NluPipeline:
    """The steps after the model (empty: ``process`` returns the model's understanding as it is)."""

    steps: tuple[Step, ...] = ()
    notes: tuple[str, ...] = field(default=())
    model_at: int = 0   # how many steps run before the model's entities join (its DIETClassifier's place)

    @classmethod
    def for_bot(cls, spec: BotSpec) -> NluPipeline:
        """The bot's pipeline, from ``spec.pipeline``; ConfigError ``where: reason`` for bad options."""
        steps: list[Step] = []
        notes: list[str] = []
        model_at = 0
        for i, component in enumerate(spec.pipeline):
            if i == spec.model_entities_at:
                model_at = len(steps)
            try:
                step = build_step(component, spec)
            except ValueError as exc:
                raise ConfigError(f"{component.where}: {exc}" if component.where else str(exc)) from None
            if step is None:
                continue
            if isinstance(step, RegexStep) and step.unused:
                notes.append(f"{component.where}: {REGEX_EXTRACTOR}: {', '.join(step.unused)} not used: no NLU "
                             f"example annotates an entity of that name (Rasa uses only those too)")
            steps.append(step)
        if spec.model_entities_at >= len(spec.pipeline):
            model_at = len(steps)
        return cls(tuple(steps), tuple(notes), model_at)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)

    async def process(self, text: str, understanding: Understanding, *,
                      reference_time: ReferenceTime = None) -> Understanding:
        """``understanding`` (the model's) with the pipeline's entities added and mapped."""
        if not self.steps:
            return understanding
        model = [_as_tagged(text, e) for e in understanding.entities]
        entities: list[Entity] = []
        for i, step in enumerate(self.steps):
            if i == self.model_at:
                entities += model
            try:
                entities = await step.apply(text, entities, reference_time)
            except Exception:
                log.error("nlu step failed; the message keeps the other steps' entities", exc_info=True,
                          extra={"step": step.name})
        if self.model_at >= len(self.steps):
            entities += model
        return replace(understanding, entities=tuple(entities))

    async def process_many(self, texts: Sequence[str], understandings: Sequence[Understanding], *,
                           reference_time: ReferenceTime = None, concurrency: int = 8) -> list[Understanding]:
        """``process`` for many texts (evaluation), at most ``concurrency`` at once."""
        if not self.steps:
            return list(understandings)
        gate = asyncio.Semaphore(concurrency)

        async def one(text: str, u: Understanding) -> Understanding:
            async with gate:
                return await self.process(text, u, reference_time=reference_time)

        return list(await asyncio.gather(*(one(t, u) for t, u in zip(texts, understandings, strict=True))))

    async def aclose(self) -> None:
        for step in self.steps:
            try:
                await step.aclose()
            except Exception:
                log.warning("nlu step did not close cleanly", exc_info=True, extra={"step": step.name})


def _as_tagged(text: str, e: Entity) -> Entity:
    """A model entity with the text it covers as its value (the model applies synonyms itself; in a
    pipeline the EntitySynonymMapper does, where config.yml lists it). Other extractors' entities and
    entities without a span in ``text`` are kept as they are."""
    if e.extractor or not 0 <= e.start < e.end <= len(text):
        return e
    shown = text[e.start:e.end]
    return e if shown == e.value else replace(e, value=shown)

"""Choosing the answer: the best template for a known question, a composed answer for a new one.

``AnswerSelector.load(artifact_dir, encoder)`` reads ``ARTIFACT/responses/`` (written by
training/answers.py). ``answer(text, understanding, values)`` returns an ``Answer`` or ``None``
(nothing fits: the dialogue falls back). Per intent the bot's config picks the path:

* ``template``: the intent's own ``response`` variants, filled.
* ``retrieval``: exact nearest-neighbour search over the normalised question vectors; the
  nearest question's answer template, filled. A question far from every known question is
  answered from the knowledge base (its closest sentences, composed in document order).
* ``generation``: the generation model writes an answer from the retrieved passages; it is
  used only when grounded (bots/answers/grounding.py) and confident, else the retrieval answer is.
  The model is the artifact's own (bots/answers/generation.py) or, with ``answers.generation.endpoint``,
  an OpenAI-compatible server (bots/answers/endpoint.py); a failed or unavailable server means the
  retrieval answer.

A template is used only when all its ``{placeholders}`` can be filled from the message's
entities, the conversation's slots or the bot's ``answers.values``: never an unfilled one.

**Compose** (``answers.compose``, with a generator on): a ``retrieval`` question whose nearest known
question is less similar than ``compose.below`` (no template fits it well) is answered by the
generator from the top knowledge-base passages and the nearest answer templates, numbered in the
prompt (``[1] ...``). Each sentence it writes is checked by the grounding guard against those sources
(``grounding.attribute``) and recorded with the source that supports it best (its number, id and
score: the answer's ``composed`` metadata, stored with the bot's turn and shown in the review UI).
The answer is the supported sentences before the first refused one (a later sentence may lean on
the refused one, so it is not shown either); when the first is refused, or the generator fails,
the retrieval answer is given. Streamed and whole answers follow the same rule.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from bots.answers.endpoint import EndpointGenerator
from bots.answers.generation import Generated, GenerationMeter, OnnxGenerator, OutdatedGenerator
from bots.answers.grounding import Support, attribute, check_support, split_sentences
from bots.botspec import fill_template, placeholders
from bots.errors import ArtifactError
from bots.metrics import Metrics
from bots.nlu.oos import NOT_UNDERSTOOD
from bots.types import AnswerSource, BotResponse, Understanding

log = logging.getLogger("switchboard.answers")

RESPONSES_DIR = "responses"
_FORMAT = 1
_GENERIC = "entity"  # training/answers.py GENERIC_PLACEHOLDER
_SENTENCE_MARGIN = 0.12  # knowledge-base sentences this much less similar than the best are left out
# A knowledge-base chunk's score for a question: this share of the whole chunk's similarity, the rest its best
# sentence's (max-passage scoring). A chunk's one embedding dilutes the sentence that answers among the others:
# on 35 questions about the example bot's kb/ the right chunk was picked 26 times by the chunk alone, 33 by
# this (bench/RESULTS.md, "Knowledge-base passages").
_CHUNK_WEIGHT = 0.25
_INLINE_ROWS = 20_000  # index rows (questions, templates, chunks, sentences) up to which _plan runs on the event loop
_CITATION = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")  # "[2]", "[1, 3]": a model citing the numbered sources


@runtime_checkable
class Encoder(Protocol):
    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class Answer:
    text: str
    source: AnswerSource  # template | retrieval | generation
    intent: str | None
    score: float  # similarity of the evidence used (1.0 for a fixed template)
    passages: tuple[str, ...] = ()
    detail: dict[str, Any] = field(default_factory=dict)  # why: nearest question, guard verdict, ...

    def metadata(self) -> dict[str, Any]:
        return {"intent": self.intent, "score": round(self.score, 4), **self.detail}

    def to_response(self) -> BotResponse:
        return BotResponse(text=self.text, source=self.source, metadata=self.metadata())


@dataclass(frozen=True)
class AnswerDelta:
    """A piece of a streamed answer; the last one carries the finished ``Answer``."""

    text: str
    final: Answer | None = None


@dataclass(frozen=True)
class _Template:
    variants: tuple[str, ...]
    intent: str
    source: str
    from_bot: bool  # the intent's own ``response`` in bot.yml


def _load_matrix(folder: Path, name: str, rows: int) -> np.ndarray:
    path = folder / name
    if not path.is_file():
        raise ArtifactError(f"{folder}: missing {name}; retrain the bot")
    m = np.load(path, allow_pickle=False).astype(np.float32)
    if rows and m.shape[0] != rows:
        raise ArtifactError(f"{path}: {m.shape[0]} rows for {rows} entries; retrain the bot")
    return m if rows else np.zeros((0, 1), dtype=np.float32)


class AnswerSelector:
    def __init__(self, folder: Path, index: dict[str, Any], encoder: Encoder,
                 generator: OnnxGenerator | EndpointGenerator | None = None,
                 meter: GenerationMeter | None = None) -> None:
        cfg = index["config"]
        self.folder = folder
        self.config: dict[str, Any] = cfg
        self.encoder = encoder
        self.generator = generator
        self.meter = meter
        self.values: dict[str, str] = {str(k): str(v) for k, v in cfg.get("values", {}).items()}
        self.templates = [_Template(tuple(t["variants"]), t["intent"], t.get("source", ""), bool(t.get("from_bot")))
                          for t in index["templates"]]
        self.question_texts = [q["text"] for q in index["questions"]]
        self.question_template = np.array([q["template"] for q in index["questions"]], dtype=np.int64)
        self.chunks: list[dict[str, Any]] = index["chunks"]
        self.sentences = [s["text"] for s in index["sentences"]]
        self.sentence_chunk = np.array([s["chunk"] for s in index["sentences"]], dtype=np.int64)
        self.questions = _load_matrix(folder, "questions.npy", len(self.question_texts))
        self.template_vectors = _load_matrix(folder, "templates.npy", len(self.templates))
        self.chunk_vectors = _load_matrix(folder, "chunks.npy", len(self.chunks))
        self.sentence_vectors = _load_matrix(folder, "sentences.npy", len(self.sentences))
        self._rows = sum(len(m) for m in (self.questions, self.template_vectors, self.chunk_vectors,
                                          self.sentence_vectors))
        intents = np.array([t.intent for t in self.templates] or [""])
        self._rows_of: dict[str, np.ndarray] = {
            name: np.flatnonzero(intents[self.question_template] == name) for name in set(intents.tolist())
        } if len(self.question_template) else {}
        # Where an answer's evidence is, by what its detail names (``_evidence_score``).
        self._question_row = {text: i for i, text in reversed(list(enumerate(self.question_texts)))}
        self._chunk_row = {f"{c['document']}:{c['line']}": i for i, c in enumerate(self.chunks)}

    @classmethod
    def load(cls, artifact_dir: Path, encoder: Encoder, *, load_generator: bool = True, metrics: Metrics | None = None,
             bot: str = "") -> AnswerSelector | None:
        """``None`` when the artifact has no answer index (trained before answers existed). ``metrics``
        and ``bot``: where generated answers are counted."""
        folder = Path(artifact_dir) / RESPONSES_DIR
        if not (folder / "index.json").is_file():
            return None
        try:
            index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{folder / 'index.json'}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        if index.get("format") != _FORMAT:
            raise ArtifactError(f"{folder / 'index.json'}: format {index.get('format')!r}, expected {_FORMAT}")
        meter = GenerationMeter(metrics, bot) if metrics is not None else None
        generator: OnnxGenerator | EndpointGenerator | None = None
        endpoint = (index["config"].get("generation") or {}).get("endpoint")
        if load_generator and endpoint:
            generator = EndpointGenerator.from_config(endpoint, meter=meter, bot=bot)
        elif load_generator and (folder / "generator" / "generator.json").is_file():
            try:
                generator = OnnxGenerator.load(folder / "generator")
            except OutdatedGenerator as exc:  # the rest of the artifact serves: retrieval answers
                log.warning("answer generation off: %s", exc, extra={"bot": bot})
        return cls(folder, index, encoder, generator, meter)

    # -- configuration -------------------------------------------------------------------
    def mode_for(self, intent: str | None) -> str:
        mode = str(self.config.get("intents", {}).get(intent, self.config.get("default", "retrieval")))
        if mode == "generation" and not self.generation_enabled:
            return "retrieval"
        return mode

    @property
    def generation_enabled(self) -> bool:
        if self.generator is None:
            return False
        gen = self.config.get("generation") or {}
        return bool(self.generator.gate_passed or not gen.get("require_gate", True))

    # -- answering -----------------------------------------------------------------------
    def answer(self, text: str, understanding: Understanding, values: Mapping[str, str] | None = None, *,
               vector: np.ndarray | None = None, mode: str | None = None, compose: bool = True) -> Answer | None:
        """The answer to ``text`` (CPU-bound: call it off the event loop). ``values``: the conversation's
        slots; ``vector``: the question's embedding if already computed; ``mode`` overrides the config;
        ``compose=False``: never compose (plain retrieval, e.g. to compare with it)."""
        plan = self._plan(text, understanding, values, vector, mode, compose)
        if isinstance(plan, Answer) or plan is None:
            return plan
        generated = self.generator.generate(*plan.prompt, **plan.limits) if self.generator else None
        return self._judge(plan, generated)

    async def answer_async(self, text: str, understanding: Understanding, values: Mapping[str, str] | None = None, *,
                           mode: str | None = None, compose: bool = True) -> Answer | None:
        """``answer`` for the event loop: a model run or a large index off it (``_plan_async``), an endpoint's
        request on it."""
        plan = await self._plan_async(text, understanding, values, mode, compose)
        if isinstance(plan, Answer) or plan is None:
            return plan
        generated = await self.generator.agenerate(*plan.prompt, **plan.limits) if self.generator else None
        return self._judge(plan, generated)

    async def stream(self, text: str, understanding: Understanding, values: Mapping[str, str] | None = None, *,
                     mode: str | None = None, compose: bool = True) -> AsyncIterator[AnswerDelta]:
        """Partial text as it is produced; the last delta carries the finished answer. A generated
        answer is shown sentence by sentence, each one checked against the passages first."""
        plan = await self._plan_async(text, understanding, values, mode, compose)
        if plan is None or isinstance(plan, Answer):
            if plan is not None:
                yield AnswerDelta(plan.text, plan)
            return
        assert self.generator is not None
        checker = _Composer(plan) if plan.sources else _Guarded(plan)
        last: Generated | None = None
        started = time.perf_counter()
        sentences = self.generator.stream_sentences(*plan.prompt, **plan.limits)
        try:
            async for sentence, confidence, done in sentences:
                last = done or last
                for piece in checker.pieces(sentence):
                    filled = checker.take(piece, confidence)
                    if filled is None:
                        break
                    if filled:
                        if not checker.shown and self.meter is not None:
                            self.meter.first_sentence_seconds.observe(time.perf_counter() - started)
                        yield AnswerDelta((" " if checker.shown else "") + filled)
                        checker.shown = (checker.shown + " " + filled).strip()
                if checker.refused:
                    break
        finally:
            await sentences.aclose()  # an endpoint's request ends here, not when the generator is collected
            if self.meter is not None:
                if last is not None:
                    self.meter.finished(last)
                else:
                    self.meter.seconds.observe(time.perf_counter() - started)
        found = self._finish(plan, checker, last)
        if found is not None:
            yield AnswerDelta("" if checker.shown else found.text, found)

    # -- internals -----------------------------------------------------------------------
    async def _plan_async(self, text: str, understanding: Understanding, values: Mapping[str, str] | None,
                          mode: str | None, compose: bool = True) -> Answer | _GenerationPlan | None:
        """``_plan`` for the event loop. With the NLU's embedding and a small index it runs inline: a few
        matrix-vector products (0.07 ms a message on the example bot's 4,508 questions), less than handing
        them to a thread and back; a question still to encode (a model run) or a large index goes to a thread."""
        vector = understanding.embedding
        if vector is not None and self._rows <= _INLINE_ROWS:
            return self._plan(text, understanding, values, vector, mode, compose)
        return await asyncio.to_thread(self._plan, text, understanding, values, vector, mode, compose)

    def _plan(self, text: str, understanding: Understanding, values: Mapping[str, str] | None,
              vector: np.ndarray | None, mode: str | None, compose: bool = True) -> Answer | _GenerationPlan | None:
        known = {**self.values, **(values or {}), **{e.entity: e.value for e in understanding.entities}}
        if len(understanding.entities) == 1:
            known.setdefault(_GENERIC, understanding.entities[0].value)
        trusted = understanding.intent != NOT_UNDERSTOOD  # the NLU's one out-of-scope rule (bots/nlu/oos.py)
        intent = understanding.intent if trusted and understanding.intent in self._rows_of else None
        mode = mode or self.mode_for(intent)
        q = vector
        if mode == "knowledge" and intent is not None:  # a passage that clearly answers beats the intent's template
            q = q if q is not None else self.encoder.embed([text])[0]
            passage = self._compose_from_kb(q, float(self.config.get("kb_override_similarity", 0.45)))
            if passage is not None:
                return passage
        if mode in ("template", "knowledge") and intent is not None:
            filled = self._fill_intent_template(intent, known)
            if filled is not None:
                return filled
        q = q if q is not None else self.encoder.embed([text])[0]
        best = self._retrieve(q, intent, known)
        kb = self._compose_from_kb(q)
        min_sim = float(self.config.get("min_similarity", 0.6))
        near_known = best is not None and best.score >= min_sim
        choice: Answer | None = best if near_known or intent is not None else None
        if not near_known and kb is not None and (intent is None or best is None or kb.score >= best.score):
            choice = kb
        if mode == "generation" and self.generator is not None and choice is not None:  # evidence to write from
            passages = self._passages(q, known)
            return self._generation_plan(text, passages, passages, known, intent, choice)
        settings = self.config.get("compose") if compose else None
        nearest = best.score if best is not None else 0.0
        if (settings and mode == "retrieval" and choice is not None and self.generation_enabled
                and nearest < float(settings.get("below", 0.5))):  # no template fits well: compose
            sources = self._compose_sources(q, known, settings)
            if sources:
                about = {"nearest_similarity": round(nearest, 4), "below": float(settings.get("below", 0.5))}
                return self._generation_plan(text, [f"[{s['n']}] {s['text']}" for s in sources],
                                             [s["text"] for s in sources], known, intent, choice, tuple(sources), about)
        return choice

    def _generation_plan(self, text: str, prompt: list[str], passages: list[str], known: dict[str, str],
                         intent: str | None, fallback: Answer, sources: tuple[dict[str, Any], ...] = (),
                         about: dict[str, Any] | None = None) -> _GenerationPlan:
        gen = self.config.get("generation") or {}
        return _GenerationPlan(
            prompt=(prompt, text), question=text, passages=tuple(passages), values=known,
            intent=intent, fallback=fallback, fallback_score=fallback.score,
            min_support=float(gen.get("min_support", 0.7)), min_confidence=float(gen.get("min_confidence", 0.35)),
            limits={"max_new_tokens": int(gen.get("max_new_tokens", 80)),
                    "max_seconds": float(gen.get("max_seconds", 2.0)),
                    "sample": gen.get("sampling") == "sample", "temperature": float(gen.get("temperature", 0.8)),
                    "top_k": int(gen.get("top_k", 40)),
                    "repetition_penalty": float(gen.get("repetition_penalty", 1.2)),
                    "no_repeat_ngram": int(gen.get("no_repeat_ngram", 0)), "beams": int(gen.get("beams", 1))},
            sources=sources, about=about or {})

    def _judge(self, plan: _GenerationPlan, generated: Generated | None) -> Answer | None:
        if generated is not None and self.meter is not None:
            self.meter.finished(generated)
        if plan.sources:  # composed: sentence by sentence, as when streamed
            composer = _Composer(plan)
            confidence = generated.confidence if generated is not None else 0.0
            for sentence in composer.pieces(generated.text if generated is not None else ""):
                filled = composer.take(sentence, confidence)
                if filled is None:
                    break
                composer.shown = (composer.shown + " " + filled).strip()
            return self._finish(plan, composer, generated)
        if generated is not None and generated.text:
            support = check_support(generated.text, plan.passages, plan.question, values=plan.values,
                                    min_support=plan.min_support)
            filled = fill_template([generated.text], plan.values)
            confident = generated.confidence >= plan.min_confidence
            detail = _verdict(support, generated, confident)
            if support.grounded and confident and filled is not None:
                return Answer(filled, "generation", plan.intent, support.score, plan.passages, detail)
        else:
            reason = generated.reason if generated is not None and generated.reason else "the model wrote nothing"
            detail = {"grounded": False, "reason": reason}
        if plan.fallback is None:
            return None
        return Answer(plan.fallback.text, plan.fallback.source, plan.fallback.intent, plan.fallback.score,
                      plan.fallback.passages, {**plan.fallback.detail, "generation_rejected": detail})

    def _finish(self, plan: _GenerationPlan, checker: _Guarded, last: Generated | None) -> Answer | None:
        """The answer once the sentences were checked: what was shown, else the retrieval answer."""
        composed = isinstance(checker, _Composer)
        if composed and self.meter is not None:
            (self.meter.composed if checker.shown else self.meter.compose_fell_back).inc()
        if checker.shown:  # what was shown was checked sentence by sentence; an unsupported rest is dropped
            detail: dict[str, Any] = {"grounded": True, "complete": last is not None and last.stopped == "eos"}
            score = plan.fallback_score
            if isinstance(checker, _Composer):
                detail["composed"] = checker.record()
                score = min(s["support"] for s in checker.sentences)
            return Answer(checker.shown, "generation", plan.intent, score, plan.passages, detail)
        if plan.fallback is None:
            return None
        if last is not None and not last.text and last.reason:
            reason = last.reason
        else:
            reason = checker.refused or "its first sentence was unsupported, unfillable or unsure"
        why: dict[str, Any] = {"grounded": False, "reason": reason}
        if composed:
            why["composed"] = True
            if last is not None and last.text:
                why["text"] = last.text
        fallback = plan.fallback
        return Answer(fallback.text, fallback.source, fallback.intent, fallback.score, fallback.passages,
                      {**fallback.detail, "generation_rejected": why})

    def follow_up(self, text: str, previous: str, understanding: Understanding,
                  values: Mapping[str, str] | None = None) -> Answer | None:
        """The answer to a message not understood alone, read with the customer's message before it ("how long
        are they valid?" after "do you sell gift cards?"; CPU-bound: a model run). The two texts together are
        retrieved as one question, no intent trusted, templates and knowledge base alike. The answer is given
        only when its evidence (the known question or the chunk) is at least ``follow_up_similarity`` close to
        the two together **and** closer to them than to the earlier message alone: the new message has to add to
        what it leans on, so "tell me a joke" after a question about returns is not answered about returns
        again. ``None``: nothing fits (the caller's fallback answers)."""
        floor = float(self.config.get("follow_up_similarity", 0.45))
        previous = previous.strip()
        if floor >= 1.0 or not previous or previous.lower() == text.strip().lower():
            return None
        both, alone = self.encoder.embed([f"{previous} {text}", previous])
        asked = replace(understanding, intent=NOT_UNDERSTOOD, embedding=None)
        found = self._plan(f"{previous} {text}", asked, values, both, "retrieval", compose=False)
        if not isinstance(found, Answer) or found.score < floor:
            return None
        earlier = self._evidence_score(found, alone)
        if earlier is None or earlier >= found.score:
            return None
        return replace(found, detail={**found.detail, "follow_up": True})

    def _evidence_score(self, answer: Answer, q: np.ndarray) -> float | None:
        """How close ``q`` is to what ``answer`` was found by (its chunk's score, or its known question's
        similarity); None when the answer names neither."""
        chunk = self._chunk_row.get(str(answer.detail.get("knowledge_base")))
        if chunk is not None:
            return float(self._chunk_scores(q)[0][chunk])
        row = self._question_row.get(str(answer.detail.get("nearest_question")))
        return float(self.questions[row] @ q) if row is not None else None

    def _fill_intent_template(self, intent: str, known: Mapping[str, str]) -> Answer | None:
        for t in self.templates:
            if t.intent == intent and t.from_bot:
                text = fill_template(t.variants, known)
                if text is not None:
                    return Answer(text, "template", intent, 1.0, (), {"template_source": t.source})
        return None

    def _retrieve(self, q: np.ndarray, intent: str | None, known: Mapping[str, str]) -> Answer | None:
        """Nearest questions (within the trusted intent, else all) → the first fillable template. The
        nearest few are ranked first (argpartition); only if none of them can be filled is the rest sorted."""
        if not len(self.question_texts):
            return None
        rows = self._rows_of.get(intent) if intent is not None else None
        sims = self.questions @ q if rows is None else self.questions[rows] @ q
        k = min(len(sims), max(1, int(self.config.get("top_k", 5))) * 8)
        head = np.argpartition(-sims, k - 1)[:k]
        head = head[np.argsort(-sims[head], kind="stable")]
        seen: set[int] = set()
        for part in (head, None):
            if part is None:  # rare: every near question's template needs a value we do not have
                rest = np.ones(len(sims), dtype=bool)
                rest[head] = False
                part = np.flatnonzero(rest)
                part = part[np.argsort(-sims[part], kind="stable")]
            for i in part:
                row = int(rows[i]) if rows is not None else int(i)
                tid = int(self.question_template[row])
                if tid in seen:
                    continue
                seen.add(tid)
                t = self.templates[tid]
                text = fill_template(t.variants, known)
                if text is not None:
                    return Answer(text, "retrieval", t.intent, float(sims[i]), (),
                                  {"nearest_question": self.question_texts[row], "template_source": t.source})
        return None

    def _chunk_scores(self, q: np.ndarray, weight: float = _CHUNK_WEIGHT) -> tuple[np.ndarray, np.ndarray]:
        """(each knowledge-base chunk's score for the question, each sentence's similarity): ``weight`` (served:
        ``_CHUNK_WEIGHT``) of the chunk's similarity plus the rest of its best sentence's."""
        s_sims = self.sentence_vectors @ q
        best_sentence = np.full(len(self.chunks), -np.inf, dtype=np.float32)
        np.maximum.at(best_sentence, self.sentence_chunk, s_sims)
        whole = self.chunk_vectors @ q
        best_sentence = np.where(np.isneginf(best_sentence), whole, best_sentence)  # a chunk without sentences
        return weight * whole + (1.0 - weight) * best_sentence, s_sims

    def _compose_from_kb(self, q: np.ndarray, floor: float | None = None) -> Answer | None:
        """The knowledge-base chunk that answers the question best (at least ``floor`` close, by default
        ``kb_min_similarity``), reduced to its closest sentences."""
        if not self.chunks:
            return None
        sims, all_sentences = self._chunk_scores(q)
        best = int(np.argmax(sims))
        if sims[best] < (float(self.config.get("kb_min_similarity", 0.35)) if floor is None else floor):
            return None
        rows = np.flatnonzero(self.sentence_chunk == best)
        n = max(1, int(self.config.get("kb_sentences", 3)))
        s_sims = all_sentences[rows]
        order = np.argsort(-s_sims)[:n]
        order = order[s_sims[order] >= s_sims[order[0]] - _SENTENCE_MARGIN]  # only the sentences that matter
        chosen = sorted(rows[order].tolist())
        text = " ".join(self.sentences[i] for i in chosen)
        chunk = self.chunks[best]
        return Answer(text, "retrieval", None, float(sims[best]), (chunk["text"],),
                      {"knowledge_base": f"{chunk['document']}:{chunk['line']}", "title": chunk["title"]})

    def passages_for(self, text: str, values: Mapping[str, str], *, exclude_question: int | None = None) -> list[str]:
        """The passages generation is conditioned on for ``text`` (training uses this to build its
        examples, leaving the example's own question out with ``exclude_question``)."""
        return self._passages(self.encoder.embed([text])[0], values, exclude_question)

    def _passages(self, q: np.ndarray, known: Mapping[str, str], exclude_question: int | None = None) -> list[str]:
        """What generation is conditioned on: the nearest answer templates and knowledge-base chunks."""
        n = max(1, int((self.config.get("generation") or {}).get("passages", 3)))
        scored = [(sim, text) for sim, _, text in self._nearest_templates(q, known, n, n * 8, exclude_question)]
        if self.chunks:
            sims = self._chunk_scores(q)[0]
            scored.extend((float(sims[i]), self.chunks[int(i)]["text"]) for i in np.argsort(-sims)[:n])
        scored.sort(key=lambda x: -x[0])
        return [t for _, t in scored[:n]]

    def _nearest_templates(self, q: np.ndarray, known: Mapping[str, str], n: int, rows: int | None = None,
                           exclude_question: int | None = None) -> list[tuple[float, int, str]]:
        """(similarity of its nearest question, template id, first fillable variant unfilled) of the ``n``
        fillable templates whose questions are nearest, among the ``rows`` nearest questions (None: all)."""
        found: list[tuple[float, int, str]] = []
        if not len(self.templates) or n <= 0:
            return found
        sims = self.questions @ q
        if exclude_question is not None:
            sims[exclude_question] = -np.inf
        seen: set[int] = set()
        for i in np.argsort(-sims)[:rows]:
            tid = int(self.question_template[i])
            text = _fillable_variant(self.templates[tid].variants, known) if tid not in seen else None
            if text is not None:
                seen.add(tid)
                found.append((float(sims[i]), tid, text))
            if len(seen) >= n:
                break
        return found

    def _compose_sources(self, q: np.ndarray, known: Mapping[str, str],
                         settings: Mapping[str, Any]) -> list[dict[str, Any]]:
        """What a composed answer is written from, numbered from 1: the knowledge-base chunks nearest to
        the question (at least ``kb_min_similarity`` close), then the nearest answer templates."""
        sources: list[dict[str, Any]] = []
        if self.chunks and int(settings.get("passages", 3)) > 0:
            sims = self._chunk_scores(q)[0]
            floor = float(self.config.get("kb_min_similarity", 0.35))
            for i in np.argsort(-sims)[: int(settings.get("passages", 3))]:
                if sims[i] < floor:
                    break
                chunk = self.chunks[int(i)]
                sources.append({"kind": "passage", "id": f"{chunk['document']}:{chunk['line']}",
                                "title": chunk["title"], "text": chunk["text"], "similarity": round(float(sims[i]), 4)})
        for sim, tid, text in self._nearest_templates(q, known, int(settings.get("templates", 2))):
            t = self.templates[tid]
            where = t.source.rsplit("/", 1)[-1] or f"template {tid}"  # bot.yml:LINE, pairs.csv:LINE
            sources.append({"kind": "template", "id": where, "intent": t.intent, "text": text,
                            "similarity": round(sim, 4)})
        return [{"n": n, **s} for n, s in enumerate(sources, 1)]


def _fillable_variant(variants: Sequence[str], known: Mapping[str, str]) -> str | None:
    """The first variant whose placeholders are all known, unfilled (as the generator was trained on)."""
    for v in variants:
        if placeholders(v) <= known.keys():
            return v
    return None


@dataclass(frozen=True)
class _GenerationPlan:
    prompt: tuple[list[str], str]  # passages, question
    question: str
    passages: tuple[str, ...]
    values: Mapping[str, str]
    intent: str | None
    fallback: Answer | None
    fallback_score: float
    min_support: float
    min_confidence: float
    limits: dict[str, Any]
    sources: tuple[dict[str, Any], ...] = ()  # a composed answer's numbered sources (passages and templates)
    about: dict[str, Any] = field(default_factory=dict)  # why it is composed: nearest similarity, the threshold


class _Guarded:
    """A generated answer's sentences as they arrive (``generation`` mode): each must keep the answer so
    far supported; the first that does not ends it."""

    def __init__(self, plan: _GenerationPlan) -> None:
        self.plan = plan
        self.shown = ""
        self.refused = ""

    def pieces(self, text: str) -> list[str]:
        return [text] if text else []

    def take(self, sentence: str, confidence: float) -> str | None:
        """The sentence as shown (filled), or ``None``: refused, and nothing after it is shown."""
        plan = self.plan
        filled = fill_template([sentence], plan.values)
        support = check_support((self.shown + " " + sentence).strip(), plan.passages, plan.question,
                                values=plan.values, min_support=plan.min_support)
        if filled is None or not support.grounded or confidence < plan.min_confidence:
            self.refused = "its first sentence was unsupported, unfillable or unsure"
            return None
        return filled


class _Composer(_Guarded):
    """A composed answer's sentences, each checked on its own against the numbered sources and
    recorded with the one that supports it best."""

    def __init__(self, plan: _GenerationPlan) -> None:
        super().__init__(plan)
        self.sentences: list[dict[str, Any]] = []

    def pieces(self, text: str) -> list[str]:
        return split_sentences(text)  # a whole answer (or a server's large chunk) holds several

    def take(self, sentence: str, confidence: float) -> str | None:
        plan = self.plan
        text = _CITATION.sub("", sentence).strip()  # the model's own citations: the guard attributes instead
        if not text:
            return ""
        filled = fill_template([text], plan.values)
        found = attribute(text, plan.passages, plan.question, values=plan.values, min_support=plan.min_support)
        if filled is None:
            reason = "a placeholder no known value fills"
        elif not found.verdict.grounded:
            reason = "; ".join(found.verdict.problems)
        elif confidence < plan.min_confidence:
            reason = f"model unsure (confidence {confidence:.2f})"
        else:
            source = plan.sources[found.source] if found.source >= 0 else None
            self.sentences.append({"text": filled, "source": source["n"] if source else None,
                                   "id": source["id"] if source else "the question",
                                   "score": round(found.score, 3), "support": round(found.verdict.score, 3)})
            return filled
        self.refused = f"sentence {len(self.sentences) + 1} refused ({reason}): {text[:160]!r}"
        return None

    def record(self) -> dict[str, Any]:
        """The attribution stored with the turn (``composed`` in the answer's metadata)."""
        record = {**self.plan.about, "sources": list(self.plan.sources), "sentences": self.sentences}
        if self.refused:
            record["dropped"] = self.refused  # the rest of the answer, from the first refused sentence on
        return record


def _verdict(support: Support, generated: Generated, confident: bool) -> dict[str, Any]:
    reasons = list(support.problems)
    if not confident:
        reasons.append(f"model unsure (confidence {generated.confidence:.2f})")
    return {"grounded": support.grounded, "support": round(support.score, 3), "text": generated.text,
            "confidence": round(generated.confidence, 3), "stopped": generated.stopped,
            "generation_seconds": round(generated.seconds, 3), "reason": "; ".join(reasons)}



class AnswerService:
    """``bots.dialogue.engine.AnswerProvider`` over an ``AnswerSelector``: heavy CPU work runs off the event loop,
    and a rule's ``answer: generation`` is served only when the generator passed its gate."""

    def __init__(self, selector: AnswerSelector) -> None:
        self.selector = selector

    @classmethod
    def load(cls, artifact_dir: Path, encoder: Encoder, *, metrics: Metrics | None = None,
             bot: str = "") -> AnswerService | None:
        selector = AnswerSelector.load(artifact_dir, encoder, metrics=metrics, bot=bot)
        return None if selector is None else cls(selector)

    def _mode(self, kind: str | None) -> str | None:
        if kind == "generation" and not self.selector.generation_enabled:
            return "retrieval"
        return kind

    async def answer(self, kind: str | None, text: str, understanding: Understanding,
                     values: Mapping[str, str], *,
                     partial: Callable[[str], Awaitable[None]] | None = None) -> BotResponse | None:
        """The answer; with ``partial``, a generated one is shown sentence by sentence as it is
        written (``partial(text so far)``), each sentence checked against the passages first."""
        if partial is None:
            found = await self.selector.answer_async(text, understanding, values, mode=self._mode(kind))
        else:
            found, shown = None, ""
            async for delta in self.stream(kind, text, understanding, values):
                if delta.final is not None:
                    found = delta.final
                elif delta.text:
                    shown += delta.text
                    await partial(shown)
        return None if found is None or not found.text else found.to_response()

    async def follow_up(self, text: str, previous: str, understanding: Understanding,
                        values: Mapping[str, str]) -> BotResponse | None:
        """``AnswerSelector.follow_up`` off the event loop (it runs the model)."""
        found = await asyncio.to_thread(self.selector.follow_up, text, previous, understanding, values)
        return None if found is None or not found.text else found.to_response()

    async def stream(self, kind: str | None, text: str, understanding: Understanding,
                     values: Mapping[str, str]) -> AsyncIterator[AnswerDelta]:
        """Partial text for channels that show it (web); the last delta carries the answer."""
        async for delta in self.selector.stream(text, understanding, values, mode=self._mode(kind)):
            yield delta

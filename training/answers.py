"""The answer index: the bot's answers as templates, its questions and knowledge base as vectors.

``build_index(bot, cfg)`` reads the bot's ``answers:`` and ``knowledge_base:`` sections,
gathers question→answer pairs (each intent's examples with its ``response``, plus optional pair
files such as Bitext's CSV), normalises every answer into a template (values the asker gave, e.g.
their order number, become ``{order_id}``; Bitext's ``{{Website Name}}`` becomes
``{website_name}``) and chunks the knowledge-base documents; ``write_index`` embeds everything
with the bot's own encoder and writes ``ARTIFACT/responses/`` (format below, read by
``bots/answers/retrieval.py``)::

    index.json       config, templates (variants, intent, source), questions, chunks, sentences
    questions.npy    float32 [questions, dim], L2-normalised
    templates.npy    float32 [templates, dim]
    chunks.npy       float32 [chunks, dim]
    sentences.npy    float32 [sentences, dim]
    generator/       optional generation model (training/generator.py)

This module is the shared base of answer training: ``training/generator.py`` and
``training/answers_eval.py`` import it, and it imports neither (``training/answers_fit.py`` ties
index, generator and evaluation together), so the three form no import cycle
(tests/test_import_contract.py).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from bots.botspec import BotSpec, parse_example, placeholders
from bots.errors import ConfigError
from bots.types import Entity
from training.answers_config import KB_SUFFIXES, AnswersConfig, parse_answers_config

__all__ = ["AnswerIndex", "AnswersConfig", "QAPair", "build_index", "pair_intents", "parse_answers_config",
           "wants_answers", "write_index"]

RESPONSES_DIR = "responses"
INDEX = "index.json"
INDEX_FORMAT = 1
GENERIC_PLACEHOLDER = "entity"  # a value from the question whose entity type is unknown
FOREIGN_PLACEHOLDER = "other_customer_value"  # an id/e-mail not from the question: never filled, never shown
_BITEXT_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
# What a customer's own value looks like: an id/number with 3+ digits, or an e-mail address.
_VALUE_LIKE = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+|(?<![\w-])[A-Za-z#-]*(?:\d[\w-]*){3,}")
# A value that belongs to some customer, not to the company's wording: an id with 5+ digits, an
# e-mail address, or a money amount.
_FOREIGN = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+|(?<![\w-])[A-Za-z#-]*(?:\d[\w-]*){5,}|[$€£]\s?\d[\d,.]*\d|[$€£]\d"
                      r"|\b\d[\d,.]*\s?(?:dollars|euros|pounds|usd|eur|gbp)\b", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


class Encoder(Protocol):
    """What fitting needs from the bot's NLU model (bots.nlu.model.OnnxNLU fits)."""

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


# -- question→answer pairs and templates -----------------------------------------------------
@dataclass(frozen=True)
class QAPair:
    question: str
    answer: str  # as written (may contain the asker's values)
    intent: str
    entities: tuple[Entity, ...] = ()
    source: str = ""


def bitext_placeholder_name(label: str) -> str:
    """``Website Name`` → ``website_name``."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_") or "value"


def normalise_answer(question: str, entities: Sequence[Entity], answer: str) -> str:
    """An answer as a template that never carries this asker's (or anyone else's) values.

    Bitext ``{{Label}}`` → ``{label}``; a tagged entity value from the question → ``{entity_type}``;
    any other number/id/e-mail that the answer copies from the question → ``{entity}``; an id or
    e-mail or money amount that is not from the question at all (Bitext answers sometimes carry
    another customer's order number or refund amount) → ``{other_customer_value}``, which nothing
    fills, so that template is never shown.
    Literal braces that are not placeholders become parentheses so that filling cannot misread them."""
    text = _BITEXT_PLACEHOLDER.sub(lambda m: "\x00" + bitext_placeholder_name(m.group(1)) + "\x01", answer)
    text = text.replace("{", "(").replace("}", ")")
    for e in sorted(entities, key=lambda e: -len(e.value)):
        shown = question[e.start:e.end]
        for v in {shown, e.value}:
            if len(v) >= 2:
                text = re.sub(rf"(?<!\w){re.escape(v)}(?!\w)", "\x00" + e.entity + "\x01", text)
    asked = {m.group(0) for m in _VALUE_LIKE.finditer(question)} | set(re.findall(r"\d{3,}", question))
    for value in sorted(asked, key=len, reverse=True):
        text = re.sub(rf"(?<![\w\x00]){re.escape(value)}(?![\w\x01])", "\x00" + GENERIC_PLACEHOLDER + "\x01", text)
    text = _FOREIGN.sub(lambda m: "\x00" + FOREIGN_PLACEHOLDER + "\x01", text)
    return text.replace("\x00", "{").replace("\x01", "}")


def _bot_pairs(bot: BotSpec) -> list[tuple[QAPair, tuple[str, ...]]]:
    out = []
    for intent in bot.intents.values():
        if not intent.responses:
            continue
        for ex in intent.examples:
            out.append((QAPair(ex.text, intent.responses[0], intent.name, ex.entities,
                               f"{bot.file}:{intent.line}"), intent.responses))
    return out


def read_pairs_csv(path: Path) -> list[QAPair]:
    """Columns question (or text)/answer/intent, or Bitext's instruction/response/intent with entity columns.
    Questions may carry Rasa annotations ``[value](entity)``."""
    pairs: list[QAPair] = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or ())
        q_col = next((c for c in ("question", "instruction", "text") if c in cols), "question")
        a_col = "answer" if "answer" in cols else "response"
        missing = [name for col, name in ((q_col, "question"), (a_col, "answer"), ("intent", "intent"))
                   if col not in cols]
        if missing:
            raise ConfigError(f"{path}:1: pairs CSV needs columns question (or text), answer, intent (or Bitext's "
                              f"instruction, response, intent); missing {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            q, a, intent = (row.get(q_col) or "").strip(), (row.get(a_col) or "").strip(), (row.get("intent") or "")
            if not q or not a or not intent.strip():
                raise ConfigError(f"{path}:{line}: empty question, answer or intent")
            pairs.append(_pair_from_row(q, a, intent.strip(), row, f"{path}:{line}"))
    return pairs


def _pair_from_row(question: str, answer: str, intent: str, row: dict[str, str], source: str) -> QAPair:
    example = parse_example(question)
    entities = list(example.entities)
    etype, value = (row.get("entity_type") or "").strip(), (row.get("entity_value") or "").strip()
    if etype and value and not entities:
        at = example.text.find(value)
        if at < 0:
            at = example.text.lower().find(value.lower())
        if at >= 0:
            entities.append(Entity(etype, value, at, at + len(value)))
    return QAPair(example.text, answer, intent, tuple(entities), source)


@dataclass(frozen=True)
class Template:
    variants: tuple[str, ...]
    intent: str
    source: str
    from_bot: bool = False  # the intent's own ``response`` in bot.yml


@dataclass
class _Templates:
    items: list[Template] = field(default_factory=list)
    index: dict[tuple[str, tuple[str, ...]], int] = field(default_factory=dict)

    def add(self, intent: str, variants: tuple[str, ...], source: str, from_bot: bool = False) -> int:
        key = (intent, variants)
        if key not in self.index:
            self.index[key] = len(self.items)
            self.items.append(Template(variants, intent, source, from_bot))
        return self.index[key]


# -- knowledge base ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Chunk:
    text: str
    document: str  # path relative to the knowledge-base folder
    title: str
    line: int
    sentences: tuple[str, ...]


def split_sentences(text: str) -> list[str]:
    out: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(line.strip().lstrip("-*•").strip() for line in para.splitlines() if line.strip())
        out.extend(s.strip() for s in _SENTENCE.split(para) if s.strip())
    return out


def chunk_documents(folder: Path, *, chunk_words: int = 120, overlap_sentences: int = 1) -> list[Chunk]:
    """Markdown/text documents → chunks of whole sentences within one section (≤ chunk_words words)."""
    chunks: list[Chunk] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in KB_SUFFIXES):
        rel = str(path.relative_to(folder))
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text ({exc.reason}); save the document as UTF-8") from None
        title, start = path.stem.replace("_", " "), 1
        sections: list[tuple[str, int, str]] = []
        body: list[str] = []
        for n, line in enumerate(lines, start=1):
            heading = re.match(r"^#{1,6}\s+(.*)", line)
            if heading:
                sections.append((title, start, "\n".join(body)))
                title, body, start = heading.group(1).strip(), [], n
            else:
                body.append(line)
        sections.append((title, start, "\n".join(body)))
        for sec_title, line_no, text in sections:
            sentences = split_sentences(text)
            i = 0
            while i < len(sentences):
                j, words = i, 0
                while j < len(sentences) and (j == i or words + len(sentences[j].split()) <= chunk_words):
                    words += len(sentences[j].split())
                    j += 1
                part = tuple(sentences[i:j])
                chunks.append(Chunk(f"{sec_title}: " + " ".join(part), rel, sec_title, line_no, part))
                if j >= len(sentences):
                    break
                i = max(i + 1, j - overlap_sentences)
    return chunks


# -- fitting ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AnswerIndex:
    config: AnswersConfig
    templates: list[Template]
    questions: list[tuple[str, int]]  # (question text, template id)
    chunks: list[Chunk]
    pairs: list[QAPair]  # normalised pairs (answer = template text), for the generator


def build_index(bot: BotSpec, cfg: AnswersConfig, *, extra_pairs: Sequence[QAPair] = (),
                leave_out: frozenset[str] = frozenset()) -> AnswerIndex:
    """Templates, questions and chunks; questions in ``leave_out`` are left out (held-out evaluation)."""
    templates = _Templates()
    questions: list[tuple[str, int]] = []
    normalised: list[QAPair] = []
    for pair, variants in _bot_pairs(bot):
        if pair.question in leave_out:
            continue
        tid = templates.add(pair.intent, variants, pair.source, from_bot=True)
        questions.append((pair.question, tid))
        normalised.append(QAPair(pair.question, variants[0], pair.intent, pair.entities, pair.source))
    loaded: list[QAPair] = list(extra_pairs)
    for name in cfg.pairs:
        loaded.extend(read_pairs_csv(bot.directory / name))
    per_intent: dict[str, int] = {}
    for pair in loaded:
        if pair.question in leave_out:
            continue
        if cfg.max_pairs_per_intent and per_intent.get(pair.intent, 0) >= cfg.max_pairs_per_intent:
            continue
        per_intent[pair.intent] = per_intent.get(pair.intent, 0) + 1
        template = normalise_answer(pair.question, pair.entities, pair.answer)
        tid = templates.add(pair.intent, (template,), pair.source)
        questions.append((pair.question, tid))
        normalised.append(QAPair(pair.question, template, pair.intent, pair.entities, pair.source))
    chunks = chunk_documents(bot.directory / cfg.kb_folder, chunk_words=cfg.chunk_words,
                             overlap_sentences=cfg.overlap_sentences) if cfg.kb_folder else []
    return AnswerIndex(cfg, templates.items, questions, chunks, normalised)


def _embed(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    vectors = np.asarray(encoder.embed(list(texts)), dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def write_index(index: AnswerIndex, encoder: Encoder, artifact_dir: Path) -> Path:
    """Embed and write ``artifact_dir/responses/``; returns that folder."""
    out = artifact_dir / RESPONSES_DIR
    out.mkdir(parents=True, exist_ok=True)
    sentences = [(s, ci) for ci, c in enumerate(index.chunks) for s in c.sentences]
    np.save(out / "questions.npy", _embed(encoder, [q for q, _ in index.questions]))
    np.save(out / "templates.npy", _embed(encoder, [t.variants[-1] for t in index.templates]))
    np.save(out / "chunks.npy", _embed(encoder, [c.text for c in index.chunks]))
    np.save(out / "sentences.npy", _embed(encoder, [s for s, _ in sentences]))
    doc = {
        "format": INDEX_FORMAT,
        "config": index.config.to_dict(),
        "templates": [{"variants": list(t.variants), "intent": t.intent, "source": t.source, "from_bot": t.from_bot,
                       "placeholders": sorted(set().union(*(placeholders(v) for v in t.variants)))}
                      for t in index.templates],
        "questions": [{"text": q, "template": tid} for q, tid in index.questions],
        "chunks": [{"text": c.text, "document": c.document, "title": c.title, "line": c.line}
                   for c in index.chunks],
        "sentences": [{"text": s, "chunk": ci} for s, ci in sentences],
    }
    tmp = out / (INDEX + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(out / INDEX)
    return out


def pair_intents(bot: BotSpec, cfg: AnswersConfig) -> set[str]:
    """The intents the bot's question→answer pairs files (``answers: pairs:``) answer."""
    return {pair.intent for name in cfg.pairs for pair in read_pairs_csv(bot.directory / name)}


def wants_answers(bot: BotSpec) -> bool:
    """An answer index is fitted for bots with an ``answers:`` or ``knowledge_base:`` section."""
    return "answers" in bot.sections or "knowledge_base" in bot.sections

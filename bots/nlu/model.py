"""Serving the NLU model: ONNX Runtime + tokenizers, no torch.

``OnnxNLU.load(artifact_dir)`` reads an artifact written by ``training/`` (format in
bots/artifact.py) and answers ``predict(texts)`` with an intent ranking and entities
(character offsets, values normalised by synonyms), and ``embed(texts)`` with the
L2-normalised sentence embeddings. Each call pads to the longest text of its batch.

A text's scores never depend on the other texts of its call (the micro-batcher, bots/nlu/batcher.py,
puts concurrent customers' messages into one call): attention and pooling ignore padding, and the
int8 twin quantises activations with static scales (training/export.py), so a text scores the same
alone or in any batch (tests/bots/test_nlu_determinism.py). An int8 file quantised dynamically, as
training did before (no ``switchboard.int8`` metadata), scales each MatMul input by its whole batch:
such a model runs one text per model call, exact and slower, until the bot is retrained.

Entity roles and groups (Rasa's ``[Paris]{"entity": "city", "role": "from"}``) are learned as
labels of their own: the entity head's tags name ``city#role=from`` (``entity_label``), and
decoding splits them back into ``Entity.entity``/``role``/``group`` (``split_label``). Artifacts
trained before roles existed have plain labels and decode as before.

An artifact with n-gram features (manifest ``ngrams``, bots/nlu/ngrams.py) adds their logits to the graph's
intent logits, text by text in numpy, before anything reads them (ranking, confidence, the out-of-scope
scores): what training scored and calibrated.

"Not understood" is decided here, once, by the rule of bots/nlu/oos.py and the bot's operating point
(``OnnxNLU.point``): ``predict`` is ``score`` (the model's own understanding and its in-scope scores)
followed by that rule. ``switchboard evaluate`` calls the same two steps, so it scores what is served.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from bots.artifact import Manifest, read_manifest
from bots.errors import ArtifactError
from bots.nlu import multi
from bots.nlu.ngrams import NgramHead
from bots.nlu.oos import INDEX_METHODS, NOT_UNDERSTOOD, OUT_OF_SCOPE, ExampleIndex, in_scope_scores, served_point
from bots.nlu.spelling import Correction, Speller, known_words
from bots.types import Entity, IntentScore, Understanding

__all__ = ["OUT_OF_SCOPE", "OnnxNLU", "Scored", "entity_label", "split_label"]
OOS_INDEX = "oos_index.npz"  # training examples' embeddings (float16), label ids, floors: the index scores
_BATCH = 32
_GROUP = 8  # texts of similar length run together: padding to the longest costs little
# ONNX metadata training/export.py writes into an int8 file whose scores do not depend on the batch.
INT8_SCHEME_KEY, INT8_STATIC = "switchboard.int8", "static-activations"
_RANKING = 10


@dataclass(frozen=True)
class _Batch:
    rows: list[int]  # where each text of this batch is in the caller's list
    texts: Sequence[str]  # as the model read them (spelling corrected, when asked)
    corrections: Sequence[Correction | None]  # each text's correction (None: read as given)
    offsets: list[list[tuple[int, int]]]
    special: list[list[int]]
    outputs: dict[str, np.ndarray]


_ROLE_MARK, _GROUP_MARK = "#role=", "#group="


def entity_label(entity: str, role: str | None = None, group: str | None = None) -> str:
    """The entity head's label for an entity with its role and group (``city#role=from#group=1``)."""
    return (entity + (f"{_ROLE_MARK}{role}" if role is not None else "")
            + (f"{_GROUP_MARK}{group}" if group is not None else ""))


def split_label(label: str) -> tuple[str, str | None, str | None]:
    """``entity_label`` read back: (entity, role, group)."""
    rest, _, group = label.partition(_GROUP_MARK)
    entity, _, role = rest.partition(_ROLE_MARK)
    return entity, (role if _ROLE_MARK in rest else None), (group if _GROUP_MARK in label else None)


@dataclass(frozen=True)
class Scored:
    """One text as the model sees it before the out-of-scope rule: its understanding (intent = the best
    one) and every in-scope score the artifact allows (bots/nlu/oos.py)."""

    understanding: Understanding
    scores: dict[str, float]


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


class OnnxNLU:
    """An IntentModel served from an artifact folder."""

    def __init__(self, artifact_dir: Path, manifest: Manifest, session: ort.InferenceSession, tokenizer: Tokenizer,
                 synonyms: Mapping[str, str], *, group: int = _GROUP, fallback_threshold: float | None = None,
                 multi_intent: bool = False) -> None:
        self.artifact_dir = artifact_dir
        self.multi_intent = multi_intent  # read a message that asks for two things as two (bots/nlu/multi.py)
        self.group = group  # texts per model call (1: a batch-dependent legacy int8 model)
        self.manifest = manifest
        self.labels: tuple[str, ...] = manifest.labels
        self.entity_tags: tuple[str, ...] = manifest.entity_tags
        self.synonyms = {k.lower(): v for k, v in synonyms.items()}
        self._session = session
        self._tokenizer = tokenizer
        self._outputs = [o.name for o in session.get_outputs()]
        missing = {"intent_logits", "entity_logits", "sentence_embedding"} - set(self._outputs)
        if missing:
            raise ArtifactError(f"{artifact_dir}: the ONNX model lacks output(s) {sorted(missing)}; retrain the bot")
        shape = next(o.shape for o in session.get_outputs() if o.name == "sentence_embedding")
        self.dimension: int | None = shape[-1] if isinstance(shape[-1], int) else None
        self._index = _load_index(artifact_dir, len(self.labels))
        self.ngrams = NgramHead.load(artifact_dir, manifest.ngrams, len(self.labels)) if manifest.ngrams else None
        self.point = served_point(manifest.oos, manifest.oos_threshold, fallback_threshold)
        self.speller = (Speller.load(artifact_dir, manifest.spelling, known_words(tokenizer.get_vocab()))
                        if manifest.spelling else None)
        if self.point.method in INDEX_METHODS and self._index is None:
            raise ArtifactError(f"{artifact_dir}: its out-of-scope method {self.point.method!r} needs {OOS_INDEX}, "
                                "which is missing; retrain the bot")

    @classmethod
    def load(cls, artifact_dir: Path, *, threads: int = 1, synonyms: Mapping[str, str] | None = None,
             onnx_file: str | None = None, fallback_threshold: float | None = None,
             multi_intent: bool = False) -> OnnxNLU:
        """``threads`` sets ONNX Runtime's intra-op threads; ``synonyms`` (variant → canonical) add to
        the artifact's own; ``onnx_file`` overrides the manifest's choice (e.g. to compare fp32/int8);
        ``fallback_threshold`` is the bot's override of the calibrated operating point (bots/nlu/oos.py);
        ``multi_intent``: a message that asks for two things is read as two (bots/nlu/multi.py)."""
        artifact_dir = Path(artifact_dir)
        return cls.from_manifest(artifact_dir, read_manifest(artifact_dir), threads=threads, synonyms=synonyms,
                                 onnx_file=onnx_file, fallback_threshold=fallback_threshold,
                                 multi_intent=multi_intent)

    @classmethod
    def from_manifest(cls, artifact_dir: Path, manifest: Manifest, *, threads: int = 1,
                      synonyms: Mapping[str, str] | None = None, onnx_file: str | None = None,
                      fallback_threshold: float | None = None, multi_intent: bool = False) -> OnnxNLU:
        """Load with a manifest given in memory (training evaluates a model before its manifest is written)."""
        model_path = artifact_dir / (onnx_file or manifest.onnx_file)
        tok_path = artifact_dir / "tokenizer.json"
        for needed in (model_path, tok_path):
            if not needed.is_file():
                raise ArtifactError(f"{artifact_dir}: missing {needed.name}; retrain the bot")
        if threads < 1:
            raise ValueError("threads must be at least 1")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own pybind exception types
            raise ArtifactError(f"{model_path}: cannot load ONNX model ({exc})") from None
        try:
            tokenizer = Tokenizer.from_file(str(tok_path))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for a bad file
            raise ArtifactError(f"{tok_path}: cannot load tokenizer ({exc})") from None
        tokenizer.enable_truncation(max_length=manifest.max_length)
        pad_id = tokenizer.token_to_id("[PAD]")
        tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id,
                                 pad_token="[PAD]" if pad_id is not None else "<pad>")
        merged = dict(manifest.extra.get("synonyms", {}))
        merged.update(synonyms or {})
        scheme = session.get_modelmeta().custom_metadata_map.get(INT8_SCHEME_KEY)
        batch_dependent = "int8" in model_path.name and scheme != INT8_STATIC
        return cls(artifact_dir, manifest, session, tokenizer, merged, group=1 if batch_dependent else _GROUP,
                   fallback_threshold=fallback_threshold, multi_intent=multi_intent)

    def _run(self, texts: Sequence[str], *, correct: bool = False) -> list[_Batch]:
        """Model outputs for ``texts``, in batches of texts of similar token length (sorted, then cut
        into groups of ``group``): a batch is padded only to its own longest text, so mixing short
        and long questions does not multiply the work. Each batch says which texts it holds.
        ``correct``: customers' messages, read with their spelling corrected where the artifact has a
        vocabulary (bots/nlu/spelling.py)."""
        out = []
        speller = self.speller if correct else None
        for i in range(0, len(texts), _BATCH):
            fixes = [speller.correct(str(t)) if speller else None for t in texts[i:i + _BATCH]]
            chunk = [f.text if f else str(t) for f, t in zip(fixes, texts[i:i + _BATCH], strict=True)]
            encs = self._tokenizer.encode_batch(chunk)  # padded to the chunk's longest; cut per group below
            ids = np.array([e.ids for e in encs], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
            lengths = mask.sum(axis=1)
            order = np.argsort(lengths, kind="stable")
            for g in range(0, len(order), self.group):
                group = [int(j) for j in order[g:g + self.group]]
                width = max(1, int(lengths[group].max()))
                values = self._session.run(self._outputs, {"input_ids": ids[group, :width],
                                                           "attention_mask": mask[group, :width]})
                out.append(_Batch([i + j for j in group], [chunk[j] for j in group], [fixes[j] for j in group],
                                  [list(encs[j].offsets[:width]) for j in group],
                                  [list(encs[j].special_tokens_mask[:width]) for j in group],
                                  dict(zip(self._outputs, values, strict=True))))
        return out

    def _rows(self, texts: Sequence[str], output: str, transform: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """One output for every text, in the caller's order."""
        parts = [(batch.rows, transform(batch.outputs[output])) for batch in self._run(texts)]
        result = np.zeros((len(texts), *parts[0][1].shape[1:]), dtype=np.float32)
        for rows, values in parts:
            result[rows] = values
        return result

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Sentence embeddings [len(texts), dim], L2-normalised (cosine = dot product)."""
        if not texts:
            return np.zeros((0, self.dimension or 0), dtype=np.float32)
        return self._rows(texts, "sentence_embedding", lambda x: x)

    def intent_probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Softmax over ``labels`` for each text, [len(texts), len(labels)]."""
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        probs = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for batch in self._run(texts, correct=True):
            probs[batch.rows] = _softmax(self._intent_logits(batch))
        return probs

    def _intent_logits(self, batch: _Batch) -> np.ndarray:
        """The graph's intent logits plus, when the artifact has them, the n-gram features' (per text)."""
        logits = batch.outputs["intent_logits"]
        return logits if self.ngrams is None else logits + self.ngrams.logits(batch.texts)

    def predict(self, texts: Sequence[str]) -> list[Understanding]:
        """Intent ranking (best first, top 10) and entities per text, with the out-of-scope rule applied:
        a text the bot's operating point rejects gets the intent ``nlu_fallback`` while ``confidence`` and
        ``ranking`` stay the model's own (bots/nlu/oos.py)."""
        decided = [self.decide(s) for s in self.score(texts, (self.point.method,))]
        if self.multi_intent:
            self._two_requests(texts, decided)
        return decided

    def _two_requests(self, texts: Sequence[str], decided: list[Understanding]) -> None:
        """A message that asks for two things (bots/nlu/multi.py): its intent becomes its first part's, and
        ``also`` names the second's. Only messages with a clause boundary are read again."""
        cuts = [(i, pair) for i, t in enumerate(texts) if (pair := multi.split(str(t))) is not None]
        if not cuts:
            return
        read = self.predict_parts([part for _, pair in cuts for part in pair])
        for k, (i, _) in enumerate(cuts):
            first, second = read[2 * k], read[2 * k + 1]
            if first.intent != second.intent and all(
                    u.intent not in (NOT_UNDERSTOOD, OUT_OF_SCOPE) and u.confidence >= multi.MIN_CONFIDENCE
                    for u in (first, second)):
                whole = decided[i]
                decided[i] = replace(first, entities=whole.entities, read_as=whole.read_as,
                                     also=(IntentScore(second.intent, second.confidence),))

    def predict_parts(self, texts: Sequence[str]) -> list[Understanding]:
        """``predict`` without the two-request reading (each text one request)."""
        return [self.decide(s) for s in self.score(texts, (self.point.method,))]

    def decide(self, scored: Scored) -> Understanding:
        """The out-of-scope rule at the bot's operating point, for one scored text."""
        u = scored.understanding
        intent = self.point.intent(u.intent, scored.scores)
        return u if intent == u.intent else replace(u, intent=intent)

    def score(self, texts: Sequence[str], methods: Collection[str] | None = None) -> list[Scored]:
        """The model's understanding of each text (intent = its best one) and its in-scope scores (``methods``:
        the index scores wanted, default all; each is the same value whichever others are asked for)."""
        results: list[Scored | None] = [None] * len(texts)
        for batch in self._run(texts, correct=True):
            logits = self._intent_logits(batch)
            probs = _softmax(logits)
            tag_probs = _softmax(batch.outputs["entity_logits"])
            vectors = batch.outputs["sentence_embedding"].astype(np.float32)
            for row, (where, text) in enumerate(zip(batch.rows, batch.texts, strict=True)):
                u = self._understand(text, probs[row], tag_probs[row], batch.offsets[row], batch.special[row],
                                     vectors[row], batch.corrections[row])
                results[where] = Scored(u, in_scope_scores(logits[row], vectors[row], self._index, u.confidence,
                                                            methods))
        return [r for r in results if r is not None]

    def _understand(self, text: str, probs: np.ndarray, tag_probs: np.ndarray, offsets: list[tuple[int, int]],
                    special: list[int], vector: np.ndarray, correction: Correction | None = None) -> Understanding:
        order = np.argsort(-probs, kind="stable")[:_RANKING]
        ranking = tuple(IntentScore(self.labels[i], float(probs[i])) for i in order)
        entities = self._entities(text, tag_probs, offsets, special, correction)
        return Understanding(intent=ranking[0].name, confidence=ranking[0].confidence, ranking=ranking,
                             entities=entities, embedding=vector,
                             read_as=text if correction is not None and correction.changes else None)

    def _entities(self, text: str, tag_probs: np.ndarray, offsets: list[tuple[int, int]],
                  special: list[int], correction: Correction | None = None) -> tuple[Entity, ...]:
        """BIO decoding: B-x starts a span, I-x continues one of the same type (a stray I-x starts one).
        Spans found in a spelling-corrected text are mapped back to the customer's own characters."""
        if len(self.entity_tags) <= 1:
            return ()
        spans: list[tuple[str, int, int, list[float]]] = []
        current: tuple[str, int, int, list[float]] | None = None
        for col, ((start, end), is_special) in enumerate(zip(offsets, special, strict=True)):
            if is_special or end <= start:
                continue
            tag_id = int(tag_probs[col].argmax())
            tag = self.entity_tags[tag_id]
            score = float(tag_probs[col, tag_id])
            if tag == "O":
                current = None
                continue
            prefix, _, kind = tag.partition("-")
            if prefix == "I" and current is not None and current[0] == kind:
                current[3].append(score)
                current = (kind, current[1], end, current[3])
                spans[-1] = current
            else:
                current = (kind, start, end, [score])
                spans.append(current)
        out = []
        for kind, start, end, scores in _word_spans(text, spans):
            if correction is not None and correction.changes:
                start, end = correction.span(start, end)
            shown = (correction.original if correction is not None else text)[start:end]
            value = self.synonyms.get(shown.lower(), shown)
            entity, role, group = split_label(kind)
            out.append(Entity(entity=entity, value=value, start=start, end=end,
                              confidence=float(np.mean(scores)), role=role, group=group))
        return tuple(out)


def _load_index(artifact_dir: Path, labels_known: int) -> ExampleIndex | None:
    """The training examples' embeddings (float32, L2-normalised rows) by label, with centroids and floors
    (computed here for an index written before floors were kept)."""
    path = artifact_dir / OOS_INDEX
    if not path.is_file():
        return None
    try:
        with np.load(path) as data:
            index = np.asarray(data["embeddings"], dtype=np.float32)
            labels = np.asarray(data["labels"], dtype=np.int64)
            floors = np.asarray(data["floors"], dtype=np.float64) if "floors" in data.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{path}: cannot read the out-of-scope index ({exc}); retrain the bot") from None
    return ExampleIndex.of(index, labels, labels_known, floors)


def _word_spans(text: str, spans: list[tuple[str, int, int, list[float]]]) -> list[tuple[str, int, int, list[float]]]:
    """Tagged word pieces as Rasa's tokenizers would have tagged whole words: punctuation alone ("!" of
    "bye-bye!") is never an entity (Rasa drops it before tagging, so a slot never gets such a value); a span
    cut inside a word is widened to the word, punctuation between letters or digits included ("01/01/2020",
    "ann@example.com" are one token to Rasa's WhitespaceTokenizer); the pieces of one word are one entity, of
    the type that covers most of the word, weighed by confidence (DIET tags a token with one type)."""
    words: list[tuple[int, int, list[tuple[str, int, list[float]]]]] = []  # start, end, (type, length, scores)
    for kind, start, end, scores in spans:
        start, end = _edge_trimmed(text, start, end)
        if not any(c.isalnum() for c in text[start:end]):
            continue
        piece = (kind, end - start, scores)
        start, end = _word_bounds(text, start, end)
        if words and start < words[-1][1]:
            first, last, pieces = words[-1]
            words[-1] = (first, max(end, last), [*pieces, piece])
        else:
            words.append((start, end, [piece]))
    out: list[tuple[str, int, int, list[float]]] = []
    for start, end, pieces in words:
        weight: dict[str, float] = {}
        for kind, length, scores in pieces:
            weight[kind] = weight.get(kind, 0.0) + length * sum(scores) / len(scores)
        best = max(weight, key=lambda k: weight[k])
        out.append((best, start, end, [x for kind, _, scores in pieces if kind == best for x in scores]))
    return out


def _word_char(c: str) -> bool:
    """A character Rasa's WhitespaceTokenizer keeps at a word's edge (``\\w``, ``#``, ``@``, ``&``)."""
    return c.isalnum() or c in "_#@&"


def _edge_trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """A tagged span without the punctuation Rasa's WhitespaceTokenizer strips from a word's edges before
    DIET tags it: a run of other characters that reaches whitespace or the end of the text ("4567." of
    "call 555-123-4567.", "ORD-10002?"), and a run after whitespace or the start that a non-digit follows
    ("(bus)"; "-5" and "$100" keep theirs). The subword pieces of Switchboard's encoder tag such punctuation
    with the word, and a slot got "555-123-4567." where Rasa's has "555-123-4567"."""
    trimmed = end
    while trimmed > start and not _word_char(text[trimmed - 1]):
        trimmed -= 1
    if trimmed < end:
        run = end
        while run < len(text) and not _word_char(text[run]) and not text[run].isspace():
            run += 1
        if run == len(text) or text[run].isspace():
            end = trimmed
    first = start
    while first < end and not _word_char(text[first]):
        first += 1
    if start < first < end and not text[first].isdigit():
        run = start
        while run > 0 and not _word_char(text[run - 1]) and not text[run - 1].isspace():
            run -= 1
        if run == 0 or text[run - 1].isspace():
            start = first
    return start, end


def _inner(text: str, i: int) -> bool:
    """Whether ``text[i]`` belongs to a word: a letter or digit, or punctuation between two of them."""
    if text[i].isalnum():
        return True
    return (not text[i].isspace() and 0 < i < len(text) - 1
            and text[i - 1].isalnum() and text[i + 1].isalnum())


def _word_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen a span cut inside a word (a word piece tagged O) to the whole word."""
    while start > 0 and _inner(text, start - 1) and _inner(text, start):
        start -= 1
    while end < len(text) and _inner(text, end) and _inner(text, end - 1):
        end += 1
    return start, end

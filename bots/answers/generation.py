"""Serving the answer generation model: ONNX Runtime + tokenizers, no torch.

``responses/generator/`` (written by training/generator.py) holds the model exported with its
KV cache (``decoder.onnx``, and ``encoder.onnx`` for an encoder-decoder: bots/answers/decoding.py),
``tokenizer.json`` and ``generator.json`` (the decoder's shape, end-of-text id, context size, and
the held-out comparison with retrieval that decides whether generation may be switched on).

The prompt is the one the model was trained on (training/generator.py ``prompt_ids``)::

    Context: <passage> | <passage> ...\\nQuestion: <question>\\nAnswer: <answer><eos>

Generation is bounded by ``max_new_tokens`` and by ``max_seconds`` of wall time: greedy, sampled
(temperature, top-k) or beam search, with a repetition penalty and a no-repeat n-gram rule.

A bot can instead send the same prompt to an OpenAI-compatible server (``answers.generation.endpoint``:
``EndpointConfig`` here, the client in bots/answers/endpoint.py). Both generators give the same
things to ``bots.answers.retrieval``: ``generate`` (blocking), ``agenerate`` and ``stream_sentences``
(async), ``gate_passed``; ``SentenceSplitter`` cuts what they write into the sentences the grounding
guard checks one by one; ``GenerationMeter`` counts them in the bot's metrics.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from bots.answers.decoding import DecodeSettings, KvModel, KvSpec, beam_search, steps
from bots.errors import ArtifactError
from bots.metrics import Metrics

_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
SYSTEM_PROMPT = ("You answer customers of a support team. Answer the question in a few short sentences, using only "
                 "the facts in the context. Keep {placeholders} as they are. If the context does not answer it, "
                 "say so.")


@dataclass(frozen=True)
class Generated:
    text: str
    confidence: float  # geometric mean probability of the chosen tokens (1.0: the server gave no logprobs)
    stopped: str  # eos | length | time | error (the endpoint failed) | unavailable (its circuit is open)
    seconds: float
    tokens: int
    prompt_tokens: int = 0
    reason: str = ""  # why it stopped early (error, unavailable), for the answer's detail and the logs


@dataclass(frozen=True)
class EndpointConfig:
    """``answers.generation.endpoint`` of bot.yml: an OpenAI-compatible server that writes the answers
    (validated by training/answers_config.py, kept in the artifact's answer config)."""

    url: str  # base URL, e.g. http://generator:8000/v1 (…/chat/completions or …/completions is appended)
    model: str  # the model name the server serves (vLLM --served-model-name, an Ollama tag, ...)
    api: str = "chat"  # chat (/chat/completions) | completions (/completions, the trained prompt as text)
    api_key_env: str = ""  # environment variable holding the API key (sent as a Bearer token, never logged)
    stream: bool = True  # server-sent events, shown sentence by sentence as they arrive
    logprobs: bool = True  # ask for token log-probabilities (the min_confidence check needs them)
    timeout_s: float = 10.0  # connect, and each read of the answer
    retries: int = 2  # more attempts after a failed one (network, 408, 429, 5xx), before anything was shown
    backoff_s: float = 0.2  # first retry delay; doubled each time, with jitter
    breaker_failures: int = 5  # this many failed answers in a row open the circuit: retrieval answers
    breaker_reset_s: float = 30.0  # then, after this long, one trial request decides (half-open)
    system: str = SYSTEM_PROMPT  # the chat API's system message


class SentenceSplitter:
    """The complete sentences of a text that grows (tokens or server deltas appended)."""

    def __init__(self) -> None:
        self.shown = 0

    def complete(self, text: str) -> str:
        """The sentences completed since the last call ("" if none)."""
        ends = [m.end() for m in _SENTENCE_END.finditer(text, self.shown)]
        if not ends:
            return ""
        sentence, self.shown = text[self.shown:ends[-1]].strip(), ends[-1]
        return sentence

    def rest(self, text: str) -> str:
        return text[self.shown:].strip()


class GenerationMeter:
    """A bot's generation metrics (bots/metrics.py; label: the bot only)."""

    def __init__(self, metrics: Metrics, bot: str) -> None:
        self.seconds = metrics.generation_seconds.labels(bot)
        self.first_sentence_seconds = metrics.generation_first_sentence_seconds.labels(bot)
        self.tokens = metrics.generation_tokens.labels(bot)
        self.prompt_tokens = metrics.generation_prompt_tokens.labels(bot)
        self.failures = metrics.generation_failures.labels(bot)
        self.retries = metrics.generation_retries.labels(bot)
        self.circuit_open = metrics.generation_circuit_open.labels(bot)
        self.composed = metrics.answers_composed.labels(bot, "composed")  # answers.compose (bots/answers/retrieval.py)
        self.compose_fell_back = metrics.answers_composed.labels(bot, "retrieval")

    def finished(self, generated: Generated) -> None:
        if generated.stopped in ("error", "unavailable"):
            self.failures.inc()
        self.seconds.observe(generated.seconds)
        self.tokens.inc(generated.tokens)
        self.prompt_tokens.inc(generated.prompt_tokens)


def _context(passages: Sequence[str]) -> str:
    return "Context: " + " | ".join(p.strip() for p in passages)


def _question(question: str) -> str:
    return f"\nQuestion: {question.strip()}\nAnswer:"


def prompt_text(passages: Sequence[str], question: str) -> str:
    """The prompt as text (what an endpoint's completions API gets; the chat API gets it without
    the trailing ``Answer:``, after the system message)."""
    return _context(passages) + _question(question)


def prompt_ids(tokenizer: Tokenizer, passages: Sequence[str], question: str, budget: int,
               bos_id: int | None = None) -> list[int]:
    """Context (cut to fit) + question + ``Answer:``; at most ``budget`` ids. Same as training's."""
    head = tokenizer.encode(_question(question), add_special_tokens=False).ids
    head = head[-max(1, budget // 2):]
    context = tokenizer.encode(_context(passages), add_special_tokens=False).ids
    start = [bos_id] if bos_id is not None else []
    room = max(0, budget - len(head) - len(start))
    return start + context[:room] + head


_APOSTROPHE = re.compile(r"(\w) ' (?=(?:s|m|t|re|ve|ll|d)\b)")
_BRACKETS = re.compile(r"([(\[$#]) | (?=[)\]%:;])")
_SENTENCE_START = re.compile(r"(^|(?<!\b[a-z])[.!?]\s+|\n\s*)([a-z])")
_PRONOUN_I = re.compile(r"\bi(?=(?:'(?:m|ll|ve|d))?(?![\w'.-]))")


def detokenize_wordpiece(text: str, *, uncased: bool) -> str:
    """A WordPiece decoder's text as written prose: the decoder puts a space around every
    punctuation piece ("i ' m sure ( 24 hours )"), and an uncased vocabulary (MiniLM's) has lost
    the capitals. Contractions and brackets are closed up; for an uncased model each sentence and
    the pronoun "I" get their capital back (names stay lower case: the model never saw them cased)."""
    text = _APOSTROPHE.sub(r"\1'", text)
    text = _BRACKETS.sub(r"\1", text)
    if uncased:
        text = _PRONOUN_I.sub("I", text)
        text = _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text)
    return text


class OutdatedGenerator(ArtifactError):
    """A generator exported before KV-cached decoding (one ``model.onnx`` recomputing every token)."""


class OnnxGenerator:
    """The artifact's generator (``responses/generator/``), decoded with its KV cache
    (bots/answers/decoding.py): greedy or sampled token by token, or beam search."""

    def __init__(self, folder: Path, meta: dict[str, Any], model: KvModel, tokenizer: Tokenizer) -> None:
        self.folder = folder
        self.meta = meta
        self.eos_id = int(meta["eos_id"])
        self.bos_id: int | None = meta.get("bos_id")
        self.max_positions = int(meta["max_positions"])
        self.gate: dict[str, Any] = meta.get("gate", {})
        self.model = model
        self._tokenizer = tokenizer
        described = json.loads(tokenizer.to_str())
        self._wordpiece = (described.get("decoder") or {}).get("type") == "WordPiece"
        self._uncased = bool((described.get("normalizer") or {}).get("lowercase", False))

    @property
    def gate_passed(self) -> bool:
        return bool(self.gate.get("passed", False))

    @classmethod
    def load(cls, folder: Path, *, threads: int = 1) -> OnnxGenerator:
        meta_path = folder / "generator.json"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"{meta_path}: unreadable generator description ({exc}); retrain the bot") from None
        if "decoder" not in meta:
            raise OutdatedGenerator(f"{folder}: a generator exported without a KV cache (one model.onnx); retrain "
                                    "the bot to serve generation")
        if not (folder / "tokenizer.json").is_file():
            raise ArtifactError(f"{folder}: missing tokenizer.json; retrain the bot")
        spec = KvSpec.from_meta(meta["decoder"], meta_path)
        model = KvModel(folder, spec, threads=threads, decoder_file=str(meta.get("decoder_file", "decoder.onnx")))
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.no_truncation()  # prompt_ids fits the prompt itself (a sentence encoder's file truncates)
        tokenizer.no_padding()
        return cls(folder, meta, model, tokenizer)

    def prompt(self, passages: Sequence[str], question: str, max_new_tokens: int) -> list[int]:
        """What the model reads: the whole prompt of a causal LM (room left for the answer), the
        encoder's input of an encoder-decoder (between its start and end tokens)."""
        spec = self.model.spec
        if spec.family == "causal":
            return prompt_ids(self._tokenizer, passages, question, self.max_positions - max_new_tokens, self.bos_id)
        assert spec.start_id is not None
        return [spec.start_id, *prompt_ids(self._tokenizer, passages, question, self.max_positions - 2), self.eos_id]

    def _steps(self, passages: Sequence[str], question: str, *, max_new_tokens: int = 80, max_seconds: float = 2.0,
               sample: bool = False, temperature: float = 0.8, top_k: int = 40, repetition_penalty: float = 1.2,
               no_repeat_ngram: int = 0, beams: int = 1, seed: int | None = None) -> Iterator[tuple[int, float, str]]:
        """(token id, its probability, "") per step, then (-1, 0, why it stopped). Beam search
        finishes before its tokens are handed out."""
        max_new_tokens = max(1, min(max_new_tokens, self.max_positions // 2))
        settings = DecodeSettings(max_new_tokens, max_seconds, sample, temperature, top_k, repetition_penalty,
                                  no_repeat_ngram, 1 if sample else max(1, beams), seed=seed)
        decoding = self.model.start(self.prompt(passages, question, max_new_tokens))
        if settings.beams == 1:
            yield from steps(decoding, self.eos_id, settings)
            return
        tokens, probs, stopped = beam_search(decoding, self.eos_id, settings)
        for token, p in zip(tokens, probs, strict=True):
            yield token, p, ""
        yield -1, 0.0, stopped

    def _decode(self, ids: Sequence[int]) -> str:
        text = self._tokenizer.decode(list(ids), skip_special_tokens=True).strip()
        return detokenize_wordpiece(text, uncased=self._uncased) if self._wordpiece else text

    def generate(self, passages: Sequence[str], question: str, **limits: Any) -> Generated:
        """The whole answer (limits: ``_steps``' keywords)."""
        started = time.perf_counter()
        ids: list[int] = []
        logp: list[float] = []
        stopped = "length"
        for token, p, why in self._steps(passages, question, **limits):
            if token < 0:
                stopped = why
                break
            ids.append(token)
            logp.append(float(np.log(max(p, 1e-12))))
        return _result(self._decode(ids), logp, stopped, started)

    async def agenerate(self, passages: Sequence[str], question: str, **limits: Any) -> Generated:
        return await asyncio.to_thread(self.generate, passages, question, **limits)

    async def stream_sentences(self, passages: Sequence[str], question: str,
                               **limits: Any) -> AsyncGenerator[tuple[str, float, Generated | None], None]:
        """(sentence, confidence so far, None) for each complete sentence as it is written (each step
        runs off the event loop); the last item carries the trailing text and the finished result."""
        started = time.perf_counter()
        tokens = self._steps(passages, question, **limits)
        ids: list[int] = []
        logp: list[float] = []
        sentences = SentenceSplitter()
        stopped = "length"
        while True:
            token, p, why = await asyncio.to_thread(next, tokens)
            if token < 0:
                stopped = why
                break
            ids.append(token)
            logp.append(float(np.log(max(p, 1e-12))))
            sentence = sentences.complete(self._decode(ids))
            if sentence:
                yield sentence, float(np.exp(np.mean(logp))), None
        text = self._decode(ids)
        done = _result(text, logp, stopped, started)
        yield sentences.rest(text), done.confidence, done


def _result(text: str, logp: Sequence[float], stopped: str, started: float) -> Generated:
    confidence = float(np.exp(np.mean(logp))) if logp else 0.0
    return Generated(text, confidence, stopped, time.perf_counter() - started, len(logp))


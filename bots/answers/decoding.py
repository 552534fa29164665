"""KV-cached decoding of an exported generator: ONNX Runtime and numpy, no torch.

A generator is exported (training/export.py ``export_kv_generator``) as graphs that take the
attention keys and values of the tokens seen so far and return them grown by the new tokens, so
each generated token costs one position's work, not the whole sequence's:

* ``causal`` (GPT-2, Llama, SmolLM, Qwen2 and the like): ``decoder.onnx`` maps ``input_ids``
  [batch, new] and ``past_key_{i}``/``past_value_{i}`` [batch, kv_heads, past, head_dim] to
  ``logits`` [batch, vocab] (of the last new token) and ``present_key_{i}``/``present_value_{i}``.
  The prompt goes in once (past of length 0), then one token per step.
* ``encoder-decoder`` (the MiniLM→MiniLM generator warm-started from the packaged encoder):
  ``encoder.onnx`` maps the prompt (``input_ids``, ``attention_mask``) to every decoder layer's
  cross-attention keys and values (``cross_key_{i}``/``cross_value_{i}``), computed once per
  answer; ``decoder.onnx`` takes the decoder's ``input_ids``, ``encoder_attention_mask``, its own
  past and the cross keys and values, and returns logits and the grown past.

A decoder may predict only part of its vocabulary (``output_ids`` in the description: the
tokens the bot's answers use; the MiniLM generator's LM head over all 30,522 tokens is ~40% of
its compute): its ``logits`` then have one column per output token, which ``KvDecoding`` puts
back at their token ids (every other token scored ``NEVER``), so everything below sees the full
vocabulary.

On top of a ``Decoding`` (one answer's state; ``first()`` then ``next(tokens, parents)``, where
``parents`` says which row each new token continues, so beams reorder the cache), ``steps`` yields
greedy or sampled tokens one by one (for sentence streaming) and ``beam_search`` returns the best
of ``beams`` hypotheses. Both apply the repetition penalty (to tokens already written) and the
no-repeat n-gram rule (a token that would repeat an n-gram of the answer is never chosen) to the
logits. The confidence of a token is its probability under the model before these rules.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort

from bots.errors import ArtifactError

FAMILIES = ("causal", "encoder-decoder")
NEVER = -1e9  # the logit of a token outside a reduced output vocabulary: never chosen, probability 0


@dataclass(frozen=True)
class DecodeSettings:
    max_new_tokens: int = 80
    max_seconds: float = 2.0
    sample: bool = False
    temperature: float = 0.8
    top_k: int = 40
    repetition_penalty: float = 1.2
    no_repeat_ngram: int = 0  # 0: off; n: no n-gram of the answer twice
    beams: int = 1
    length_penalty: float = 1.0  # beam scores are divided by length ** this
    seed: int | None = None


class Decoding(Protocol):
    """One answer being decoded: the logits of the next token of each row."""

    def first(self) -> np.ndarray: ...

    def next(self, tokens: np.ndarray, parents: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class KvSpec:
    """``generator.json``'s ``decoder``: what the exported graphs look like."""

    family: str
    layers: int
    kv_heads: int
    head_dim: int
    start_id: int | None = None  # encoder-decoder: the decoder's first input token
    output_ids: tuple[int, ...] | None = None  # the token id of each logit column, when not the whole vocabulary
    vocab_size: int = 0  # the whole vocabulary (with output_ids)

    @classmethod
    def from_meta(cls, raw: Any, where: Path) -> KvSpec:
        try:
            ids = raw.get("output_ids")
            spec = cls(str(raw["family"]), int(raw["layers"]), int(raw["kv_heads"]), int(raw["head_dim"]),
                       None if raw.get("start_id") is None else int(raw["start_id"]),
                       None if ids is None else tuple(int(i) for i in ids), int(raw.get("vocab_size") or 0))
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(f"{where}: no readable 'decoder' description (family, layers, kv_heads, head_dim); "
                                "retrain the bot") from None
        if spec.family not in FAMILIES or (spec.family == "encoder-decoder" and spec.start_id is None):
            raise ArtifactError(f"{where}: decoder family {spec.family!r} is not one of {', '.join(FAMILIES)} "
                                "(an encoder-decoder needs start_id)")
        if spec.output_ids is not None and (not spec.output_ids or min(spec.output_ids) < 0
                                            or max(spec.output_ids) >= spec.vocab_size):
            raise ArtifactError(f"{where}: decoder output_ids must be token ids below vocab_size ({spec.vocab_size}); "
                                "retrain the bot")
        return spec

    def kv_names(self, prefix: str) -> list[str]:
        return [f"{prefix}_{kv}_{i}" for i in range(self.layers) for kv in ("key", "value")]


def _session(path: Path, threads: int) -> ort.InferenceSession:
    if not path.is_file():
        raise ArtifactError(f"{path.parent}: missing {path.name}; retrain the bot")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own non-exported exception types
        raise ArtifactError(f"{path}: cannot load ONNX model ({exc})") from None


def full_vocabulary(logits: np.ndarray, output_ids: np.ndarray | None, vocab_size: int) -> np.ndarray:
    """[rows, vocab] logits from a reduced LM head's [rows, outputs] (column k is token ``output_ids[k]``,
    every other token ``NEVER``); the same array when the head covers the vocabulary."""
    if output_ids is None:
        return logits
    full = np.full((logits.shape[0], vocab_size), NEVER, dtype=logits.dtype)
    full[:, output_ids] = logits
    return full


class KvModel:
    """The exported graphs of a generator, ready to decode answers."""

    def __init__(self, folder: Path, spec: KvSpec, *, threads: int = 1, decoder_file: str = "decoder.onnx") -> None:
        self.spec = spec
        self.decoder = _session(folder / decoder_file, threads)
        self.encoder = _session(folder / "encoder.onnx", threads) if spec.family == "encoder-decoder" else None
        self.past = spec.kv_names("past")
        self.cross = spec.kv_names("cross")
        self.output_ids = None if spec.output_ids is None else np.array(spec.output_ids, dtype=np.int64)

    def full_logits(self, logits: np.ndarray) -> np.ndarray:
        return full_vocabulary(logits, self.output_ids, self.spec.vocab_size)

    def empty_past(self, rows: int) -> dict[str, np.ndarray]:
        shape = (rows, self.spec.kv_heads, 0, self.spec.head_dim)
        return {name: np.zeros(shape, dtype=np.float32) for name in self.past}

    def start(self, prompt: Sequence[int]) -> KvDecoding:
        """An answer to ``prompt`` (token ids: the whole prompt of a causal model, the encoder's input
        of an encoder-decoder)."""
        return KvDecoding(self, list(prompt))


class KvDecoding:
    def __init__(self, model: KvModel, prompt: list[int]) -> None:
        self.model = model
        self.prompt = prompt
        self.feeds: dict[str, np.ndarray] = {}

    def _run(self, input_ids: np.ndarray) -> np.ndarray:
        m = self.model
        self.feeds["input_ids"] = input_ids
        out = m.decoder.run(None, self.feeds)
        self.feeds.update(zip(m.past, out[1:], strict=True))
        return m.full_logits(np.asarray(out[0]))

    def first(self) -> np.ndarray:
        m = self.model
        self.feeds = m.empty_past(1)
        if m.encoder is None:
            return self._run(np.array([self.prompt], dtype=np.int64))
        ids = np.array([self.prompt], dtype=np.int64)
        mask = np.ones_like(ids)
        self.feeds.update(zip(m.cross, m.encoder.run(None, {"input_ids": ids, "attention_mask": mask}), strict=True))
        self.feeds["encoder_attention_mask"] = mask
        assert m.spec.start_id is not None
        return self._run(np.array([[m.spec.start_id]], dtype=np.int64))

    def next(self, tokens: np.ndarray, parents: np.ndarray) -> np.ndarray:
        rows = len(tokens)
        if rows != len(self.feeds[self.model.past[0]]) or np.any(parents != np.arange(rows)):
            for name in self.model.past:
                self.feeds[name] = self.feeds[name][parents]
            for name in (*self.model.cross, "encoder_attention_mask"):
                if name in self.feeds and len(self.feeds[name]) != rows:  # the same for every row
                    self.feeds[name] = np.repeat(self.feeds[name][:1], rows, axis=0)
        return self._run(np.asarray(tokens, dtype=np.int64).reshape(rows, 1))


# -- choosing tokens ------------------------------------------------------------------------------
def log_softmax(x: np.ndarray) -> np.ndarray:
    z = x - np.max(x, axis=-1, keepdims=True)
    return np.asarray(z - np.log(np.exp(z).sum(axis=-1, keepdims=True)))


def constrain(logits: np.ndarray, produced: Sequence[int], settings: DecodeSettings) -> np.ndarray:
    """The logits (float64, one row) after the repetition penalty and the no-repeat n-gram rule."""
    out = logits.astype(np.float64, copy=True)
    if produced and settings.repetition_penalty != 1.0:
        seen = np.array(sorted(set(produced)))
        out[seen] = np.where(out[seen] > 0, out[seen] / settings.repetition_penalty,
                             out[seen] * settings.repetition_penalty)
    n = settings.no_repeat_ngram
    if n > 0 and len(produced) >= n:
        prefix = tuple(produced[len(produced) - n + 1:])
        banned = {produced[i + n - 1] for i in range(len(produced) - n + 1)
                  if tuple(produced[i:i + n - 1]) == prefix}
        if banned:
            out[sorted(banned)] = -np.inf
    return out


def steps(decoding: Decoding, eos_id: int, settings: DecodeSettings) -> Iterator[tuple[int, float, str]]:
    """Greedy or sampled: (token id, its probability, "") per step, then (-1, 0, why it stopped):
    eos, length or time."""
    deadline = time.perf_counter() + settings.max_seconds
    rng = np.random.default_rng(settings.seed)
    produced: list[int] = []
    zero = np.zeros(1, dtype=np.int64)
    logits = decoding.first()[0]
    for _ in range(settings.max_new_tokens):
        if time.perf_counter() >= deadline:
            yield -1, 0.0, "time"
            return
        probs = np.exp(log_softmax(logits.astype(np.float64)))
        scores = constrain(logits, produced, settings)
        if settings.sample:
            scaled = scores / max(settings.temperature, 1e-3)
            if 0 < settings.top_k < len(scaled):
                cut = np.partition(scaled, -settings.top_k)[-settings.top_k]
                scaled = np.where(scaled < cut, -np.inf, scaled)
            token = int(rng.choice(len(scaled), p=np.exp(log_softmax(scaled))))
        else:
            token = int(np.argmax(scores))
        if token == eos_id:
            yield -1, 0.0, "eos"
            return
        produced.append(token)
        yield token, float(probs[token]), ""
        if len(produced) < settings.max_new_tokens:
            logits = decoding.next(np.array([token], dtype=np.int64), zero)[0]
    yield -1, 0.0, "length"


@dataclass
class _Hypothesis:
    tokens: list[int]
    logp: float  # sum of the processed log-probabilities (what beams are ranked by)
    probs: list[float]  # each token's probability under the model (the confidence)


def beam_search(decoding: Decoding, eos_id: int, settings: DecodeSettings) -> tuple[list[int], list[float], str]:
    """The best of ``settings.beams`` hypotheses: (tokens, each token's model probability, why it
    stopped). A hypothesis ends at eos; the search ends when ``beams`` have ended (no live beam
    can then overtake them under a length penalty ≥ 0 from the best finished one), at
    ``max_new_tokens`` or at ``max_seconds``. Scores: sum of log-probabilities / length ** length_penalty."""
    width = max(1, settings.beams)
    deadline = time.perf_counter() + settings.max_seconds
    live = [_Hypothesis([], 0.0, [])]
    done: list[_Hypothesis] = []
    logits = decoding.first()
    stopped = "length"

    def norm(h: _Hypothesis) -> float:
        return h.logp / max(1, len(h.tokens)) ** settings.length_penalty

    for step in range(settings.max_new_tokens):
        if time.perf_counter() >= deadline:
            stopped = "time"
            break
        candidates: list[tuple[float, int, int, float]] = []  # score, row, token, model prob
        for row, hyp in enumerate(live):
            raw = log_softmax(logits[row].astype(np.float64))
            scores = log_softmax(constrain(logits[row], hyp.tokens, settings))
            top = np.argpartition(-scores, min(2 * width, len(scores) - 1))[:2 * width]
            candidates.extend((hyp.logp + float(scores[t]), row, int(t), float(np.exp(raw[t]))) for t in top
                              if np.isfinite(scores[t]))
        candidates.sort(key=lambda c: -c[0])
        survivors: list[_Hypothesis] = []
        parents: list[int] = []
        for score, row, token, prob in candidates:
            if token == eos_id:
                if len(done) < width:
                    done.append(_Hypothesis(live[row].tokens, score, live[row].probs))
                continue
            survivors.append(_Hypothesis([*live[row].tokens, token], score, [*live[row].probs, prob]))
            parents.append(row)
            if len(survivors) == width:
                break
        if len(done) >= width or not survivors:
            stopped = "eos"
            break
        live = survivors
        if step + 1 < settings.max_new_tokens:
            logits = decoding.next(np.array([h.tokens[-1] for h in live], dtype=np.int64),
                                   np.array(parents, dtype=np.int64))
    best = max(done + (live if stopped != "eos" or not done else []), key=norm)
    return best.tokens, best.probs, ("eos" if best in done else stopped)

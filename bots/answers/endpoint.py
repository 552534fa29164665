"""Answer generation by an OpenAI-compatible server: vLLM, TGI, llama.cpp's server, Ollama.

``answers.generation.endpoint`` in bot.yml (``EndpointConfig``) sends the prompt the local
generator gets (the top knowledge-base passages and nearest answer templates, then the question)
to ``URL/chat/completions`` (a system message, then the prompt) or ``URL/completions`` (the prompt
as the local model was trained on it), with httpx:

* **timeouts**: ``timeout_s`` to connect and for each read, and the answer's ``max_seconds`` in all;
* **retries** with exponential backoff and jitter on network errors, timeouts, 408, 429 and 5xx,
  only while nothing has been shown (a shown sentence cannot be taken back); other 4xx (a wrong
  model name, a bad key) are not retried and are logged with the server's reason;
* a **circuit breaker**: ``breaker_failures`` failed answers in a row open it, and while open no
  request is sent (retrieval answers at once); after ``breaker_reset_s`` one trial request is let
  through (half-open): it closes the circuit on success, reopens it on failure;
* **streaming**: server-sent events, cut into sentences as they arrive; each one goes through the
  same grounding guard as the local model's (bots/answers/retrieval.py ``AnswerSelector.stream``);
* **metrics** (bots/metrics.py, label bot): retries and the circuit's state here; tokens (the
  server's ``usage``, else one per streamed delta), prompt tokens, latency and failures where
  every generated answer is counted (``AnswerSelector``).

A failure never raises: the result says ``stopped="error"`` or ``"unavailable"`` with the reason,
and the caller answers from retrieval. The API key is read from the environment variable named by
``api_key_env`` when the bot is loaded; it is sent as a Bearer token and never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bots.answers.generation import EndpointConfig, Generated, GenerationMeter, SentenceSplitter, prompt_text
from bots.errors import ArtifactError

log = logging.getLogger("switchboard.generation")

_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class EndpointFailure(Exception):
    """A failed request to the endpoint; ``retryable``: worth another attempt."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


class CircuitBreaker:
    """closed → ``failures`` failed answers in a row → open (nothing is sent) → after ``reset_s``
    half-open: one trial request; its success closes the circuit, its failure opens it again."""

    def __init__(self, failures: int, reset_s: float, *, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[bool], None] | None = None) -> None:
        self.threshold = max(1, failures)
        self.reset_s = reset_s
        self._clock = clock
        self._on_change = on_change
        self._failures = 0
        self._opened_at: float | None = None
        self._trial = False  # a half-open trial request is in flight

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._trial or self._clock() >= self._opened_at + self.reset_s else "open"

    def allow(self) -> bool:
        """Whether a request may be sent now (in half-open, only the one trial)."""
        if self._opened_at is None:
            return True
        if self._trial or self._clock() < self._opened_at + self.reset_s:
            return False
        self._trial = True
        return True

    def success(self) -> None:
        was_open = self._opened_at is not None
        self._failures, self._opened_at, self._trial = 0, None, False
        if was_open and self._on_change is not None:
            self._on_change(False)

    def failure(self) -> None:
        self._failures += 1
        if self._trial or self._failures >= self.threshold:
            was_open = self._opened_at is not None
            self._opened_at, self._trial = self._clock(), False
            if not was_open and self._on_change is not None:
                self._on_change(True)


@dataclass
class _Progress:
    """What one answer has produced so far (across its attempts)."""

    text: str = ""
    logprobs: list[float] = field(default_factory=list)
    deltas: int = 0
    completion_tokens: int | None = None  # the server's usage, when it reports it
    prompt_tokens: int = 0
    finish: str | None = None
    shown: bool = False  # a sentence was handed out: no retry from here

    @property
    def confidence(self) -> float:
        return float(math.exp(sum(self.logprobs) / len(self.logprobs))) if self.logprobs else 1.0

    @property
    def tokens(self) -> int:
        return self.completion_tokens if self.completion_tokens is not None else self.deltas


class EndpointGenerator:
    """``bots.answers.retrieval``'s generator, backed by an OpenAI-compatible server."""

    # An endpoint has no trained gate: naming one is the operator's choice. Every sentence still
    # passes the grounding guard, and retrieval answers whatever it rejects.
    gate_passed = True
    gate: dict[str, Any] = {"passed": True, "reason": "an endpoint's model is not trained here: no held-out gate; "
                            "every sentence passes the grounding guard"}

    def __init__(self, config: EndpointConfig, *, api_key: str = "", meter: GenerationMeter | None = None,
                 bot: str = "", transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.bot = bot
        self._meter = meter
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        path = "/chat/completions" if config.api == "chat" else "/completions"
        self.url = config.url.rstrip("/") + path
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_reset_s, clock=clock,
                                      on_change=self._circuit_changed)

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], *, environ: Mapping[str, str] | None = None,
                    meter: GenerationMeter | None = None, bot: str = "") -> EndpointGenerator:
        """From the artifact's ``generation.endpoint``; the API key from the environment."""
        known = EndpointConfig.__dataclass_fields__
        unknown = sorted(set(raw) - set(known))
        if unknown or "url" not in raw or "model" not in raw:
            raise ArtifactError(f"generation endpoint: unreadable configuration (unknown {unknown}); retrain the bot")
        config = EndpointConfig(**{k: v for k, v in raw.items() if k in known})
        env = os.environ if environ is None else environ
        key = ""
        if config.api_key_env:
            key = env.get(config.api_key_env, "")
            if not key:
                raise ArtifactError(f"answers.generation.endpoint.api_key_env: the environment variable "
                                    f"{config.api_key_env} is not set (it holds the generation endpoint's API key)")
        return cls(config, api_key=key, meter=meter, bot=bot)

    # -- the generator interface -------------------------------------------------------------
    def stream_sentences(self, passages: Sequence[str], question: str, *, max_new_tokens: int = 80,
                               max_seconds: float = 2.0, sample: bool = False, temperature: float = 0.8,
                               top_k: int = 40, repetition_penalty: float = 1.2, no_repeat_ngram: int = 0,
                               beams: int = 1,
                               seed: int | None = None) -> AsyncGenerator[tuple[str, float, Generated | None], None]:
        """(sentence, confidence so far, None) per complete sentence as it arrives, then (rest of
        the text, confidence, the finished ``Generated``). ``top_k``, ``repetition_penalty``,
        ``no_repeat_ngram`` and ``beams`` shape a local model's decoding only: the server's own
        defaults apply."""
        body = self._body(passages, question, max_new_tokens, sample, temperature, top_k, repetition_penalty, seed)
        return self._answer(self._shared_client(), body, max_seconds)

    async def agenerate(self, passages: Sequence[str], question: str, **limits: Any) -> Generated:
        return await _collect(self.stream_sentences(passages, question, **limits))

    def generate(self, passages: Sequence[str], question: str, **limits: Any) -> Generated:
        """Blocking (evaluation and benchmarks, off any event loop): one request on its own client."""

        async def once() -> Generated:
            max_seconds = float(limits.pop("max_seconds", 2.0))
            body = self._body(passages, question, **_body_limits(limits))
            async with self._new_client() as client:
                return await _collect(self._answer(client, body, max_seconds))

        return asyncio.run(once())

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- internals -----------------------------------------------------------------------------
    def _new_client(self) -> httpx.AsyncClient:
        timeout = httpx.Timeout(self.config.timeout_s)
        return httpx.AsyncClient(timeout=timeout, headers=self._headers, transport=self._transport,
                                 follow_redirects=False, trust_env=False)

    def _shared_client(self) -> httpx.AsyncClient:
        """One pooled client per event loop (keep-alive connections to the server)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client, self._client_loop = self._new_client(), loop
        return self._client

    def _body(self, passages: Sequence[str], question: str, max_new_tokens: int = 80, sample: bool = False,
              temperature: float = 0.8, top_k: int = 40, repetition_penalty: float = 1.2,
              seed: int | None = None) -> dict[str, Any]:
        c = self.config
        body: dict[str, Any] = {"model": c.model, "max_tokens": max_new_tokens, "stream": c.stream,
                                "temperature": temperature if sample else 0.0}
        if seed is not None:
            body["seed"] = seed
        if c.stream:
            body["stream_options"] = {"include_usage": True}
        if c.api == "chat":
            body["messages"] = [{"role": "system", "content": c.system},
                                {"role": "user", "content": prompt_text(passages, question).removesuffix("\nAnswer:")}]
            if c.logprobs:
                body["logprobs"] = True
        else:
            body["prompt"] = prompt_text(passages, question)
            if c.logprobs:
                body["logprobs"] = 1
        return body

    async def _answer(self, client: httpx.AsyncClient, body: dict[str, Any],
                      max_seconds: float) -> AsyncGenerator[tuple[str, float, Generated | None], None]:
        started = time.perf_counter()
        deadline = started + max_seconds
        progress = _Progress()
        sentences = SentenceSplitter()
        failure: str | None = None
        stopped = "error"
        attempt = 0
        if not self.breaker.allow():
            failure, stopped = "the generation endpoint's circuit is open (too many failures)", "unavailable"
        else:
            resolved = False
            try:
                while True:
                    attempt += 1
                    pieces = self._request(client, body, progress)
                    try:
                        while True:
                            # The deadline covers waiting for the server only, never the caller's work
                            # between sentences (no yield inside the timeout's scope).
                            async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                                arrived = await anext(pieces, False)
                            if arrived is False:
                                break
                            sentence = sentences.complete(progress.text)
                            if sentence:
                                progress.shown = True
                                yield sentence, progress.confidence, None
                        failure = None
                        break
                    except TimeoutError:
                        failure = f"no complete answer within max_seconds ({max_seconds:g} s)"
                        stopped = "time" if progress.shown else "error"  # what was shown stays
                        break
                    except EndpointFailure as exc:
                        failure = exc.reason
                        delay = self.config.backoff_s * 2 ** (attempt - 1) * (0.5 + random.random())  # noqa: S311
                        if (not exc.retryable or progress.shown or attempt > self.config.retries
                                or time.perf_counter() + delay >= deadline):
                            break
                        log.warning("generation endpoint call retried", extra={
                            "bot": self.bot, "attempt": attempt, "reason": exc.reason, "delay_s": round(delay, 3)})
                        if self._meter is not None:
                            self._meter.retries.inc()
                        await asyncio.sleep(delay)
                        progress = _Progress()
                    finally:
                        await pieces.aclose()
                if failure is None:
                    self.breaker.success()
                else:
                    self.breaker.failure()
                    log.error("generation endpoint failed" + ("" if progress.shown else ": retrieval answers"),
                              extra={"bot": self.bot, "attempts": attempt, "reason": failure,
                                     "circuit": self.breaker.state})
                resolved = True
            finally:
                if not resolved:  # the caller stopped reading (a sentence failed the guard): the server was fine
                    self.breaker.success()
                    if self._meter is not None:  # the tokens written so far, which the caller cannot count
                        self._meter.tokens.inc(progress.tokens)
        if failure is None:
            stopped = "eos" if progress.finish in (None, "stop", "eos", "eos_token", "stop_sequence") else "length"
        text = progress.text.strip() if stopped in ("eos", "length", "time") else ""
        done = Generated(text, progress.confidence, stopped, time.perf_counter() - started, progress.tokens,
                         progress.prompt_tokens, failure or "")
        yield (sentences.rest(progress.text) if text else ""), done.confidence, done

    async def _request(self, client: httpx.AsyncClient, body: dict[str, Any],
                       progress: _Progress) -> AsyncGenerator[bool, None]:
        """Send ``body``; append what arrives to ``progress`` and yield after each piece."""
        try:
            async with client.stream("POST", self.url, json=body) as response:
                if response.status_code != 200:
                    detail = (await response.aread())[:300].decode("utf-8", "replace")
                    raise EndpointFailure(f"HTTP {response.status_code} from {self.url}: {_reason(detail)}",
                                          retryable=response.status_code in _RETRYABLE_STATUS)
                whole = response.headers.get("content-type", "").startswith("application/json")
                if not self.config.stream or whole:  # a server that ignores "stream" answers whole
                    _read_whole(json.loads(await response.aread()), progress, self.config.api)
                    yield True
                    return
                done = False
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # blank separators, ": keep-alive" comments, event:/id: fields
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    _read_chunk(json.loads(data), progress, self.config.api)
                    yield True
                if not done and progress.finish is None:
                    raise EndpointFailure("the event stream ended before the answer did", retryable=not progress.text)
        except httpx.TimeoutException as exc:
            raise EndpointFailure(f"timed out after {self.config.timeout_s:g} s ({type(exc).__name__})",
                                  retryable=True) from None
        except httpx.TransportError as exc:
            raise EndpointFailure(f"cannot reach {self.url} ({type(exc).__name__})", retryable=True) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise EndpointFailure(f"malformed answer from {self.url} ({exc})", retryable=False) from None

    def _circuit_changed(self, is_open: bool) -> None:
        if self._meter is not None:
            self._meter.circuit_open.set(1 if is_open else 0)
        log.warning("generation endpoint circuit " + ("opened: retrieval answers" if is_open else "closed"),
                    extra={"bot": self.bot, "reset_s": self.config.breaker_reset_s})


def _body_limits(limits: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("max_new_tokens", "sample", "temperature", "top_k", "repetition_penalty", "seed")
    return {k: v for k, v in limits.items() if k in keys}


async def _collect(items: AsyncIterator[tuple[str, float, Generated | None]]) -> Generated:
    async for _, _, done in items:
        if done is not None:
            return done
    raise AssertionError("a generator's stream always ends with its result")


def _reason(body: str) -> str:
    """The server's error message (OpenAI's {"error": {"message"}}, or the start of the body)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.strip()[:200] or "no reason given"
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"][:200]
    if isinstance(error, str):
        return error[:200]
    return body.strip()[:200]


def _shape_error(what: str) -> EndpointFailure:
    return EndpointFailure(f"malformed answer: {what}", retryable=False)


def _usage(data: dict[str, Any], progress: _Progress) -> None:
    usage = data.get("usage")
    if isinstance(usage, dict):
        if isinstance(usage.get("completion_tokens"), int):
            progress.completion_tokens = usage["completion_tokens"]
        if isinstance(usage.get("prompt_tokens"), int):
            progress.prompt_tokens = usage["prompt_tokens"]


def _logprobs(choice: dict[str, Any], api: str) -> list[float]:
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        return []
    if api == "chat":
        items = lp.get("content") or []
        return [float(i["logprob"]) for i in items if isinstance(i, dict) and isinstance(i.get("logprob"), int | float)]
    return [float(x) for x in lp.get("token_logprobs") or [] if isinstance(x, int | float)]


def _first_choice(data: Any) -> dict[str, Any] | None:
    if not isinstance(data, dict):
        raise _shape_error("not a JSON object")
    if "error" in data:
        raise EndpointFailure(f"the server reported an error: {_reason(json.dumps(data))}", retryable=False)
    choices = data.get("choices")
    if not isinstance(choices, list):
        raise _shape_error("no 'choices' list")
    if not choices:
        return None  # the usage chunk at the end of a stream
    if not isinstance(choices[0], dict):
        raise _shape_error("a choice is not an object")
    return choices[0]


def _read_chunk(data: Any, progress: _Progress, api: str) -> None:
    """One server-sent event of /chat/completions or /completions with ``stream: true``."""
    choice = _first_choice(data)
    _usage(data, progress)
    if choice is None:
        return
    if api == "chat":
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            raise _shape_error("a chunk's choice has no 'delta' object")
        piece = delta.get("content")
    else:
        piece = choice.get("text")
    if piece is not None and not isinstance(piece, str):
        raise _shape_error("the text of a chunk is not a string")
    if piece:
        progress.text += piece
        progress.deltas += 1
    progress.logprobs += _logprobs(choice, api)
    if choice.get("finish_reason"):
        progress.finish = str(choice["finish_reason"])


def _read_whole(data: Any, progress: _Progress, api: str) -> None:
    """A whole (non-streamed) answer."""
    choice = _first_choice(data)
    if choice is None:
        raise _shape_error("no choice in the answer")
    if api == "chat":
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else None
    else:
        text = choice.get("text")
    if not isinstance(text, str):
        raise _shape_error("the answer has no text")
    _usage(data, progress)
    progress.text = text
    progress.deltas = len(text.split())  # a stand-in when the server reports no usage
    progress.logprobs = _logprobs(choice, api)
    progress.finish = str(choice.get("finish_reason") or "stop")

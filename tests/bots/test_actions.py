"""rasa-sdk custom actions, unchanged: in process through rasa-sdk's ActionExecutor, and on a real
``python -m rasa_sdk`` action server on a local port (webhook protocol, 400/404/449/500, timeouts)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bots.botspec import load_bot
from bots.dialogue.actions import RemoteActions, load_actions
from bots.dialogue.engine import ACTION_ERROR_TEXT
from bots.dialogue.rasa_protocol import ActionFailed, ActionRejected, domain_json
from bots.dialogue.spec import ActionEndpoint, parse_dialogue
from bots.dialogue.state import State
from bots.errors import ConfigError
from bots.events import PAUSE, RESTART, SLOT, Event
from bots.runtime import Runtime
from tests.bots.keyword_model import DIALOGUE_BOT, copy_bot, message, say, start_runtime

EXTRA_ACTIONS = '''

import asyncio

from rasa_sdk.events import ActiveLoop, ConversationPaused, FollowupAction, Restarted
from rasa_sdk.interfaces import ActionExecutionRejection


class ActionRefuse(Action):
    def name(self) -> Text:
        return "action_refuse"

    def run(self, dispatcher, tracker, domain):
        raise ActionExecutionRejection(self.name(), "not in this state")


class ActionCrash(Action):
    def name(self) -> Text:
        return "action_crash"

    def run(self, dispatcher, tracker, domain):
        raise RuntimeError("the order database is down")


class ActionSlow(Action):
    def name(self) -> Text:
        return "action_slow"

    async def run(self, dispatcher, tracker, domain):
        await asyncio.sleep(10)
        return []


class ActionEscalate(Action):
    def name(self) -> Text:
        return "action_escalate"

    def run(self, dispatcher, tracker, domain):
        dispatcher.utter_message(text="A colleague will take over.")
        return [ConversationPaused()]


class ActionForget(Action):
    def name(self) -> Text:
        return "action_forget"

    def run(self, dispatcher, tracker, domain):
        dispatcher.utter_message(text="Starting over.")
        return [Restarted()]


class ActionChain(Action):
    def name(self) -> Text:
        return "action_chain"

    def run(self, dispatcher, tracker, domain):
        return [SlotSet("order_id", "55555"), FollowupAction("action_check_order_status")]


class ActionOpenForm(Action):
    def name(self) -> Text:
        return "action_open_form"

    def run(self, dispatcher, tracker, domain):
        return [SlotSet("order_id", "12345"), ActiveLoop("change_order_form")]
'''

EXTRA_INTENTS = "".join(
    f"  {name}:\n    examples: [{name} please]\n    response: ok\n"
    for name in ("refuse", "crash", "slow", "escalate", "forget", "chain", "open_form", "missing")
)
EXTRA_RULES = "".join(
    f"  - intent: {name}\n    action: action_{name}\n"
    for name in ("refuse", "crash", "slow", "escalate", "forget", "chain", "open_form")
)


def _actions_bot(tmp_path: Path, *, endpoint: str | None = None, missing_rule: bool = False) -> Path:
    bot_dir = copy_bot(tmp_path)
    (bot_dir / "actions.py").write_text((DIALOGUE_BOT / "actions.py").read_text() + EXTRA_ACTIONS)
    text = (bot_dir / "bot.yml").read_text()
    rules = EXTRA_RULES + ("  - intent: missing\n    action: action_missing\n" if missing_rule else "")
    text = text.replace("intents:\n", "intents:\n" + EXTRA_INTENTS, 1).replace("actions: actions\n", rules, 1)
    text = text.replace("stop_intents: [goodbye]", "stop_intents: [goodbye, forget]", 1)
    if endpoint:
        text += f"action_endpoint: {{url: '{endpoint}', timeout_s: 1.5}}\n"
    else:
        text += "actions: {module: actions, timeout_s: 1.5}\n"
    (bot_dir / "bot.yml").write_text(text)
    return bot_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(actions_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(actions_dir), "SANIC_WORKERS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rasa_sdk", "--actions", "actions", "--port", str(port)],
                            cwd=actions_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"the rasa-sdk action server did not start: {err[-2000:]}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its Sanic worker: a group we started
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    if proc.stderr:
        proc.stderr.close()


@pytest.fixture(scope="module")
def action_server(module_tmp: Callable[[str], Path]) -> Iterator[tuple[str, Path]]:
    folder = module_tmp("action_server")
    (folder / "actions.py").write_text((DIALOGUE_BOT / "actions.py").read_text() + EXTRA_ACTIONS)
    port = _free_port()
    proc = _start_server(folder, port)
    try:
        yield f"http://127.0.0.1:{port}/webhook", folder
    finally:
        _stop(proc)


@pytest.fixture(params=["in_process", "action_server"])
async def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Runtime]:
    endpoint = request.getfixturevalue("action_server")[0] if request.param == "action_server" else None
    bot_dir = _actions_bot(tmp_path, endpoint=endpoint)
    if endpoint:
        (bot_dir / "actions.py").unlink()  # the server's copy is the only one
    rt = await start_runtime(bot_dir, tmp_path / "store.db")
    yield rt
    await rt.aclose()


async def _state(runtime: Runtime, conversation: str = "c1") -> State:
    loaded = await runtime.store.load("shop", conversation)
    assert loaded is not None
    return State.from_events(loaded.events, sender_id=conversation)


async def test_action_sets_a_slot_and_its_response_is_sent(runtime: Runtime) -> None:
    assert await say(runtime, "where is my order 12345") == ["Order 12345 is shipped."]
    state = await _state(runtime)
    assert state.slots["order_status"] == "shipped" and state.slots["order_id"] == "12345"
    loaded = await runtime.store.load("shop", "c1")
    assert loaded is not None
    bot_events = [e for e in loaded.events if e.kind == "bot"]
    assert bot_events[-1].data["source"] == "action"
    assert bot_events[-1].data["metadata"]["action"] == "action_check_order_status"
    # The action reads the slot the conversation already has.
    assert await say(runtime, "track it again") == ["Order 12345 is shipped."]


async def test_validation_action_refuses_a_value(runtime: Runtime) -> None:
    await say(runtime, "change my order")
    assert await say(runtime, "99999") == ["Order 99999 was cancelled, so it can't be changed.",
                                           "Which order would you like to change? Please give me the order number."]


async def test_action_events_change_the_state(runtime: Runtime) -> None:
    # FollowupAction: the chained action runs with the slot the first one set.
    assert await say(runtime, "", payload="/chain") == ["Order 55555 is delivered."]
    # ActiveLoop: the form starts with the slot the action set and asks for its first missing slot.
    assert await say(runtime, "", payload="/open_form") == ["How many items of order 12345 should it be?"]
    assert (await _state(runtime)).active_form == "change_order_form"
    # Restarted (asked for while the form runs: a stop intent of the form): slots and form are gone.
    assert await say(runtime, "", payload="/forget") == ["Starting over."]
    state = await _state(runtime)
    assert state.slots == {} and state.active_form is None
    loaded = await runtime.store.load("shop", "c1")
    assert loaded is not None and any(e.kind == RESTART for e in loaded.events)
    # ConversationPaused: the conversation is handed off and the bot stays silent.
    assert await say(runtime, "", payload="/escalate") == ["A colleague will take over."]
    summary = await runtime.store.summary("shop", "c1")
    assert summary is not None and summary.handoff
    assert await say(runtime, "hello?") == []


async def test_rejected_crashed_and_slow_actions(runtime: Runtime) -> None:
    # 400 / ActionExecutionRejection: as if the message was not understood.
    responses = await runtime.handle(message("", payload="/refuse"))
    assert responses[0].source == "fallback"
    # 500 / an exception in the action: an apology, the turn is still answered and stored.
    assert await say(runtime, "", payload="/crash") == [ACTION_ERROR_TEXT]
    # A slow action is cut off after the configured timeout.
    started = time.monotonic()
    assert await say(runtime, "", payload="/slow") == [ACTION_ERROR_TEXT]
    assert time.monotonic() - started < 6
    errors = runtime.metrics.registry.get_sample_value(
        "switchboard_errors_total", {"bot": "shop", "channel": "web", "stage": "action"})
    assert errors == 2


async def test_remote_protocol_statuses(action_server: tuple[str, Path], tmp_path: Path) -> None:
    url, _ = action_server
    bot = load_bot(_actions_bot(tmp_path, endpoint=url, missing_rule=True))
    dialogue = parse_dialogue(bot)
    remote = RemoteActions(ActionEndpoint(url, timeout_s=1.5), domain_json(bot, dialogue))
    tracker = {"sender_id": "c9", "slots": {"order_id": "12345"}, "latest_message": {}, "events": [],
               "paused": False, "followup_action": None, "active_loop": {}, "latest_action_name": None}
    try:
        outcome = await remote.run("action_check_order_status", tracker)
        assert outcome.responses[0]["text"] == "Order 12345 is shipped."
        assert outcome.events == [{"event": "slot", "timestamp": None, "name": "order_status", "value": "shipped"}]
        with pytest.raises(ActionFailed, match="no such action"):
            await remote.run("action_missing", tracker)  # 404
        with pytest.raises(ActionRejected, match="not in this state"):
            await remote.run("action_refuse", tracker)  # 400
        with pytest.raises(ActionFailed, match="HTTP 500"):
            await remote.run("action_crash", tracker)
        with pytest.raises(ActionFailed, match=r"did not answer within 1\.5s"):
            await remote.run("action_slow", tracker)
    finally:
        await remote.aclose()
    dead = RemoteActions(ActionEndpoint(f"http://127.0.0.1:{_free_port()}/webhook", 1.0), {})
    with pytest.raises(ActionFailed, match="unreachable"):
        await dead.run("action_check_order_status", tracker)
    await dead.aclose()


async def test_restarted_action_server_gets_the_domain_again(tmp_path: Path) -> None:
    """449: a restarted server has forgotten the domain; it is sent again (as Rasa does)."""
    folder = tmp_path / "server"
    folder.mkdir()
    (folder / "actions.py").write_text((DIALOGUE_BOT / "actions.py").read_text())
    port = _free_port()
    bot = load_bot(copy_bot(tmp_path))
    statuses: list[int] = []

    async def record(response: httpx.Response) -> None:
        statuses.append(response.status_code)

    client = httpx.AsyncClient(event_hooks={"response": [record]})
    remote = RemoteActions(ActionEndpoint(f"http://127.0.0.1:{port}/webhook", 5.0),
                           domain_json(bot, parse_dialogue(bot), ["validate_change_order_form"]), client=client)
    tracker = {"sender_id": "c9", "slots": {"order_id": "99999", "requested_slot": "order_id"},
               "latest_message": {}, "paused": False, "active_loop": {"name": "change_order_form"},
               "events": [{"event": "slot", "name": "order_id", "value": "99999", "timestamp": None}]}
    try:
        for _ in range(2):
            proc = _start_server(folder, port)
            try:
                # The validation action reads the form's slots from the domain: it only works with it.
                for _ in range(2):
                    outcome = await remote.run("validate_change_order_form", tracker)
                    assert {"event": "slot", "timestamp": None, "name": "order_id", "value": None} in outcome.events
            finally:
                _stop(proc)
    finally:
        await remote.aclose()
    # The domain goes with the first call only; the restarted server asks for it (449) and gets it.
    assert statuses == [200, 200, 449, 200, 200]


def test_unknown_action_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    bot_dir = _actions_bot(tmp_path, missing_rule=True)
    bot = load_bot(bot_dir)
    with pytest.raises(ConfigError) as err:
        load_actions(bot, parse_dialogue(bot))
    line = next(i for i, text in enumerate((bot_dir / "bot.yml").read_text().splitlines(), 1)
                if "action: action_missing" in text)
    assert f"bot.yml:{line}: unknown action 'action_missing'" in str(err.value)
    assert "action_check_order_status" in str(err.value)


def test_broken_actions_module_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    bot_dir = copy_bot(tmp_path)
    (bot_dir / "actions.py").write_text("from rasa_sdk import Action\n\nimport no_such_module_here\n")
    bot = load_bot(bot_dir)
    with pytest.raises(ConfigError, match=r"actions.py:3: importing the actions module failed: "
                                          r"ModuleNotFoundError"):
        load_actions(bot, parse_dialogue(bot))


def test_state_events_from_actions_are_stored_as_switchboard_events() -> None:
    # A SlotSet stored by an action is an ordinary slot event: rebuilt state needs nothing from rasa-sdk.
    state = State.from_events([Event(SLOT, {"name": "order_status", "value": "shipped"}), Event(PAUSE, {})])
    assert state.slots == {"order_status": "shipped"} and state.paused

"""The sentiment scorer's signals, the frustrated rule, bot.yml ``frustration:`` and when it hands off
(bots/nlu/sentiment.py)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bots.botspec import load_bot
from bots.dialogue.state import State
from bots.errors import ConfigError
from bots.events import ACTION, AGENT, BOT, FORM, NLU, PAUSE, RESTART, RESUME, SESSION_START, USER, Event
from bots.nlu.sentiment import (
    DEFAULT_HANDOFF_MESSAGE,
    MAX_CHARS,
    Frustration,
    Mood,
    SentimentScorer,
    customer_texts,
    frustrated_since_handoff,
    repeated_answer,
)
from tests.bots.keyword_model import DIALOGUE_BOT

scorer = SentimentScorer()


@pytest.mark.parametrize(("text", "signals", "frustrated"), [
    ("I was charged twice and I am furious", ("negative",), True),
    ("where is my order", (), False),
    ("I want to cancel my order 123", (), False),  # "cancel" is slightly negative, not frustration
    ("WHERE IS MY ORDER", ("shouting",), True),
    ("THANK YOU SO MUCH!!", ("shouting", "exclamations"), False),  # loud but happy
    ("where is it?!", ("exclamations",), True),
    ("this f***ing app", ("profanity",), True),
    ("where is the damn invoice", ("profanity",), True),
    ("what the hell is going on", ("negative", "profanity"), True),
    ("OK", (), False),  # too few letters to shout
    ("thanks, great help", (), False),
])
def test_signals_of_one_message(text: str, signals: tuple[str, ...], frustrated: bool) -> None:
    mood = scorer.score(text)
    assert mood.signals == signals
    assert mood.frustrated is frustrated
    assert -1.0 <= mood.score <= 1.0


def test_scores_order_from_negative_to_positive() -> None:
    assert scorer.score("this is awful, I hate it").score < scorer.score("where is my order").score \
        < scorer.score("thank you, that was great").score


def test_a_repeated_question_is_the_same_or_nearly_the_same_words() -> None:
    earlier = ["hi", "I want to change the address of my order 123"]
    assert "repeated_question" in scorer.score("i want to change the address of my order 123!", earlier).signals
    assert "repeated_question" in scorer.score("I want to change the address of order 123", earlier).signals
    assert "repeated_question" not in scorer.score("what is the delivery time for order 123", earlier).signals
    # short answers repeat all the time: "yes", "no", an order number
    assert scorer.score("yes", ["yes", "yes"]).signals == ()
    # only the last five messages count
    assert "repeated_question" not in scorer.score(earlier[1], [earlier[1], "a b c", "d e f", "g h i", "j k l",
                                                                "m n o"]).signals
    assert scorer.score("I want to change the address of my order 123", earlier).frustrated


def test_repeated_fallback_is_a_strong_signal_even_when_polite() -> None:
    mood = scorer.score("could you please help me with my parcel").with_signal("repeated_fallback")
    assert mood.signals == ("repeated_fallback",) and mood.frustrated
    assert mood.with_signal("repeated_fallback") is mood


def test_only_the_first_characters_are_scored() -> None:
    calm = "I would like to know where my parcel is. " * 20
    assert len(calm) > MAX_CHARS
    assert scorer.score(calm + "I am furious, this is awful and terrible").signals == ()


def test_a_mood_round_trips_through_its_event() -> None:
    mood = Mood(-0.7, ("negative", "profanity"))
    event = mood.event(12.0)
    assert event.data == {"score": -0.7, "signals": ["negative", "profanity"], "frustrated": True}
    assert Mood.of_event(Event.from_dict(event.to_dict())) == mood
    assert Mood.of_event(Event(NLU, {"score": 1})) is None
    assert Mood.of_event(Event("sentiment", {"score": "bad"})) is None


def test_customer_texts_leave_out_buttons_and_reminders() -> None:
    history = [Event(USER, {"text": "hello"}), Event(BOT, {"text": "hi!"}),
               Event(USER, {"text": "Track", "payload": "/track_order"}),
               Event(USER, {"text": "", "reminder": {"name": "r"}}), Event(USER, {"text": "where is it"})]
    assert customer_texts(history) == ["hello", "where is it"]


def test_a_states_rolled_up_customer_texts_are_those_of_its_history() -> None:
    """``State.customer_texts`` (kept as events are applied, never walking the window) says what
    ``customer_texts(state.history)`` says, as the window slides past 200 events, sessions start and restart, and
    a working copy goes on apart from the state it was copied from (a text that left the history, or one the copy
    added, would be stale)."""
    rng = random.Random(17)
    kinds = [USER, USER, BOT, NLU, ACTION]
    state, copies, full = State(), [], 0
    for i in range(3000):
        kind = rng.choice(kinds) if rng.random() < 0.997 else rng.choice([SESSION_START, RESTART])
        if kind == USER:
            data = rng.choice([{"text": f"question {i}"}, {"text": f"click {i}", "payload": "/greet"},
                               {"text": "", "reminder": {"name": "r"}}, {"text": f"again {i}"}])
        else:
            data = {"text": f"answer {i}"} if kind == BOT else {}
        state.apply(Event(kind, data, float(i)))
        assert state.customer_texts() == customer_texts(state.history)[-20:], i
        if i % 97 == 0:
            copies.append((state.copy(), list(state.history)))
        for copy, history in copies[-3:]:  # the copies never see the state's later events
            assert copy.customer_texts() == customer_texts(history)[-20:]
        full += len(state.history) == 200
    assert full > 1000  # the window slid past the texts most of the time


def _frustrated() -> Event:
    return Mood(-0.8, ("negative",)).event(1.0)


def test_frustrated_turns_are_counted_since_the_bot_last_got_the_conversation() -> None:
    assert frustrated_since_handoff([_frustrated(), Mood(0.2).event(1.0), _frustrated()]) == 2
    assert frustrated_since_handoff([_frustrated(), Event(PAUSE, {}), _frustrated()]) == 1
    assert frustrated_since_handoff([_frustrated(), Event(RESUME, {}), _frustrated(), Event(AGENT, {})]) == 0


def test_handoff_after_n_frustrated_turns_replaces_the_fallback_and_ends_the_form() -> None:
    policy = Frustration(handoff_after=2, message="A colleague will help you now.")
    angry = Mood(-0.8, ("negative",))
    fallback = [Event(BOT, {"text": "Sorry, I didn't understand that.", "source": "fallback"})]
    answered = [Event(BOT, {"text": "Your order ships tomorrow.", "source": "template"})]
    assert policy.handoff(angry, [], answered, paused=False, active_form=None, timestamp=5.0) is None  # the 1st
    # ... unless the bot did not understand it: an angry customer is never asked "did you mean"
    first = policy.handoff(angry, [], fallback, paused=False, active_form=None, timestamp=5.0)
    assert first is not None and [e.kind for e in first] == [BOT, PAUSE]
    assert first[0].data["text"] == "A colleague will help you now."
    history = [_frustrated()]
    assert policy.handoff(Mood(0.3), history, fallback, paused=False, active_form=None, timestamp=5.0) is None
    assert policy.handoff(angry, history, fallback, paused=True, active_form=None, timestamp=5.0) is None
    events = policy.handoff(angry, history, fallback, paused=False, active_form="change_order_form", timestamp=5.0)
    assert events is not None
    assert [(e.kind, e.data.get("text") or e.data.get("reason") or e.data.get("name")) for e in events] == [
        (BOT, "A colleague will help you now."), (FORM, None), (PAUSE, "frustration")]
    events = policy.handoff(angry, history, answered, paused=False, active_form=None, timestamp=5.0)
    assert events is not None and [e.kind for e in events] == [BOT, BOT, PAUSE]
    # the question of a form the hand-off ends is not asked ("Which order?" then "a colleague will help you")
    refused = Event(BOT, {"text": "I couldn't find order 9.", "source": "action"})
    ask = Event(BOT, {"text": "Which order?", "source": "template", "metadata": {"form": "refund_form", "slot": "x"}})
    started = [Event(FORM, {"name": "refund_form", "requested_slot": None}), refused, ask]
    events = policy.handoff(angry, history, started, paused=False, active_form=None, timestamp=5.0)
    assert events is not None
    assert [(e.kind, e.data.get("text") or e.data.get("reason") or e.data.get("name")) for e in events] == [
        (FORM, "refund_form"), (BOT, "I couldn't find order 9."), (BOT, "A colleague will help you now."),
        (FORM, None), (PAUSE, "frustration")]
    assert Frustration().handoff(angry, history * 5, fallback, paused=False, active_form=None, timestamp=5.0) is None


PASSWORD = ("Choose Forgot password on the sign-in page and enter your email address; we'll send you a link to set "
            "a new password.")


def _turn(text: str, *answers: Event) -> list[Event]:
    return [Event(USER, {"text": text}), Event(NLU, {"intent": "x"}), *answers]


def _said(text: str, source: str = "retrieval", **metadata: str) -> Event:
    return Event(BOT, {"text": text, "source": source, **({"metadata": metadata} if metadata else {})})


def test_the_same_answer_to_a_rephrased_question_is_the_repeated_answer_signal() -> None:
    history = _turn("I forgot my password", _said(PASSWORD))
    assert repeated_answer(history, [_said(PASSWORD)])  # "I don't get the reset email": the same instructions
    assert repeated_answer(history, [_said(PASSWORD, "template")])  # a long template counts too
    assert not repeated_answer(history, [_said("Order 12345 is shipped. You can follow it under My orders.")])
    assert not repeated_answer([], [_said(PASSWORD)])
    # a short small-talk reply said twice is not ("thanks" after "thanks"), nor a form's question asked again
    welcome = "You're welcome! Is there anything else I can help you with?"
    assert not repeated_answer(_turn("thanks", _said(welcome, "template")), [_said(welcome, "template")])
    ask = _said(PASSWORD, "template", form="change_order_form")
    assert not repeated_answer(_turn("change my order", ask), [ask])
    # only the customer's last five turns, and only since a person last had the conversation
    later = history + [e for i in range(5) for e in _turn(f"question {i}", _said(f"answer {i}"))]
    assert not repeated_answer(later, [_said(PASSWORD)])
    assert repeated_answer(later[:-3], [_said(PASSWORD)])
    assert not repeated_answer([*history, Event(AGENT, {"text": "hi, Ann here"})], [_said(PASSWORD)])


def test_a_repeated_out_of_scope_answer_or_queue_notice_is_no_repeated_answer() -> None:
    """QA (issue 14): three polite off-topic questions got the one out-of-scope answer and were handed to a person
    as frustrated; a waiting customer's every message counted as frustrated (the queue notice again)."""
    sorry = ("Sorry, I can't help with that: I'm the shop's assistant for orders, delivery, returns, payments and "
             "your account. Could you tell me what you need about those, or shall I connect you with a person?")
    history = _turn("what's the weather in paris?", _said(sorry, "template"))
    assert repeated_answer(history, [_said(sorry, "template")])  # the text alone repeats
    assert not repeated_answer(history, [_said(sorry, "template")], "out_of_scope")
    assert repeated_answer(history, [_said(sorry, "template")], "check_refund_policy")
    place = ("Thanks for waiting: you're number 3 in the queue for the next available agent. Please stay in this "
             "chat, or say 'stop' if you no longer need an agent.")
    waiting = _turn("hello?", _said(place, "template", handoff="waiting"))
    assert not repeated_answer(waiting, [_said(place, "template", handoff="waiting")], "greet")


def test_capitals_after_capitals_are_the_customers_way_of_writing_not_shouting() -> None:
    """QA (issue 14): "ORDER 12345 WHERE IS IT" then "WHEN WILL IT ARRIVE", both answered, was handed off."""
    assert scorer.score("ORDER 12345 WHERE IS IT").signals == ("shouting",)
    assert scorer.score("WHEN WILL IT ARRIVE", ["ORDER 12345 WHERE IS IT"]).signals == ()
    assert scorer.score("WHEN WILL IT ARRIVE", ["OK"]).signals == ()  # short, but in capitals too
    assert scorer.score("WHEN WILL IT ARRIVE", ["where is order 12345"]).signals == ("shouting",)
    # what the words say still counts
    assert scorer.score("WHERE IS IT!! THIS IS A DAMN JOKE", ["ORDER 12345 WHERE IS IT"]).frustrated


def test_a_repeated_answer_makes_the_message_frustrated() -> None:
    assert Mood(0.1, ("repeated_answer",)).frustrated


def test_the_offer_follows_the_answer_at_the_first_frustrated_message_only() -> None:
    policy = Frustration(handoff_after=3, offer="If this doesn't help, say 'talk to a person'.")
    angry = Mood(-0.8, ("negative",))
    answered = [_said("Your order ships tomorrow.", "template")]
    events = policy.offered(angry, [], answered, paused=False, active_form=None, timestamp=5.0)
    assert events is not None and [e.data["text"] for e in events] == [
        "Your order ships tomorrow.", "If this doesn't help, say 'talk to a person'."]
    assert events[1].data["source"] == "system" and events[1].data["metadata"] == {"frustration": "offer"}
    assert policy.offered(Mood(0.3), [], answered, paused=False, active_form=None, timestamp=5.0) is None
    assert policy.offered(angry, [_frustrated()], answered, paused=False, active_form=None, timestamp=5.0) is None
    assert policy.offered(angry, [], answered, paused=True, active_form=None, timestamp=5.0) is None
    # never after a form's question: the question is what the customer answers next
    assert policy.offered(angry, [], answered, paused=False, active_form="refund_form", timestamp=5.0) is None
    ended = [*answered, Event(FORM, {"name": None})]
    assert policy.offered(angry, [], ended, paused=False, active_form="refund_form", timestamp=5.0) is not None
    gave_up = [_said("Sorry, I still can't use that. You can start again, or talk to a person.", "template",
                     form="refund_form", gave_up="true"), Event(FORM, {"name": None})]
    assert policy.offered(angry, [], gave_up, paused=False, active_form="refund_form", timestamp=5.0) is None
    assert Frustration(handoff_after=3).offered(angry, [], answered, paused=False, active_form=None,
                                                timestamp=5.0) is None


def _bot_with(tmp_path: Path, section: str) -> Path:
    text = (DIALOGUE_BOT / "bot.yml").read_text(encoding="utf-8")
    (tmp_path / "bot.yml").write_text(text + "\n" + section, encoding="utf-8")
    return tmp_path


def test_bot_yml_frustration_section(tmp_path: Path) -> None:
    spec = load_bot(_bot_with(tmp_path, "frustration:\n  handoff_after: 3\n"))
    assert Frustration.parse(spec.sections["frustration"], []) == Frustration(3, DEFAULT_HANDOFF_MESSAGE)
    spec = load_bot(_bot_with(tmp_path, "frustration:\n  offer: Say 'talk to a person' if this doesn't help.\n"))
    assert Frustration.parse(spec.sections["frustration"], []) == Frustration(
        None, DEFAULT_HANDOFF_MESSAGE, "Say 'talk to a person' if this doesn't help.")


@pytest.mark.parametrize(("section", "problem"), [
    ("frustration: 2\n", "'frustration' must map handoff_after"),
    ("frustration:\n  handoff_after: 0\n", "'handoff_after' must be a whole number of frustrated turns from 1 to 100"),
    ("frustration:\n  handoff_after: two\n", "'handoff_after' must be a whole number"),
    ("frustration:\n  handoff_after: true\n", "'handoff_after' must be a whole number"),
    ("frustration:\n  message: hello\n", "'handoff_after' is missing"),
    ("frustration:\n  handoff_after: 2\n  message: ''\n", "'message' must be text of 1 to 1000 characters"),
    ("frustration:\n  handoff_after: 2\n  after: 3\n", "unknown key 'after'"),
    ("frustration:\n  handoff_after: 2\n  offer: [a]\n", "'offer' must be text of 1 to 1000 characters"),
])
def test_bot_yml_frustration_errors_name_the_line(tmp_path: Path, section: str, problem: str) -> None:
    lines = (DIALOGUE_BOT / "bot.yml").read_text(encoding="utf-8").count("\n") + 2
    with pytest.raises(ConfigError) as err:
        load_bot(_bot_with(tmp_path, section))
    found = [p for p in err.value.problems if problem in p]
    assert found, err.value.problems
    line = int(found[0].split(":")[1])
    assert found[0].startswith(f"{tmp_path / 'bot.yml'}:") and lines <= line <= lines + 2

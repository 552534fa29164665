"""Duckling-compatible entities (bots/nlu/extractors.py): names, spans and value shapes per dimension, the
cases that must NOT produce an entity, and the HTTP variant against a fake Duckling server on 127.0.0.1.

The reference time is fixed: Tuesday 2026-12-01 10:30 UTC.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bots.nlu.extractors import (
    DIMENSIONS,
    EXTRACTOR,
    DucklingHTTPExtractor,
    LocalDucklingExtractor,
    extract,
    extractor_for,
    parse_duckling,
)
from bots.types import Entity
from tests.fixtures.fake_duckling import FakeDuckling
from tests.fixtures.fake_duckling import duckling as duckling  # the fixture

REF = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)


def found(text: str, **kw: Any) -> list[tuple[str, str, Any]]:
    """(dimension, the text it covers, Rasa's value) per entity."""
    kw.setdefault("reference_time", REF)
    return [(e.entity, text[e.start:e.end], e.rasa_value) for e in extract(text, **kw)]


def only(text: str, dim: str, **kw: Any) -> Entity:
    kw.setdefault("reference_time", REF)
    got = [e for e in extract(text, **kw) if e.entity == dim]
    assert len(got) == 1, (text, got)
    return got[0]


def dims_of(text: str, **kw: Any) -> set[str]:
    kw.setdefault("reference_time", REF)
    return {e.entity for e in extract(text, **kw)}


# -- the entity contract ---------------------------------------------------------------------------------

def test_every_entity_has_rasas_duckling_fields_and_true_offsets() -> None:
    text = "Send $20 to bob@example.com tomorrow at 8pm, call (650) 253-0000, see www.example.com, in 3 days, 2nd"
    entities = extract(text, reference_time=REF)
    assert {e.entity for e in entities} == {"amount-of-money", "email", "time", "phone-number", "url", "ordinal"}
    for e in entities:
        assert e.extractor == EXTRACTOR == "DucklingEntityExtractor"
        assert e.confidence == 1.0
        assert 0 <= e.start < e.end <= len(text)
        assert isinstance(e.value, str) and e.additional_info is not None
        assert Entity.from_dict(json.loads(json.dumps(e.to_dict()))) == e
    assert [e.start for e in entities] == sorted(e.start for e in entities)


def test_entity_additions_keep_the_stored_shape_of_model_entities() -> None:
    plain = Entity("order_id", "4242", 18, 22)
    assert plain.to_dict() == {"entity": "order_id", "value": "4242", "start": 18, "end": 22, "confidence": 1.0}
    assert Entity.from_dict({"entity": "order_id", "value": 4242, "start": 18, "end": 22}) == plain
    assert plain.rasa_value == "4242"
    with_role = Entity.from_dict({"entity": "city", "value": "Paris", "start": 0, "end": 5, "role": "destination",
                                  "group": "1"})
    assert (with_role.role, with_role.group) == ("destination", "1")
    assert with_role.to_dict()["role"] == "destination"


def test_rasa_value_is_the_number_the_iso_string_or_from_to() -> None:
    money = only("that is $20", "amount-of-money")
    assert (money.value, money.rasa_value) == ("20", 20)
    assert money.additional_info == {"value": 20, "type": "value", "unit": "USD"}
    tomorrow = only("tomorrow", "time")
    assert tomorrow.rasa_value == tomorrow.value == "2026-12-02T00:00:00.000+00:00"
    span = only("from monday to friday", "time")
    assert span.rasa_value == {"from": "2026-12-07T00:00:00.000+00:00", "to": "2026-12-12T00:00:00.000+00:00"}
    assert span.value == "2026-12-07T00:00:00.000+00:00/2026-12-12T00:00:00.000+00:00"


# -- number --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "span", "value"), [
    ("order 12345", "12345", 12345),
    ("I want twenty one of them", "twenty one", 21),
    ("twenty-one", "twenty-one", 21),
    ("one hundred and five people", "one hundred and five", 105),
    ("in the year two thousand and twenty", "two thousand and twenty", 2020),
    ("a hundred times", "a hundred", 100),
    ("pay 1,200 now", "1,200", 1200),
    ("it is 3.5 wide", "3.5", 3.5),
    ("about -4 outside", "-4", -4),
    ("5k followers", "5k", 5000),
    ("2 million users", "2 million", 2_000_000),
    ("purchase 113542617735902?", "113542617735902", 113542617735902),
    ("order #12345", "12345", 12345),
])
def test_numbers(text: str, span: str, value: float) -> None:
    e = only(text, "number")
    assert text[e.start:e.end] == span
    assert e.rasa_value == value and type(e.rasa_value) is type(value)
    assert e.additional_info == {"value": value, "type": "value"}


def test_integral_numbers_are_ints_and_words_separate_when_they_do_not_form_one_number() -> None:
    assert found("one two", dimensions=["number"]) == [("number", "one", 1), ("number", "two", 2)]
    assert found("three and four", dimensions=["number"]) == [("number", "three", 3), ("number", "four", 4)]


@pytest.mark.parametrize("text", ["ticket A1234", "version v2", "nothing here", "someone", "often", "tone"])
def test_no_number(text: str) -> None:
    assert "number" not in dims_of(text)


# -- ordinal -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "span", "value"), [
    ("the 3rd one", "3rd", 3),
    ("my 21st birthday", "21st", 21),
    ("the first item", "first", 1),
    ("the second one", "second", 2),
    ("twenty-first", "twenty-first", 21),
    ("the twenty third time", "twenty third", 23),
])
def test_ordinals(text: str, span: str, value: int) -> None:
    e = only(text, "ordinal")
    assert (text[e.start:e.end], e.rasa_value) == (span, value)


@pytest.mark.parametrize("text", ["wait a second", "5 seconds", "one second please", "firstly"])
def test_no_ordinal(text: str) -> None:
    assert "ordinal" not in dims_of(text)


# -- amount-of-money -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "span", "value", "unit"), [
    ("it costs $20", "$20", 20, "USD"),
    ("send 20 dollars", "20 dollars", 20, "USD"),
    ("twenty dollars", "twenty dollars", 20, "USD"),
    ("refund $1,200.50 please", "$1,200.50", 1200.5, "USD"),
    ("it was €15", "€15", 15, "EUR"),
    ("30 EUR", "30 EUR", 30, "EUR"),
    ("£3.50 only", "£3.50", 3.5, "GBP"),
    ("10 pounds", "10 pounds", 10, "GBP"),
    ("5k usd", "5k usd", 5000, "USD"),
    ("USD 40", "USD 40", 40, "USD"),
    ("a hundred bucks", "a hundred bucks", 100, "USD"),
    ("50 cents", "50 cents", 50, "cent"),
    ("20USD", "20USD", 20, "USD"),
])
def test_money(text: str, span: str, value: float, unit: str) -> None:
    e = only(text, "amount-of-money")
    assert text[e.start:e.end] == span
    assert e.additional_info == {"value": value, "type": "value", "unit": unit}
    assert e.rasa_value == value


def test_the_dollar_follows_the_locales_region() -> None:
    assert only("$20", "amount-of-money", locale="en_AU").additional_info["unit"] == "AUD"  # type: ignore[index]
    assert only("$20", "amount-of-money", locale="en_CA").additional_info["unit"] == "CAD"  # type: ignore[index]
    assert only("$20", "amount-of-money", locale="en").additional_info["unit"] == "USD"  # type: ignore[index]


def test_money_covers_its_number_unless_only_numbers_are_asked_for() -> None:
    assert found("it costs $20") == [("amount-of-money", "$20", 20)]
    assert found("it costs $20", dimensions=["number"]) == [("number", "20", 20)]


@pytest.mark.parametrize("text", ["I have 20 items", "3 kids", "room 101", "dollars and sense", "order 12345"])
def test_no_money(text: str) -> None:
    assert "amount-of-money" not in dims_of(text)


# -- duration ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "span", "value", "unit", "seconds"), [
    ("I'm 5 minutes late", "5 minutes", 5, "minute", 300),
    ("it took 3 days", "3 days", 3, "day", 259200),
    ("for 2 weeks", "2 weeks", 2, "week", 1209600),
    ("it lasted an hour", "an hour", 1, "hour", 3600),
    ("half an hour", "half an hour", 30, "minute", 1800),
    ("1.5 hours", "1.5 hours", 90, "minute", 5400),
    ("1 hour 30 minutes", "1 hour 30 minutes", 90, "minute", 5400),
    ("2 hours and 15 minutes", "2 hours and 15 minutes", 135, "minute", 8100),
    ("ten seconds", "ten seconds", 10, "second", 10),
    ("a 30-minute call", "30-minute", 30, "minute", 1800),
    ("3 months", "3 months", 3, "month", 7776000),
    ("2 years", "2 years", 2, "year", 63072000),
])
def test_durations(text: str, span: str, value: int, unit: str, seconds: int) -> None:
    e = only(text, "duration")
    assert text[e.start:e.end] == span
    assert e.additional_info == {"value": value, unit: value, "type": "value", "unit": unit,
                                 "normalized": {"value": seconds, "unit": "second"}}
    assert e.rasa_value == value


def test_a_bare_duration_is_not_a_time_and_a_relative_one_is_not_a_duration() -> None:
    assert dims_of("I'm 5 minutes late") == {"duration"}
    assert dims_of("see you in 3 days") == {"time"}
    assert dims_of("it happened 2 weeks ago") == {"time"}
    assert dims_of("see you in 3 days", dimensions=["duration"]) == {"duration"}


# -- time ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "span", "value", "grain"), [
    ("tomorrow", "tomorrow", "2026-12-02T00:00:00.000+00:00", "day"),
    ("today", "today", "2026-12-01T00:00:00.000+00:00", "day"),
    ("yesterday please", "yesterday", "2026-11-30T00:00:00.000+00:00", "day"),
    ("I want to fly on December 3rd", "on December 3rd", "2026-12-03T00:00:00.000+00:00", "day"),
    ("the 5th of December", "the 5th of December", "2026-12-05T00:00:00.000+00:00", "day"),
    ("can we do it on the 5th", "on the 5th", "2026-12-05T00:00:00.000+00:00", "day"),
    ("on 12/03/2026", "on 12/03/2026", "2026-12-03T00:00:00.000+00:00", "day"),
    ("book a table tomorrow at 8pm", "tomorrow at 8pm", "2026-12-02T20:00:00.000+00:00", "hour"),
    ("at 3pm", "at 3pm", "2026-12-01T15:00:00.000+00:00", "hour"),
    ("tomorrow at 8:45pm", "tomorrow at 8:45pm", "2026-12-02T20:45:00.000+00:00", "minute"),
    ("meet me 2026-12-24 at 18:30 in Berlin", "2026-12-24 at 18:30", "2026-12-24T18:30:00.000+00:00", "minute"),
    ("see you next monday", "next monday", "2026-12-07T00:00:00.000+00:00", "day"),
    ("next week", "next week", "2026-12-07T00:00:00.000+00:00", "week"),
    ("next month", "next month", "2027-01-01T00:00:00.000+00:00", "month"),
    ("last year", "last year", "2025-01-01T00:00:00.000+00:00", "year"),
    ("in 2027", "in 2027", "2027-01-01T00:00:00.000+00:00", "year"),
    ("the refund from last month", "last month", "2026-11-01T00:00:00.000+00:00", "month"),
    ("do it now", "now", "2026-12-01T10:30:00.000+00:00", "second"),
    # shifts by a duration round to the grain below it, as Duckling's do
    ("see you in 3 days", "in 3 days", "2026-12-04T10:00:00.000+00:00", "hour"),
    ("3 days from now", "3 days from now", "2026-12-04T10:00:00.000+00:00", "hour"),
    ("in 5 minutes", "in 5 minutes", "2026-12-01T10:35:00.000+00:00", "second"),
    ("in half an hour", "in half an hour", "2026-12-01T11:00:00.000+00:00", "second"),
    ("in twenty minutes", "in twenty minutes", "2026-12-01T10:50:00.000+00:00", "second"),
    ("it was 2 weeks ago", "2 weeks ago", "2026-11-17T00:00:00.000+00:00", "day"),
    ("in 2 months", "in 2 months", "2027-02-01T00:00:00.000+00:00", "day"),
])
def test_times(text: str, span: str, value: str, grain: str) -> None:
    e = only(text, "time")
    assert text[e.start:e.end] == span
    assert e.value == value
    assert e.additional_info == {"values": [{"value": value, "grain": grain, "type": "value"}], "value": value,
                                 "grain": grain, "type": "value"}


@pytest.mark.parametrize(("text", "span", "start", "end", "grain"), [
    ("from monday to friday", "from monday to friday",
     "2026-12-07T00:00:00.000+00:00", "2026-12-12T00:00:00.000+00:00", "day"),
    ("between 3pm and 5pm please", "between 3pm and 5pm",
     "2026-12-01T15:00:00.000+00:00", "2026-12-01T18:00:00.000+00:00", "hour"),
    ("from Dec 3 to Dec 5", "from Dec 3 to Dec 5",
     "2026-12-03T00:00:00.000+00:00", "2026-12-06T00:00:00.000+00:00", "day"),
    ("tonight", "tonight", "2026-12-01T18:00:00.000+00:00", "2026-12-02T00:00:00.000+00:00", "hour"),
    ("tomorrow morning", "tomorrow morning", "2026-12-02T04:00:00.000+00:00", "2026-12-02T12:00:00.000+00:00",
     "hour"),
])
def test_intervals_end_exclusive_like_duckling(text: str, span: str, start: str, end: str, grain: str) -> None:
    e = only(text, "time")
    assert text[e.start:e.end] == span
    info = e.additional_info
    assert info is not None and info["type"] == "interval"
    assert info["from"] == {"value": start, "grain": grain} and info["to"] == {"value": end, "grain": grain}
    assert info["values"] == [{"type": "interval", "from": info["from"], "to": info["to"]}]


def test_open_intervals() -> None:
    after = only("any time after 5pm", "time")
    assert after.additional_info == {
        "values": [{"type": "interval", "from": {"value": "2026-12-01T17:00:00.000+00:00", "grain": "hour"}}],
        "type": "interval", "from": {"value": "2026-12-01T17:00:00.000+00:00", "grain": "hour"}}
    assert after.rasa_value == {"from": "2026-12-01T17:00:00.000+00:00", "to": None}
    before = only("before friday", "time")
    assert before.rasa_value == {"from": None, "to": "2026-12-04T00:00:00.000+00:00"}
    assert before.value == "../2026-12-04T00:00:00.000+00:00"
    within = only("deliver within 2 weeks", "time")
    assert within.rasa_value == {"from": "2026-12-01T10:30:00.000+00:00", "to": "2026-12-15T10:30:00.000+00:00"}


def test_timezone_and_reference_time() -> None:
    late_evening_in_new_york = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)  # 22:00 on Dec 1 in New York
    ny = only("tomorrow at 9am", "time", timezone="America/New_York", reference_time=late_evening_in_new_york)
    assert ny.value == "2026-12-02T09:00:00.000-05:00"
    utc = only("tomorrow at 9am", "time", reference_time=late_evening_in_new_york)
    assert utc.value == "2026-12-03T09:00:00.000+00:00"
    summer = only("on July 4th 2026", "time", timezone="Europe/Berlin")
    assert summer.value == "2026-07-04T00:00:00.000+02:00"
    naive = only("tomorrow", "time", timezone="Asia/Tokyo", reference_time=datetime(2026, 12, 1, 23, 0))
    assert naive.value == "2026-12-02T00:00:00.000+09:00"
    epoch = only("tomorrow", "time", reference_time=REF.timestamp())
    assert epoch.value == "2026-12-02T00:00:00.000+00:00"


@pytest.mark.parametrize("text", [
    "May I have a refund?",
    "I cannot add an article to order 3707955617",
    "I paid $12 for it",
    "the total of 1499 dollars",
    "call +44 20 7946 0958",
    "I'm 5 minutes late",
    "wait a second",
    "open 9-5",
    "the 3rd one",
    "I want to cancel my order",
    "how do I change my password",
    "mail me at march@example.com",
])
def test_no_time(text: str) -> None:
    assert "time" not in dims_of(text)


# -- email, url, phone-number ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "value"), [
    ("mail me at john.doe@example.com", "john.doe@example.com"),
    ("Contact: ANA_MARIA+x@sub.mail-server.co.uk.", "ANA_MARIA+x@sub.mail-server.co.uk"),
])
def test_emails(text: str, value: str) -> None:
    e = only(text, "email")
    assert (text[e.start:e.end], e.additional_info) == (value, {"value": value})
    assert "url" not in dims_of(text)  # the address's domain is not a URL of its own


@pytest.mark.parametrize("text", ["john@localhost", "@handle", "a @ b.com", "mail me"])
def test_no_email(text: str) -> None:
    assert "email" not in dims_of(text)


@pytest.mark.parametrize(("text", "value", "domain"), [
    ("see https://example.com/a?b=1.", "https://example.com/a?b=1", "example.com"),
    ("visit www.example.org today", "www.example.org", "example.org"),
    ("go to example.co.uk/help", "example.co.uk/help", "example.co.uk"),
    ("(http://shop.example.io/x)", "http://shop.example.io/x", "shop.example.io"),
])
def test_urls(text: str, value: str, domain: str) -> None:
    e = only(text, "url")
    assert text[e.start:e.end] == value
    assert e.additional_info == {"value": value, "domain": domain}


@pytest.mark.parametrize("text", ["e.g. this", "file.txt is here", "version 1.2.3", "no links"])
def test_no_url(text: str) -> None:
    assert "url" not in dims_of(text)


@pytest.mark.parametrize(("text", "span", "value", "locale"), [
    ("call me at (650) 253-0000", "(650) 253-0000", "6502530000", "en_US"),
    ("my number is +44 20 7946 0958", "+44 20 7946 0958", "(+44) 2079460958", "en_US"),
    ("ring 020 7946 0958 today", "020 7946 0958", "2079460958", "en_GB"),
    ("+1 650 253 0000", "+1 650 253 0000", "(+1) 6502530000", "en_US"),
])
def test_phone_numbers(text: str, span: str, value: str, locale: str) -> None:
    e = only(text, "phone-number", locale=locale)
    assert (text[e.start:e.end], e.value) == (span, value)
    assert "number" not in dims_of(text, locale=locale)  # its digit groups are not numbers of their own


@pytest.mark.parametrize("text", ["order 12345", "how can I cancel purchase 113542617735902?", "on 12/03/2026",
                                  "it costs $1,200", "room 101"])
def test_no_phone_number(text: str) -> None:
    assert "phone-number" not in dims_of(text)


# -- options, bad input ----------------------------------------------------------------------------------------

def test_dimensions_select_what_is_returned() -> None:
    text = "pay $20 tomorrow, order 12345"
    assert dims_of(text) == {"amount-of-money", "time", "number"}
    assert dims_of(text, dimensions=["time"]) == {"time"}
    assert dims_of(text, dimensions=[]) == set()
    assert set(DIMENSIONS) == {"number", "ordinal", "amount-of-money", "time", "duration", "email", "phone-number",
                               "url"}


@pytest.mark.parametrize(("kw", "reason"), [
    ({"dimensions": ["time", "distance"]}, "dimensions: unknown 'distance'"),
    ({"dimensions": "time"}, "expected a list"),
    ({"timezone": "Mars/Olympus"}, "timezone 'Mars/Olympus'"),
    ({"locale": "english please"}, "locale 'english please'"),
])
def test_bad_options_raise_with_the_reason(kw: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        extract("tomorrow", **kw)


@pytest.mark.parametrize("text", ["", "   ", "?!", "😀 🎉", "a" * 5000, "1" * 400, "$$$ 12/99/99 99:99 @@",
                                  "\ud800 tomorrow", "from to and between", "in in in 3", "-" * 50])
def test_odd_text_never_raises(text: str) -> None:
    for e in extract(text, reference_time=REF):
        assert 0 <= e.start < e.end <= len(text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.sampled_from(list("0123456789 $€.,:/-+@abcdefghijklmnopqrstuvwxyz")), max_size=60))
def test_any_text_gives_valid_spans(text: str) -> None:
    for e in extract(text, reference_time=REF):
        assert 0 <= e.start < e.end <= len(text)
        assert e.entity in DIMENSIONS


# -- the pipeline component and the Duckling server -------------------------------------------------------------

def test_extractor_for_reads_rasas_component_config() -> None:
    local = extractor_for({"name": "DucklingEntityExtractor", "dimensions": ["time"], "timezone": "Europe/Berlin"})
    assert isinstance(local, LocalDucklingExtractor)
    remote = extractor_for({"name": "DucklingEntityExtractor", "url": "http://127.0.0.1:8000",
                            "dimensions": ["time", "distance"], "locale": "de_DE", "timeout": 1})
    assert isinstance(remote, DucklingHTTPExtractor)
    assert (remote.url, remote.dimensions, remote.locale, remote.timeout) == (
        "http://127.0.0.1:8000/parse", ("time", "distance"), "de_DE", 1.0)


@pytest.mark.parametrize(("component", "reason"), [
    ({"name": "DucklingEntityExtractor", "dimensions": ["weather"]}, "unknown 'weather'"),
    ({"name": "DucklingEntityExtractor", "dimensions": "time"}, "dimensions: expected a list"),
    ({"name": "DucklingEntityExtractor", "timezone": "Nowhere/Town"}, "timezone 'Nowhere/Town'"),
    ({"name": "DucklingEntityExtractor", "url": "localhost:8000"}, "url 'localhost:8000'"),
    ({"name": "DucklingEntityExtractor", "url": "http://x", "timeout": "soon"}, "timeout: expected"),
    ({"name": "DucklingEntityExtractor", "url": "http://x", "timeout": 0}, "timeout 0.0"),
    ({"name": "DucklingEntityExtractor", "reftime": 1}, "not supported: reftime"),
])
def test_extractor_for_refuses_bad_config_with_the_key(component: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        extractor_for(component)


async def test_local_extractor_is_awaitable_like_the_http_one() -> None:
    local = extractor_for({"name": "DucklingEntityExtractor", "dimensions": ["time"]})
    got = await local.extract("pay $20 tomorrow", reference_time=REF)
    assert [(e.entity, e.value) for e in got] == [("time", "2026-12-02T00:00:00.000+00:00")]


# Duckling's own answer shapes (POST /parse), as its server writes them.
TIME = {"body": "tomorrow at eight", "start": 10, "end": 27, "dim": "time", "latent": False,
        "value": {"values": [{"value": "2026-12-02T08:00:00.000+00:00", "grain": "hour", "type": "value"},
                             {"value": "2026-12-02T20:00:00.000+00:00", "grain": "hour", "type": "value"}],
                  "value": "2026-12-02T08:00:00.000+00:00", "grain": "hour", "type": "value"}}
INTERVAL = {"body": "from 3pm to 5pm", "start": 28, "end": 43, "dim": "time", "latent": False,
            "value": {"values": [{"to": {"value": "2026-12-01T18:00:00.000+00:00", "grain": "hour"},
                                  "from": {"value": "2026-12-01T15:00:00.000+00:00", "grain": "hour"},
                                  "type": "interval"}],
                      "to": {"value": "2026-12-01T18:00:00.000+00:00", "grain": "hour"},
                      "from": {"value": "2026-12-01T15:00:00.000+00:00", "grain": "hour"}, "type": "interval"}}
MONEY = {"body": "$20", "start": 0, "end": 3, "dim": "amount-of-money", "latent": False,
         "value": {"value": 20, "type": "value", "unit": "USD"}}
DISTANCE = {"body": "3 km", "start": 44, "end": 48, "dim": "distance", "latent": False,
            "value": {"value": 3, "type": "value", "unit": "kilometre"}}
TEXT = "$20 to me tomorrow at eight from 3pm to 5pm 3 km"


def duckling_answer(_text: str) -> web.StreamResponse:
    """The four matches above, whatever the text: the fake server's answer for the HTTP extractor's tests."""
    return web.json_response([MONEY, TIME, INTERVAL, DISTANCE])


async def test_http_extractor_sends_ducklings_form_and_reads_its_answer(duckling: tuple[FakeDuckling, str]) -> None:
    fake, url = duckling
    fake.answer = duckling_answer
    x = DucklingHTTPExtractor(url + "/", locale="en_GB", timezone="Europe/London", timeout=2)
    try:
        got = await x.extract(TEXT, reference_time=REF)
    finally:
        await x.aclose()
    assert fake.requests == [{"text": TEXT, "locale": "en_GB", "tz": "Europe/London",
                              "reftime": str(int(REF.timestamp() * 1000))}]
    assert [(e.entity, TEXT[e.start:e.end], e.value) for e in got] == [
        ("amount-of-money", "$20", "20"),
        ("time", "tomorrow at eight", "2026-12-02T08:00:00.000+00:00"),
        ("time", "from 3pm to 5pm", "2026-12-01T15:00:00.000+00:00/2026-12-01T18:00:00.000+00:00"),
        ("distance", "3 km", "3"),
    ]
    assert got[0].rasa_value == 20 and got[0].additional_info == MONEY["value"]
    assert got[2].rasa_value == {"from": "2026-12-01T15:00:00.000+00:00", "to": "2026-12-01T18:00:00.000+00:00"}
    assert all(e.extractor == "DucklingEntityExtractor" and e.confidence == 1.0 for e in got)
    # the same entity shape as the in-process extractor gives
    local = only("tomorrow at 8am", "time")
    assert set(local.additional_info or {}) == set(got[1].additional_info or {})


async def test_http_extractor_asks_for_and_keeps_only_its_dimensions(duckling: tuple[FakeDuckling, str]) -> None:
    fake, url = duckling
    fake.answer = duckling_answer
    x = extractor_for({"name": "DucklingEntityExtractor", "url": url, "dimensions": ["time"]})
    assert isinstance(x, DucklingHTTPExtractor)
    try:
        got = await x.extract(TEXT, reference_time=1_700_000_000.5)
    finally:
        await x.aclose()
    assert json.loads(fake.requests[0]["dims"]) == ["time"]
    assert fake.requests[0]["reftime"] == "1700000000500"
    assert "tz" not in fake.requests[0]
    assert {e.entity for e in got} == {"time"} and len(got) == 2


@pytest.mark.parametrize(("answer", "warning"), [
    (lambda _: web.Response(status=500, text="boom"), "HTTP 500"),
    (lambda _: web.Response(text="<html>not json</html>", content_type="text/html"), "not JSON"),
    (lambda _: web.json_response({"error": "bad locale"}), "expected a JSON list"),
])
async def test_http_errors_mean_no_entities_and_a_warning(duckling: tuple[FakeDuckling, str], answer: Any,
                                                          warning: str, caplog: pytest.LogCaptureFixture) -> None:
    fake, url = duckling
    fake.answer = answer
    x = DucklingHTTPExtractor(url)
    with caplog.at_level(logging.WARNING, logger="bots.nlu.extractors"):
        assert await x.extract("tomorrow") == []
    await x.aclose()
    assert warning in caplog.text


async def test_a_slow_duckling_times_out(duckling: tuple[FakeDuckling, str], caplog: pytest.LogCaptureFixture) -> None:
    fake, url = duckling
    fake.delay = 2.0
    x = DucklingHTTPExtractor(url, timeout=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.WARNING, logger="bots.nlu.extractors"):
        assert await x.extract("tomorrow") == []
    assert loop.time() - started < 1.5
    await x.aclose()
    assert "no answer within 0.2s" in caplog.text


async def test_a_duckling_that_is_down(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    x = DucklingHTTPExtractor(f"http://127.0.0.1:{port}")
    with caplog.at_level(logging.WARNING, logger="bots.nlu.extractors"):
        assert await x.extract("tomorrow") == []
    await x.aclose()
    assert "ConnectError" in caplog.text


async def test_odd_items_are_skipped_and_the_rest_kept(duckling: tuple[FakeDuckling, str],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    fake, url = duckling
    fake.answer = lambda _: web.json_response([
        {"dim": "time", "start": 0, "end": 3},  # no value
        {"dim": "number", "start": "0", "end": 1, "value": {"value": 1}},  # start not a number
        {"dim": "number", "start": 5, "end": 900, "value": {"value": 1}},  # past the end of the text
        "not an object",
        MONEY,
    ])
    x = DucklingHTTPExtractor(url)
    with caplog.at_level(logging.WARNING, logger="bots.nlu.extractors"):
        got = await x.extract(TEXT)
    await x.aclose()
    assert [e.entity for e in got] == ["amount-of-money"]
    assert caplog.text.count("skipped a match") == 4


def test_parse_duckling_is_rasas_conversion() -> None:
    (e,) = parse_duckling([MONEY])
    assert e.to_dict() == {"entity": "amount-of-money", "value": "20", "start": 0, "end": 3, "confidence": 1.0,
                           "extractor": "DucklingEntityExtractor",
                           "additional_info": {"value": 20, "type": "value", "unit": "USD"}}
    assert parse_duckling("nope") == []

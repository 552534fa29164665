"""PII redaction: what support conversations contain, redacted or (just as important) left alone."""

from __future__ import annotations

import io
import logging
import time

import pytest

from bots.errors import ConfigError
from bots.pii import RedactingFilter, Redactor, luhn_valid


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


@pytest.mark.parametrize(("text", "expected"), [
    ("mail me at john.doe+shop@example.co.uk please", "mail me at [EMAIL] please"),
    ("Contact: ANA_MARIA@sub.mail-server.com.", "Contact: [EMAIL]."),
    ("two: a@b.io, c.d@e.org", "two: [EMAIL], [EMAIL]"),
])
def test_email_addresses(redactor: Redactor, text: str, expected: str) -> None:
    assert redactor.redact(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("my card is 4111 1111 1111 1111, exp 12/26", "my card is [CARD], exp 12/26"),
    ("card 4111-1111-1111-1111 please", "card [CARD] please"),
    ("4111111111111111", "[CARD]"),
    ("amex 3782 822463 10005", "amex [CARD]"),
    ("mastercard 5555 5555 5555 4444.", "mastercard [CARD]."),
    ("diners 3056 9309 0259 04", "diners [CARD]"),
    ("visa 13 digits 4222222222222", "visa 13 digits [CARD]"),
])
def test_card_numbers(redactor: Redactor, text: str, expected: str) -> None:
    assert redactor.redact(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("call +44 20 7946 0958 or +1 (555) 123-4567", "call [PHONE] or [PHONE]"),
    ("my number is 555-123-4567", "my number is [PHONE]"),
    ("(555) 123-4567", "[PHONE]"),
    ("on 555.123.4567 tomorrow", "on [PHONE] tomorrow"),
    ("toll free 1-800-555-0199", "toll free [PHONE]"),
    ("+49 30 1234567", "[PHONE]"),
    ("+33 1 23 45 67 89", "[PHONE]"),
    ("06 12 34 56 78", "[PHONE]"),
    ("0044 20 7946 0958", "[PHONE]"),
    ("mobile 07911 123456", "mobile [PHONE]"),
    ("mobile 07911123456", "mobile [PHONE]"),
    ("+81-3-1234-5678", "[PHONE]"),
    ("+44 (0)20 7946 0958", "[PHONE]"),
    ("whatsapp +5511987654321", "whatsapp [PHONE]"),
])
def test_phone_numbers(redactor: Redactor, text: str, expected: str) -> None:
    assert redactor.redact(text) == expected


@pytest.mark.parametrize("text", [
    "where is order 123456?",
    "order #A-99812 and invoice 9876543210",
    "ref 2024-0001-7788",
    "delivered on 2024-01-15 at 10:30",
    "on 15.01.2024, 01/15/2024 or 15-01-2024",
    "price 1,299.99 EUR, qty 3, total 3 897,97",
    "tracking 1Z999AA10123456784",
    "version 1.2.3 from 192.168.1.1",
    "not a card 4111 1111 1111 1112",
    "16 digits failing Luhn: 1234567812345678",
    "2+2=4 and +12.50 EUR",
    "the year 2023 and 12 items, room 101",
    "no digits at all",
    "",
])
def test_leaves_ordinary_numbers_alone(redactor: Redactor, text: str) -> None:
    assert redactor.redact(text) == text


def test_luhn() -> None:
    assert luhn_valid("4111111111111111") and luhn_valid("79927398713")
    assert not luhn_valid("4111111111111112") and not luhn_valid("12a4")


def test_extra_patterns_and_disabled_detectors() -> None:
    redactor = Redactor({"iban": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b",
                         "member_id": r"\bMBR-\d{6}\b"}, disable=("phone",))
    text = "IBAN DE89 3704 0044 0532 0130 00, member MBR-123456, call 555-123-4567, a@b.io"
    assert redactor.redact(text) == "IBAN [IBAN], member [MEMBER_ID], call 555-123-4567, [EMAIL]"


def test_bad_configuration_is_reported_by_name() -> None:
    with pytest.raises(ConfigError) as err:
        Redactor({"bad": "([unclosed", "empty": "x*", "no spaces": "x"})
    problems = err.value.problems
    assert any("'bad'" in p and "invalid regular expression" in p for p in problems)
    assert any("'empty'" in p and "empty string" in p for p in problems)
    assert any("'no spaces'" in p for p in problems)
    with pytest.raises(ConfigError, match="unknown built-in detector"):
        Redactor(disable=("ssn",))


def test_redact_data_walks_nested_values(redactor: Redactor) -> None:
    data = {"text": "I'm a@b.io", "metadata": {"phones": ["+44 20 7946 0958", 42], "ok": True}}
    assert redactor.redact_data(data) == {"text": "I'm [EMAIL]",
                                          "metadata": {"phones": ["[PHONE]", 42], "ok": True}}


def test_long_adversarial_input_is_fast(redactor: Redactor) -> None:
    texts = ["1" * 50_000, "1 " * 25_000, "a." * 25_000 + "@", "+" + "1-" * 25_000, "(" * 20_000 + "1"]
    began = time.perf_counter()
    for text in texts:
        redactor.redact(text)
    assert time.perf_counter() - began < 2.0


def test_logging_filter_redacts_records(redactor: Redactor) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s|%(customer)s"))
    handler.addFilter(RedactingFilter(redactor))
    logger = logging.getLogger("test_pii.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.info("message from %s: card %s", "a@b.io", "4111 1111 1111 1111",
                    extra={"customer": {"phone": "+1 (555) 123-4567"}})
        try:
            raise ValueError("bad e-mail x@y.org")
        except ValueError:
            logger.exception("failed for %s", "555-123-4567", extra={"customer": "z@w.net"})
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "message from [EMAIL]: card [CARD]|{'phone': '[PHONE]'}" in out
    assert "failed for [PHONE]|[EMAIL]" in out
    assert "ValueError: bad e-mail [EMAIL]" in out
    for secret in ("a@b.io", "4111", "555", "x@y.org", "z@w.net"):
        assert secret not in out


def test_from_config() -> None:
    assert Redactor.from_config(None) is None and Redactor.from_config(False) is None
    assert Redactor.from_config({"enabled": False}) is None
    default = Redactor.from_config(True)
    assert default is not None and default.redact("a@b.io") == "[EMAIL]"
    custom = Redactor.from_config({"patterns": {"member_id": r"MBR-\d+"}, "disable": ["email"]})
    assert custom is not None and custom.redact("MBR-12 a@b.io") == "[MEMBER_ID] a@b.io"
    with pytest.raises(ConfigError, match=r"bot.yml:7: pii: unknown key\(s\) pattern"):
        Redactor.from_config({"pattern": {}}, where="bot.yml:7: pii")
    with pytest.raises(ConfigError, match="pii: pii pattern 'x': invalid regular expression"):
        Redactor.from_config({"patterns": {"x": "("}})
    with pytest.raises(ConfigError, match=r"pii\.disable: expected a list"):
        Redactor.from_config({"disable": "phone"})

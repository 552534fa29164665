"""bots.nlu.spelling: messages corrected toward the bot's own words, and only where that is safe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bots.errors import ArtifactError
from bots.nlu.spelling import SPELLING_FILE, Speller, known_words, vocabulary, write_vocabulary

EXAMPLES = ["where is my order", "track my order please", "I want to cancel my order", "cancel order 123",
            "where is my parcel", "I want a refund", "refund my order", "my acount", "my account settings",
            "change my account"]
KNOWN = known_words(["where", "is", "my", "the", "weather", "laptop", "##ing", "▁please", "Ġorder", "want"])


def speller() -> Speller:
    return Speller(vocabulary(EXAMPLES), KNOWN)


def test_typed_typos_are_read_as_the_bots_words() -> None:
    s = speller()
    assert s.correct("wher is my ordr").text == "where is my order"
    assert s.correct("cancle my oder plz").text == "cancel my order plz"  # swap, missing letter; "plz" too short
    assert s.correct("I want a refnd").text == "I want a refund"
    assert s.correct("Cancel ORDR 123").text == "Cancel ORDR 123"  # capitals: an acronym or a code


def test_words_the_tokenizer_knows_or_that_are_not_words_stay() -> None:
    s = speller()
    # "weather" is one edit from nothing here, but "laptop"/"weather" must never become bot words
    assert s.correct("whats the weather").text == "whats the weather"  # contraction without its apostrophe
    assert s.correct("dont cancel").text == "dont cancel"
    assert s.correct("order12 abc_d 4567").text == "order12 abc_d 4567"
    assert s.correct("my order").changes == ()


def test_a_typo_in_the_examples_is_not_a_target() -> None:
    s = speller()
    # "acount" occurs once and the tokenizer does not know it: never a correction, though it is not corrected
    # itself either (it is in the vocabulary); "acconut" goes to nothing rather than to the typo
    assert s.fix("acount") is None
    assert s.fix("accoun") == "account"
    assert s.fix("acconut") == "account"  # a swap of neighbours is one edit
    assert s.fix("acxount") == "account"


def test_the_most_frequent_word_one_edit_away_wins() -> None:
    s = Speller({"cart": 5, "card": 2, "care": 9}, frozenset())
    assert s.fix("carx") == "care"
    assert s.fix("card") is None and s.fix("car") is None  # in the vocabulary; shorter than MIN_LENGTH
    s2 = Speller({"cart": 5, "card": 2}, frozenset())
    assert s2.fix("cardd") == "card" and s2.fix("carts") == "cart"


def test_offsets_map_back_to_what_the_customer_typed() -> None:
    c = speller().correct("pls cancle ordr 123 now")
    assert c.text == "pls cancel order 123 now"
    for word in ("pls", "123", "now"):
        start = c.text.index(word)
        assert c.span(start, start + len(word)) == (c.original.index(word), c.original.index(word) + len(word))
    start = c.text.index("order")
    assert c.span(start, start + 5) == (c.original.index("ordr"), c.original.index("ordr") + 4)
    assert c.span(c.text.index("cancel"), c.text.index("123") + 3) == (4, 19)


def test_the_vocabulary_file_round_trips_and_a_bad_one_is_an_artifact_error(tmp_path: Path) -> None:
    entry = write_vocabulary(tmp_path, EXAMPLES)
    assert entry["file"] == SPELLING_FILE and entry["words"] == len(vocabulary(EXAMPLES))
    assert Speller.load(tmp_path, entry, KNOWN).correct("wher is it").text == "where is it"
    (tmp_path / SPELLING_FILE).write_text("{nope", encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"spelling.json:1: invalid JSON"):
        Speller.load(tmp_path, entry, KNOWN)
    (tmp_path / SPELLING_FILE).write_text(json.dumps({"a": "b"}), encoding="utf-8")
    with pytest.raises(ArtifactError, match="word counts"):
        Speller.load(tmp_path, entry, KNOWN)
    (tmp_path / SPELLING_FILE).unlink()
    with pytest.raises(ArtifactError, match="missing; retrain"):
        Speller.load(tmp_path, entry, KNOWN)

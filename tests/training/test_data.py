"""Cleaning and splitting training data."""

from __future__ import annotations

from collections import Counter

from bots.types import Entity
from training.data import NluData, Sample, clean, k_folds, merge, stratified_split


def _samples(spec: dict[str, int]) -> list[Sample]:
    return [Sample(f"{intent} example {i}", intent, (), f"f.yml:{i}") for intent, n in spec.items() for i in range(n)]


def test_clean_drops_duplicates_and_warns_about_conflicts_and_thin_intents() -> None:
    data = NluData((Sample("Hello", "greet", (), "a.yml:3"), Sample("hello ", "greet", (), "a.yml:4"),
                    Sample("HELLO", "goodbye", (), "b.csv:9"), Sample("bye", "goodbye", (), "b.csv:10")))
    out = clean(data, min_examples=2)
    assert [s.text for s in out.samples] == ["Hello", "bye"]
    assert any("b.csv:9" in w and "'goodbye'" in w and "a.yml:3" in w for w in out.warnings)
    assert "dropped 1 duplicate example(s): a.yml:4: 'hello ' (as at a.yml:3)" in out.warnings
    assert any("'goodbye' has only 1" in w for w in out.warnings)


def test_many_duplicates_are_counted_and_the_first_five_named_at_their_lines() -> None:
    data = NluData(tuple(Sample("hi", "greet", (), f"nlu.yml:{line}") for line in range(1, 9)))
    out = clean(data, min_examples=1)
    assert out.warnings == ("dropped 7 duplicate example(s): nlu.yml:2: 'hi' (as at nlu.yml:1); nlu.yml:3: 'hi' (as "
                            "at nlu.yml:1); nlu.yml:4: 'hi' (as at nlu.yml:1); nlu.yml:5: 'hi' (as at nlu.yml:1); "
                            "nlu.yml:6: 'hi' (as at nlu.yml:1); and 2 more",)


def test_declared_intents_without_examples_warn() -> None:
    out = clean(merge([NluData(tuple(_samples({"a": 5}))), NluData((), {}, (), ("a", "b"))]), min_examples=1)
    assert out.warnings == ("intent 'b' is declared but has no examples; the model cannot predict it",)


def test_cap_per_intent_is_seeded() -> None:
    data = NluData(tuple(_samples({"a": 20, "b": 3})))
    one, two = clean(data, max_per_intent=5, seed=1), clean(data, max_per_intent=5, seed=1)
    assert Counter(s.intent for s in one.samples) == {"a": 5, "b": 3}
    assert one.samples == two.samples


def test_stratified_split_keeps_every_intent_in_training() -> None:
    samples = _samples({"a": 20, "b": 7, "c": 2, "d": 3})
    train, held = stratified_split(samples, 0.2, seed=3)
    assert sorted(train + held, key=lambda s: s.text) == sorted(samples, key=lambda s: s.text)
    assert Counter(s.intent for s in held) == {"a": 4, "b": 1, "d": 1}
    assert {s.intent for s in train} == {"a", "b", "c", "d"}
    assert stratified_split(samples, 0.2, seed=3) == (train, held)


def test_k_folds_test_each_sample_once() -> None:
    samples = _samples({"a": 10, "b": 5})
    folds = k_folds(samples, 3, seed=0)
    tested = [s for _, test in folds for s in test]
    assert sorted(s.text for s in tested) == sorted(s.text for s in samples)
    for train, test in folds:
        assert not set(map(id, train)) & set(map(id, test))
        assert Counter(s.intent for s in test)["b"] in (1, 2)


def test_data_hash_changes_with_labels_and_entities() -> None:
    a = NluData((Sample("x y", "i"),))
    assert a.data_hash() == NluData((Sample("x y", "i"),)).data_hash()
    assert a.data_hash() != NluData((Sample("x y", "j"),)).data_hash()
    assert a.data_hash() != NluData((Sample("x y", "i", (Entity("e", "x", 0, 1),)),)).data_hash()


def test_annotation_values_become_synonyms() -> None:
    data = NluData((Sample("fly to NYC", "f", (Entity("city", "New York", 7, 10),)),), {"big apple": "New York"})
    assert data.annotation_synonyms() == {"nyc": "New York", "big apple": "New York"}


def test_pinned_samples_are_never_held_out_capped_or_overridden() -> None:
    from training.data import NluData, Sample, clean, stratified_split

    samples = [Sample(f"text {i}", "a") for i in range(20)] + [Sample(f"other {i}", "b") for i in range(20)]
    corrected = Sample("text 3", "b", pinned=True)  # a reviewer says "text 3" is b
    data = clean(NluData(tuple([*samples, corrected])), max_per_intent=5, seed=1)
    by_text = {s.text: s for s in data.samples}
    assert by_text["text 3"].intent == "b" and by_text["text 3"].pinned
    assert any("corrected from 'a' to 'b'" in w for w in data.warnings)
    for seed in range(10):
        train, held = stratified_split(data.samples, 0.5, seed)
        assert corrected in train and corrected not in held


def test_undeclared_intents_name_the_first_example_of_each() -> None:
    from training.data import undeclared_intents

    parts = [NluData((Sample("hi", "greet", (), "a.csv:2"), Sample("refund please", "refund", (), "a.csv:3"))),
             NluData((Sample("money back", "refund", (), "b.yml:7"), Sample("hours?", "opening_hours", (), "b.yml:9"),
                      Sample("weather", "out_of_scope", (), "b.yml:11")))]
    assert undeclared_intents(parts, {"greet", "out_of_scope"}) == {"refund": "a.csv:3", "opening_hours": "b.yml:9"}
    assert undeclared_intents(parts, {"greet", "refund", "opening_hours", "out_of_scope"}) == {}

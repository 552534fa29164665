"""Scores against hand-computed cases."""

from __future__ import annotations

import pytest

from bots.types import Entity
from training.scoring import calibrate_threshold, entity_report, intent_report, oos_scores


def test_intent_report_matches_hand_computation() -> None:
    gold = ["a", "a", "a", "b", "b", "c"]
    pred = ["a", "a", "b", "b", "c", "c"]
    r = intent_report(gold, pred)
    # a: tp 2, fp 0, fn 1 → p 1, r 2/3, f1 0.8
    assert r["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1-score": pytest.approx(0.8),
                      "support": 3, "confused_with": {"b": 1}}
    # b: tp 1, fp 1 (a→b), fn 1 (b→c) → p r f1 0.5
    assert (r["b"]["precision"], r["b"]["recall"], r["b"]["f1-score"]) == (0.5, 0.5, 0.5)
    assert r["b"]["confused_with"] == {"c": 1}
    # c: tp 1, fp 1, fn 0 → p 0.5, r 1, f1 2/3
    assert r["c"]["f1-score"] == pytest.approx(2 / 3) and r["c"]["confused_with"] == {}
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["macro avg"]["f1-score"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert r["weighted avg"]["f1-score"] == pytest.approx((0.8 * 3 + 0.5 * 2 + 2 / 3) / 6)
    assert r["macro avg"]["support"] == 6


def test_entity_report_counts_exact_spans() -> None:
    gold = [[Entity("city", "Paris", 10, 15)], [Entity("city", "Rome", 0, 4), Entity("date", "today", 5, 10)]]
    pred = [[Entity("city", "Paris", 10, 15)], [Entity("city", "Ro", 0, 2)]]
    r = entity_report(gold, pred)
    assert r["city"] == {"precision": 0.5, "recall": 0.5, "f1-score": 0.5, "support": 2}
    assert r["date"]["recall"] == 0.0 and r["date"]["support"] == 1
    assert r["micro avg"]["precision"] == 0.5 and r["micro avg"]["recall"] == pytest.approx(1 / 3)


def test_entity_report_wants_the_annotated_role_and_group() -> None:
    gold = [[Entity("city", "Paris", 0, 5, role="from"), Entity("city", "Rome", 9, 13, role="to", group="1")]]
    right = [[Entity("city", "Paris", 0, 5, role="from"), Entity("city", "Rome", 9, 13, role="to", group="1")]]
    swapped = [[Entity("city", "Paris", 0, 5, role="to"), Entity("city", "Rome", 9, 13, role="to")]]
    assert entity_report(gold, right)["city"]["f1-score"] == 1.0
    report = entity_report(gold, swapped)["city"]
    assert (report["precision"], report["recall"], report["support"]) == (0.0, 0.0, 2)


def test_oos_scores() -> None:
    gold = ["a", "out_of_scope", "out_of_scope", "b"]
    pred = ["a", "out_of_scope", "b", "out_of_scope"]
    s = oos_scores(gold, pred)
    assert s == {"in_scope_accuracy": 0.5, "oos_precision": 0.5, "oos_recall": 0.5}
    assert oos_scores(["a"], ["a"]) == {}


def test_threshold_calibration_separates_oos_by_confidence() -> None:
    gold = ["a", "b", "out_of_scope", "out_of_scope", "a"]
    top = ["a", "b", "a", "b", "a"]
    conf = [0.9, 0.8, 0.4, 0.5, 0.7]
    t = calibrate_threshold(gold, top, conf)
    assert t is not None and 0.5 < t <= 0.7
    assert calibrate_threshold(["a", "b"], ["a", "b"], [0.9, 0.1]) is None

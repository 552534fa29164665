"""Scores against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bots.errors import ConfigError
from bots.nlu.oos import NOT_UNDERSTOOD, OperatingPoint, Target, served_point
from bots.types import Entity
from training.scoring import calibrate, entity_report, intent_report, oos_figures, oos_scores, oos_sweep


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


def test_accuracy_target_picks_the_threshold_that_separates_oos() -> None:
    gold = ["a", "b", "out_of_scope", "out_of_scope", "a", "b"]
    top = ["a", "b", "a", "b", "a", "a"]
    conf = [0.9, 0.8, 0.4, 0.5, 0.7, 0.45]
    point = calibrate(gold, top, conf, "softmax", Target.parse("accuracy"), calibrated_on="test")
    # Rejecting below 0.5/0.7 gets 5 of 6 right (b@0.45 is wrong either way); halfway between 0.5 and 0.7.
    assert point.threshold == pytest.approx(0.6)
    assert point.details["figures"]["accuracy"] == pytest.approx(5 / 6)
    assert point.details["figures"]["oos_recall"] == 1.0
    assert (point.method, point.source, point.details["target"]) == ("softmax", "calibrated", "accuracy")


def test_in_scope_targets_pick_the_strictest_threshold_that_meets_them() -> None:
    # 100 in-scope examples, all classified right, scores 0.01 ... 1.00; 10 OOS examples at 0.005.
    gold = ["a"] * 100 + ["out_of_scope"] * 10
    top = ["a"] * 110
    scores = [i / 100 for i in range(1, 101)] + [0.005] * 10
    drop = calibrate(gold, top, scores, "knn", Target.parse("in-scope-drop<=0.05"), calibrated_on="t")
    assert drop.details["figures"]["in_scope_accuracy"] == pytest.approx(0.95)  # 5 rejected, not 6
    assert 0.05 < drop.threshold < 0.06
    absolute = calibrate(gold, top, scores, "knn", Target.parse("in-scope>=90%"), calibrated_on="t")
    assert absolute.details["figures"]["in_scope_accuracy"] == pytest.approx(0.90)
    # Unreachable: nothing is rejected, and the note says why.
    never = calibrate(gold, ["b"] * 5 + top[5:], scores, "knn", Target.parse("in-scope>=1.0"), calibrated_on="t")
    assert never.threshold == -math.inf and "below the target" in never.details["note"]


def test_without_oos_examples_the_drop_target_is_a_quantile_and_accuracy_is_refused() -> None:
    gold, top = ["a"] * 1000, ["a"] * 1000
    scores = [i / 1000 for i in range(1000)]
    point = calibrate(gold, top, scores, "softmax", Target.parse("in-scope-drop<=0.02"), calibrated_on="t")
    assert point.details["figures"]["in_scope_rejected"] == pytest.approx(0.02)
    with pytest.raises(ConfigError, match="needs out_of_scope examples"):
        calibrate(gold, top, scores, "softmax", Target.parse("accuracy"), calibrated_on="held-out split")


def test_few_held_out_examples_use_a_prediction_bound_never_the_minimum() -> None:
    target = Target.parse("in-scope-drop<=0.01")
    gold, top, scores = ["a"] * 4, ["a"] * 4, [0.80, 0.82, 0.84, 0.86]
    point = calibrate(gold, top, scores, "softmax", target, calibrated_on="t")
    # mean 0.83, spread 0.0258: Student's t (3 degrees of freedom, 4.54) x sqrt(1 + 1/4) under the mean, where the
    # normal quantile (2.33 spreads) would sit at 0.77, just under the lowest of four scores
    assert point.threshold == pytest.approx(0.83 - 4.5407 * math.sqrt(1.25) * 0.025820, abs=1e-4)
    assert "too few" in point.details["note"] and "prediction bound of the 4" in point.details["note"]
    # two close scores say little about the spread: far below both, not the normal quantile just under them
    two = calibrate(["a"] * 2, ["a"] * 2, [0.80, 0.81], "softmax", target, calibrated_on="t")
    assert two.threshold < 0.6
    # one score, no spread: nothing is rejected by the score (a threshold just under it would reject about half)
    one = calibrate(["a"], ["a"], [0.8], "softmax", target, calibrated_on="t")
    assert one.threshold == -math.inf and "rejects nothing" in one.details["note"]
    assert not one.rejects(["a"], [0.01])[0]
    # 300 examples: the budget holds 3, the bound is within a few percent of the normal quantile
    rng = np.random.default_rng(0)
    many = rng.normal(0.8, 0.05, 300)
    big = calibrate(["a"] * 300, ["a"] * 300, many, "softmax", target, calibrated_on="t")
    normal = float(many.mean() - 2.3263 * many.std(ddof=1))
    assert normal - 0.005 < big.threshold <= normal + 1e-9


def test_targets_parse_or_say_what_is_expected() -> None:
    assert str(Target.parse("in-scope>=96%")) == "in-scope>=0.96"
    assert Target.parse(" in-scope-drop <= 0.01 ").value == 0.01
    for bad in ("accuracy>=0.9", "in-scope<=0.9", "recall", "in-scope>=1.5"):
        with pytest.raises(ValueError, match="out-of-scope target"):
            Target.parse(bad)


def test_the_one_rule_and_which_point_is_served() -> None:
    point = OperatingPoint("knn", 0.5, "calibrated")
    assert point.intent("a", {"knn": 0.4, "softmax": 0.99}) == NOT_UNDERSTOOD
    assert point.intent("a", {"knn": 0.6, "softmax": 0.01}) == "a"
    assert point.intent("out_of_scope", {"knn": 0.9}) == "out_of_scope"  # a learned out_of_scope stays
    # ... when the model is sure of it: under the softmax threshold calibrated for the same target (or a
    # softmax point's own threshold: fallback_threshold, Rasa's FallbackClassifier) it is not understood
    sure = OperatingPoint("knn", 0.5, "calibrated", {"methods": {"softmax": {"threshold": 0.6}}})
    assert sure.intent("out_of_scope", {"knn": 0.2, "softmax": 0.9}) == "out_of_scope"
    assert sure.intent("out_of_scope", {"knn": 0.9, "softmax": 0.3}) == NOT_UNDERSTOOD
    assert OperatingPoint("softmax", 0.45).intent("out_of_scope", {"softmax": 0.3}) == NOT_UNDERSTOOD
    assert OperatingPoint("softmax", 0.45).intent("out_of_scope", {"softmax": 0.5}) == "out_of_scope"
    assert list(point.rejects(["a", "out_of_scope", "b"], [0.4, 0.9, 0.6])) == [True, True, False]
    calibrated = point.to_dict()
    assert served_point(calibrated, None, None) == point
    assert served_point(calibrated, 0.3, 0.45) == OperatingPoint("softmax", 0.45, "bot fallback_threshold (override)")
    assert served_point({}, 0.3, None).describe() == "softmax < 0.3 (legacy oos_threshold)"
    assert served_point({}, None, None).threshold == 0.0


def test_sweep_starts_by_accepting_everything_and_figures_agree_with_the_rule() -> None:
    gold = ["a", "b", "out_of_scope", "out_of_scope"]
    top = ["a", "b", "a", "b"]
    scores = [0.9, 0.6, 0.3, 0.7]
    point = OperatingPoint("softmax", 0.5)
    rows = oos_sweep(gold, top, scores, point, steps=5)
    assert rows[0]["threshold"] == -math.inf and rows[0]["oos_recall"] == 0.0
    assert oos_figures(gold, top, scores, point) == {"accuracy": 0.75, "in_scope_accuracy": 1.0,
                                                     "in_scope_rejected": 0.0, "oos_recall": 0.5,
                                                     "oos_precision": 1.0}

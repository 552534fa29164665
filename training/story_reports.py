"""The report files of ``switchboard test``, named and shaped as ``rasa test`` writes them:

    failed_test_stories.yml     the failed stories with ``# predicted: ...`` comments (or Rasa's "all good" line)
    story_report.json           per action precision/recall/f1-score/support (sklearn's classification_report
                                as a dict), accuracy, macro avg, weighted avg, and conversation_accuracy
                                ({accuracy, correct, with_warnings, total})
    story_confusion_matrix.png  actions, true against predicted

The targets and predictions are the action-level pairs ``connectors/story_test.py`` collects (``None`` for
an action the bot never reached); this module only scores and draws them, so it needs no runtime.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.reports import confusion_matrix, plot_confusion

FAILED_STORIES = "failed_test_stories.yml"
STORY_REPORT = "story_report.json"
STORY_MATRIX = "story_confusion_matrix.png"


def _plain(value: Any) -> Any:
    """sklearn's numbers (numpy scalars) as JSON numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "item"):
        return value.item()
    return value


def story_report(targets: Sequence[str], predictions: Sequence[str], *, conversations: int,
                 failed: int, with_warnings: int = 0) -> dict[str, Any]:
    """Rasa's ``story_report.json``: sklearn's classification report of the actions, and the
    conversation accuracy (a conversation is correct when its story passed whole)."""
    from sklearn.metrics import classification_report

    if len(targets) != len(predictions):
        raise ValueError("targets and predictions differ in length")
    report: dict[str, Any] = {}
    if targets:
        report = _plain(classification_report(list(targets), list(predictions), output_dict=True, zero_division=0))
    correct = conversations - failed
    report["conversation_accuracy"] = {"accuracy": correct / conversations if conversations else 0.0,
                                       "correct": correct, "with_warnings": with_warnings, "total": conversations}
    return report


def write_story_reports(out: Path, targets: Sequence[str], predictions: Sequence[str], *, conversations: int,
                        failed: int, failed_stories_yaml: str) -> dict[str, Any]:
    """Write the three files into ``out`` (created); returns the report."""
    out.mkdir(parents=True, exist_ok=True)
    (out / FAILED_STORIES).write_text(failed_stories_yaml, encoding="utf-8")
    report = story_report(targets, predictions, conversations=conversations, failed=failed)
    (out / STORY_REPORT).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if targets:
        labels, matrix = confusion_matrix(targets, predictions)
        plot_confusion(out / STORY_MATRIX, labels, matrix, what="action")
    else:
        (out / STORY_MATRIX).unlink(missing_ok=True)  # no actions: no matrix (not one from an earlier run)
    return report

"""``switchboard test`` end to end: the fixture Rasa projects trained (``--fast``), their own test stories run
through the served pipeline (the trained NLU, the engine, the in-process rasa-sdk actions), Rasa's report
files written, and the exit status a CI job gates on."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bots.dialogue.rasa_data import read_test_stories
from bots.dialogue.rasa_project import rasa_test_files
from connectors.cli import main
from training.story_reports import FAILED_STORIES, STORY_MATRIX, STORY_REPORT


@pytest.mark.parametrize("name", ["moodbot", "forms", "responses", "split_domain"])
def test_a_fixture_project_passes_its_own_test_stories(name: str, trained_rasa: Callable[[str], Path],
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bot_dir = trained_rasa(name)
    stories = read_test_stories(rasa_test_files(bot_dir))
    out = tmp_path / "results"
    code = main(["test", str(bot_dir), "--out", str(out), "--min-accuracy", "0.95"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert f"stories: {len(stories)}/{len(stories)} passed (conversation accuracy 1.000)" in printed
    report = json.loads((out / STORY_REPORT).read_text(encoding="utf-8"))
    assert report["conversation_accuracy"] == {"accuracy": 1.0, "correct": len(stories), "with_warnings": 0,
                                               "total": len(stories)}
    assert report["accuracy"] == 1.0
    assert {"macro avg", "weighted avg", "action_listen"} <= set(report)
    listens = report["action_listen"]
    assert listens["precision"] == listens["recall"] == listens["f1-score"] == 1.0 and listens["support"] > 0
    assert (out / FAILED_STORIES).read_text(encoding="utf-8") == "# None of the test stories failed - all good!\n"
    assert (out / STORY_MATRIX).read_bytes()[:4] == b"\x89PNG"


def test_a_failing_story_exits_1_and_is_written_back(trained_rasa: Callable[[str], Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    bot_dir = trained_rasa("moodbot")
    wrong = tmp_path / "test_wrong.yml"
    wrong.write_text("stories:\n- story: greeted with a goodbye\n  steps:\n  - user: |\n      hello there!\n"
                     "    intent: greet\n  - action: utter_goodbye\n", encoding="utf-8")
    out = tmp_path / "results"
    code = main(["test", str(bot_dir), str(wrong), "--out", str(out), "--min-accuracy", "0.9"])
    captured = capsys.readouterr()
    assert code == 1
    assert f"failed: {wrong}:7: story 'greeted with a goodbye': 'utter_goodbye' expected, the bot ran " \
           "'utter_greet'" in captured.out
    assert "stories: 0/1 passed (conversation accuracy 0.000)" in captured.out
    assert "action accuracy 0.500 is below --min-accuracy 0.9" in captured.err
    failed = (out / FAILED_STORIES).read_text(encoding="utf-8")
    assert f'- story: "greeted with a goodbye ({wrong})"' in failed
    assert "  - action: utter_goodbye  # predicted: utter_greet\n" in failed
    report = json.loads((out / STORY_REPORT).read_text(encoding="utf-8"))
    assert report["conversation_accuracy"]["correct"] == 0 and report["accuracy"] == 0.5
    assert report["utter_goodbye"]["recall"] == 0.0 and report["utter_greet"]["precision"] == 0.0


def test_bad_input_is_a_message_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    moodbot = Path(__file__).resolve().parents[1] / "data" / "rasa" / "moodbot"
    assert main(["test", str(moodbot), str(tmp_path / "nope.yml")]) == 2
    assert f"error: {tmp_path / 'nope.yml'}: no such file or folder" in capsys.readouterr().err
    empty = tmp_path / "bot"
    empty.mkdir()
    assert main(["test", str(empty)]) == 2
    assert "no test stories (tests/test_*.yml" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["test", str(moodbot), "--min-accuracy", "2"])
    assert "2.0 is not between 0 and 1" in capsys.readouterr().err

"""bench/rasa_projects.py: the test stories a project's row counts are the conversations switchboard test runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench.rasa_projects import conversations_tested, main

MOODBOT = Path(__file__).resolve().parent / "data" / "rasa" / "moodbot"


def test_rules_in_a_test_file_are_not_counted_as_test_stories(tmp_path: Path) -> None:
    # A public project keeps tests/test_rules.yml beside its test stories: neither `rasa test` nor
    # `switchboard test` tests rules, yet the bench counted them, so its row said 4/7 where 4 of 5 passed.
    stories = tmp_path / "test_stories.yml"
    stories.write_text('version: "3.1"\nstories:\n- story: hello\n  steps:\n  - user: |\n      hi\n    intent: greet\n'
                       "  - action: utter_greet\n")
    rules = tmp_path / "test_rules.yml"
    rules.write_text('rules:\n- rule: bye\n  steps:\n  - user: |\n      bye\n    intent: goodbye\n'
                     "  - action: utter_goodbye\n")
    assert conversations_tested([stories, rules]) == 1
    assert conversations_tested([]) == 0


def test_a_project_check_refuses_is_a_row_and_the_bench_goes_on(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # The bench stopped at the first project switchboard check refuses (sys.exit with its errors), so the
    # projects after it were never measured and the table of the ones before it never printed.
    project = tmp_path / "moodbot"
    shutil.copytree(MOODBOT, project, ignore=shutil.ignore_patterns("models", "results"))
    domain = project / "domain.yml"
    domain.write_text(domain.read_text(encoding="utf-8") + "\nslots:\n  mood:\n    type: txt\n", encoding="utf-8")
    assert main([str(project)]) == 1
    out = capsys.readouterr().out
    assert "| moodbot | | | refused by check: see below |" in out
    assert "refused by switchboard check:" in out and "domain.yml:" in out and "unknown type 'txt'" in out


def test_a_project_that_loads_but_check_refuses_is_a_refused_row_not_a_failed_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Round 12: a project that loads but that switchboard check refuses (a story structure conflict, a form
    # without a question for its slot, a rule running an undeclared action) was trained, `switchboard train`
    # refused it, and its row said "failed: see below" with the train output: not the "refused by check" row
    # and errors the bench's docstring promises (and earlier rounds reported).
    import bench.rasa_projects as bench

    project = tmp_path / "moodbot"
    shutil.copytree(MOODBOT, project, ignore=shutil.ignore_patterns("models", "results"))
    stories = project / "data" / "stories.yml"
    stories.write_text(stories.read_text(encoding="utf-8") + "\n- story: conflicting\n  steps:\n"
                       "  - intent: greet\n  - action: utter_goodbye\n", encoding="utf-8")
    trained: list[Path] = []

    def fake_train(bot_dir: Path, fast: bool) -> tuple[int, float, str]:
        trained.append(bot_dir)
        return 2, 1.0, ""

    monkeypatch.setattr(bench, "_train", fake_train)
    assert main([str(project)]) == 1
    out = capsys.readouterr().out
    assert "| moodbot | | | refused by check: see below |" in out
    assert "refused by switchboard check:" in out and "story structure conflict" in out
    assert trained == []


def test_a_project_whose_test_stories_do_not_parse_is_trained_and_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # A public project (ManojGTReddy/chatbot) indents a test story under the previous one's steps: its test
    # file has the key 'steps' twice, which switchboard test refuses (and Rasa's YAML reader too). The bench
    # reported the whole project as "refused by check" and trained nothing, though check passes it.
    import bench.rasa_projects as bench

    project = tmp_path / "moodbot"
    shutil.copytree(MOODBOT, project, ignore=shutil.ignore_patterns("models", "results"))
    tests = project / "tests" / "test_stories.yml"
    tests.write_text('stories:\n- story: a\n  steps:\n  - user: |\n      hi\n    intent: greet\n'
                     '  - action: utter_greet\n  - story: b\n  steps:\n  - intent: greet\n', encoding="utf-8")
    trained: list[Path] = []

    def fake_train(bot_dir: Path, fast: bool) -> tuple[int, float, str]:
        trained.append(bot_dir)
        return 0, 1.5, ""

    monkeypatch.setattr(bench, "_train", fake_train)
    assert main([str(project)]) == 1
    out = capsys.readouterr().out
    assert len(trained) == 1
    assert "| moodbot | " in out and " | refused | 1.5 | test stories refused: see below |" in out
    assert "test stories refused by switchboard test:" in out and "duplicate key 'steps'" in out
    assert "refused by switchboard check" not in out

"""bench/rasa_projects.py: the test stories a project's row counts are the conversations switchboard test runs."""

from __future__ import annotations

from pathlib import Path

from bench.rasa_projects import conversations_tested


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

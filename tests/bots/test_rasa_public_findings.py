"""Regressions found by running real public Rasa 3.x projects (bench/RESULTS.md, "Public Rasa projects"),
each on a small fixture of our own under tests/data/rasa/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bots.dialogue.actions import InProcessActions, load_actions
from bots.dialogue.check import check_bot_folder
from bots.errors import ConfigError
from bots.loader import load_bot_folder

RASA = Path(__file__).resolve().parents[1] / "data" / "rasa"


def _copy(tmp_path: Path, name: str) -> Path:
    bot_dir = tmp_path / name
    shutil.copytree(RASA / name, bot_dir, ignore=shutil.ignore_patterns("__pycache__", "models", "results"))
    return bot_dir


def test_a_declared_action_nothing_runs_is_a_warning_not_a_refusal(tmp_path: Path) -> None:
    # The escape-room project declares action_set_game_started and never writes it: Rasa trains and
    # serves it (the action server would answer 404 only if it ran). Serve refused it, and check passed.
    bot_dir = _copy(tmp_path, "declared_actions")
    report = check_bot_folder(bot_dir)
    assert report.errors == []
    assert [w for w in report.warnings if "action_never_written" in w] == [
        f"{bot_dir / 'domain.yml'}:9: action 'action_never_written' is declared but not defined "
        f"({bot_dir / 'actions.py'} defines action_give_hint); no story, rule or form runs it, so it is never "
        f"run (define it, or remove it from the domain)"]
    spec, dialogue = load_bot_folder(bot_dir)
    runner = load_actions(spec, dialogue)  # without the fix: ConfigError "unknown action 'action_never_written'"
    assert isinstance(runner, InProcessActions)
    assert runner.names() == {"action_give_hint"}


def test_an_undefined_action_a_rule_runs_is_refused_by_check_as_by_serve(tmp_path: Path) -> None:
    bot_dir = _copy(tmp_path, "declared_actions")
    rules = bot_dir / "data" / "rules.yml"
    rules.write_text(rules.read_text().replace("action: action_give_hint", "action: action_never_written"))
    report = check_bot_folder(bot_dir)  # without the fix check passed, and serve refused the bot
    assert report.errors == [
        f"{bot_dir / 'domain.yml'}:9: unknown action 'action_never_written' ({bot_dir / 'actions.py'} defines "
        f"action_give_hint)"]
    spec, dialogue = load_bot_folder(bot_dir)
    with pytest.raises(ConfigError, match="unknown action 'action_never_written'"):
        load_actions(spec, dialogue)

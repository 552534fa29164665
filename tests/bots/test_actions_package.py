"""The ``actions/`` package of a Rasa project loads in process as ``python -m rasa_sdk --actions actions``
loads it: every module of the package (``rasa init`` puts the Action classes in ``actions/actions.py``
and leaves ``__init__.py`` empty), sub-packages and relative imports included."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bots.dialogue.actions import InProcessActions, load_actions
from bots.errors import ConfigError
from bots.loader import load_bot_folder

FORMS = Path(__file__).resolve().parents[1] / "data" / "rasa" / "forms"


def _project(tmp_path: Path) -> Path:
    bot_dir = tmp_path / "forms"
    shutil.copytree(FORMS, bot_dir, ignore=shutil.ignore_patterns("__pycache__", "models", "results"))
    (bot_dir / "endpoints.yml").unlink()  # no action server: every action must load in process
    return bot_dir


def test_the_actions_of_every_module_of_the_package_run_in_process(tmp_path: Path) -> None:
    bot_dir = _project(tmp_path)
    assert (bot_dir / "actions" / "__init__.py").read_text() == ""
    (bot_dir / "actions" / "extra").mkdir()
    (bot_dir / "actions" / "extra" / "__init__.py").write_text("")
    (bot_dir / "actions" / "extra" / "helpers.py").write_text("GREETING = 'Hello from a sub-package'\n")
    (bot_dir / "actions" / "extra" / "more.py").write_text(
        "from rasa_sdk import Action\n\nfrom .helpers import GREETING\n\n\n"
        "class ActionHello(Action):\n"
        "    def name(self):\n        return 'action_hello'\n\n"
        "    def run(self, dispatcher, tracker, domain):\n"
        "        dispatcher.utter_message(text=GREETING)\n        return []\n")
    spec, dialogue = load_bot_folder(bot_dir)
    runner = load_actions(spec, dialogue)  # without the fix: "defines no Action classes"
    assert isinstance(runner, InProcessActions)
    assert runner.names() == {"validate_restaurant_form", "action_ask_feedback", "action_set_party_size",
                              "action_hello"}


def test_a_broken_module_of_the_package_names_its_file_and_line(tmp_path: Path) -> None:
    bot_dir = _project(tmp_path)
    (bot_dir / "actions" / "broken.py").write_text("import os\n\nraise RuntimeError('boom')\n")
    spec, dialogue = load_bot_folder(bot_dir)
    with pytest.raises(ConfigError, match=r"actions/broken\.py:3: importing the actions module failed: "
                                          r"RuntimeError: boom"):
        load_actions(spec, dialogue)

"""The declared-actions fixture's one custom action; the domain also declares ``action_never_written``,
which no module defines and no story, rule or form runs."""

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher


class ActionGiveHint(Action):
    def name(self) -> str:
        return "action_give_hint"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: dict[str, Any]) -> list[dict[str, Any]]:
        dispatcher.utter_message(text="Look behind the painting.")
        return []

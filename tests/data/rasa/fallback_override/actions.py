"""The fallback-override fixture's own action_default_fallback: it counts the fallbacks so far (Rasa's default
one would say utter_default and revert the message; Switchboard's would hand off the second time)."""

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher


class ActionDefaultFallback(Action):
    def name(self) -> str:
        return "action_default_fallback"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: dict[str, Any]) -> list[dict[str, Any]]:
        runs = sum(1 for e in tracker.events if e.get("event") == "action" and e.get("name") == self.name())
        dispatcher.utter_message(text=f"Sorry, I did not get that ({runs + 1}).")
        return []

"""A rasa-sdk action that sends rich messages the ways ``dispatcher.utter_message`` can."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher


class ActionCard(Action):
    def name(self) -> str:
        return "action_card"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[dict[str, Any]]:
        dispatcher.utter_message(
            text="Your loyalty card.", image="https://example.com/card.png",
            attachment="https://example.com/card.pdf",
            buttons=[{"title": "Show the menu", "payload": "/show_menu"},
                     {"title": "Terms", "url": "https://example.com/terms"}],
            json_message={"card": {"number": 7, "points": 120}})
        # A domain response with the call's own image laid over it (as Rasa does).
        dispatcher.utter_message(response="utter_greet", image="https://example.com/wave.png")
        return []

"""The money-transfer fixture's custom action: it reports what rasa-sdk hands it (entities as Rasa shapes
and the slots they filled), so tests can read the shapes back from the reply."""

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.executor import CollectingDispatcher


class ActionCheckTransfer(Action):
    def name(self) -> str:
        return "action_check_transfer"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: dict[str, Any]) -> list[dict[str, Any]]:
        entities = tracker.latest_message.get("entities", [])
        money = [e for e in entities if e["entity"] == "amount-of-money"]
        shown = {
            "money": [(e["value"], e.get("additional_info", {}).get("unit"), e.get("extractor")) for e in money],
            "to": list(tracker.get_latest_entity_values("city", entity_role="to")),
            "from": list(tracker.get_latest_entity_values("city", entity_role="from")),
            "slot_amount": tracker.get_slot("amount-of-money"),
        }
        dispatcher.utter_message(text=repr(shown))
        return []

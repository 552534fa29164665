"""Custom actions of the restaurant form fixture (rasa-sdk, as Rasa projects write them)."""

from typing import Any

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict


class ValidateRestaurantForm(FormValidationAction):
    def name(self) -> str:
        return "validate_restaurant_form"

    def validate_num_people(self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                            domain: DomainDict) -> dict[str, Any]:
        try:
            people = float(slot_value)
        except (TypeError, ValueError):
            dispatcher.utter_message(text="Please give the number of people as a number.")
            return {"num_people": None}
        return {"num_people": people if 1 <= people <= 20 else None}


class ActionAskFeedback(Action):
    def name(self) -> str:
        return "action_ask_feedback"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: dict[str, Any]) -> list[dict[str, Any]]:
        dispatcher.utter_message(text="How was your last visit?", buttons=[
            {"title": "great", "payload": '/inform{"feedback": "great"}'},
            {"title": "bad", "payload": '/inform{"feedback": "bad"}'},
        ])
        return []


class ActionSetPartySize(Action):
    def name(self) -> str:
        return "action_set_party_size"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: dict[str, Any]) -> list[dict[str, Any]]:
        people = tracker.get_slot("num_people")
        if people is None:
            return []  # no party yet: the slot stays unset, so it does not shape the conversation
        return [SlotSet("party_size", "large" if float(people) > 8 else "small")]

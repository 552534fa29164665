# ruff: noqa: UP006, UP019, UP035  (typed the way the Rasa docs write actions: Dict, List, Text)
# Custom actions of the example bot, written for Rasa with rasa-sdk: Switchboard runs this file as is
# (in process, `actions: actions` in bot.yml), and so does `python -m rasa_sdk --actions actions`.
# The order "database" is a small table for the demo; a real bot would call the shop's order API here.
from typing import Any, Dict, List, Text

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

DEMO_ORDERS = {
    "3707955617": "shipped",
    "4587345": "being packed",
    "12345": "being packed",
    "98765": "delivered",
}


class ActionCheckOrderStatus(Action):
    def name(self) -> Text:
        return "action_check_order_status"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: Dict[Text, Any]) -> List[Dict[Text, Any]]:
        order_id = next(tracker.get_latest_entity_values("order_id"), None) or tracker.get_slot("order_id")
        if not order_id:
            dispatcher.utter_message(text="I can check that for you. What is the order number?")
            return []
        status = DEMO_ORDERS.get(order_id)
        if status is None:
            dispatcher.utter_message(
                text=f"I couldn't find order {order_id}. Please check the number in your confirmation email.")
            return [SlotSet("order_status", None)]
        dispatcher.utter_message(text=f"Order {order_id} is {status}. You can follow it under My orders.")
        return [SlotSet("order_status", status)]


class ValidateChangeOrderForm(FormValidationAction):
    def name(self) -> Text:
        return "validate_change_order_form"

    def validate_order_id(self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                          domain: DomainDict) -> Dict[Text, Any]:
        status = DEMO_ORDERS.get(slot_value)
        if status is None:
            dispatcher.utter_message(text=f"I couldn't find order {slot_value}. Please check the number.")
            return {"order_id": None}
        if status in ("shipped", "delivered"):
            dispatcher.utter_message(
                text=f"Order {slot_value} has already {'shipped' if status == 'shipped' else 'arrived'}, so it "
                     f"can't be changed any more. You can return items once you have them.")
            return {"order_id": None}
        return {"order_id": slot_value}

    def validate_order_change(self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                              domain: DomainDict) -> Dict[Text, Any]:
        if len(str(slot_value).split()) < 2:
            dispatcher.utter_message(text="Please describe the change in a few words, e.g. 'add a blue scarf'.")
            return {"order_change": None}
        return {"order_change": slot_value}

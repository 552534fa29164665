# ruff: noqa: UP006, UP019, UP035  (typed the way the Rasa docs write actions: Dict, List, Text)
# Custom actions exactly as a Rasa user writes them; Switchboard runs this file unchanged,
# in process (actions: actions) or on `python -m rasa_sdk --actions actions`.
from typing import Any, Dict, List, Text

from rasa_sdk import Action, FormValidationAction, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher
from rasa_sdk.types import DomainDict

ORDERS = {"12345": "shipped", "55555": "delivered", "99999": "cancelled"}


class ActionCheckOrderStatus(Action):
    def name(self) -> Text:
        return "action_check_order_status"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: Dict[Text, Any]) -> List[Dict[Text, Any]]:
        order_id = tracker.get_slot("order_id") or next(tracker.get_latest_entity_values("order_id"), None)
        if not order_id:
            dispatcher.utter_message(text="Which order do you mean? Please tell me the order number.")
            return []
        status = ORDERS.get(order_id, "being prepared")
        dispatcher.utter_message(text=f"Order {order_id} is {status}.")
        return [SlotSet("order_status", status)]


class ValidateChangeOrderForm(FormValidationAction):
    def name(self) -> Text:
        return "validate_change_order_form"

    def validate_order_id(self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                          domain: DomainDict) -> Dict[Text, Any]:
        if ORDERS.get(slot_value) == "cancelled":
            dispatcher.utter_message(text=f"Order {slot_value} was cancelled, so it can't be changed.")
            return {"order_id": None}
        return {"order_id": slot_value}

# ruff: noqa: UP006, UP019, UP035  (typed the way the Rasa docs write actions: Dict, List, Text)
# Custom actions of the example bot, written for Rasa with rasa-sdk: Switchboard runs this file as is
# (in process, `actions: actions` in bot.yml), and so does `python -m rasa_sdk --actions actions`.
# The order "database" is a small table for the demo; a real bot would call the shop's order API here.
import json
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


def status_of(order_id: Any) -> str | None:
    """The one order lookup every action uses (None: no such order)."""
    return DEMO_ORDERS.get(str(order_id).strip())


class ActionCheckOrderStatus(Action):
    def name(self) -> Text:
        return "action_check_order_status"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: Dict[Text, Any]) -> List[Dict[Text, Any]]:
        order_id = next(tracker.get_latest_entity_values("order_id"), None) or tracker.get_slot("order_id")
        if not order_id:
            dispatcher.utter_message(text="I can check that for you. What is the order number?")
            return []
        problem = order_problem(order_id, "tracked")
        if problem is not None:
            dispatcher.utter_message(text=problem)
            return [SlotSet("order_status", None)]
        status = status_of(order_id)
        dispatcher.utter_message(text=f"Order {order_id} is {status}. You can follow it under My orders.")
        return [SlotSet("order_status", status)]


def order_problem(order_id: Any, purpose: str) -> str | None:
    """Why order ``order_id`` cannot be ``purpose`` ("tracked", "changed", "cancelled", "refunded"), None when it
    can: the one order check of every form and action, so that they always agree about an order."""
    status = status_of(order_id)
    if status is None:
        return f"I couldn't find order {order_id}. Please check the number in your confirmation email."
    sent = status in ("shipped", "delivered")
    if purpose in ("changed", "cancelled") and status == "shipped":
        return (f"Order {order_id} has already shipped, so it can't be {purpose} any more. Once it arrives, you can "
                "return it for a refund.")
    if purpose in ("changed", "cancelled") and status == "delivered":
        return f"Order {order_id} has already arrived, so it can't be {purpose} any more, but you can return it."
    if purpose == "refunded" and not sent:
        return (f"Order {order_id} hasn't shipped yet, so there is nothing to return: cancel it instead and you "
                "get a full refund.")
    return None


def what_instead(order_id: Any) -> List[Dict[Text, Any]]:
    """Buttons for what can be done with an order that cannot be what the customer asked: each carries the
    order number into its form (a payload as Rasa's: ``/intent{"entity": "value"}``)."""
    status = status_of(order_id)
    carried = json.dumps({"order_id": str(order_id)})
    if status == "shipped":
        return [{"title": "Where is it?", "payload": f"/track_order{carried}"}]
    if status == "delivered":
        return [{"title": "Return it for a refund", "payload": f"/get_refund{carried}"}]
    return [{"title": "Cancel it", "payload": f"/cancel_order{carried}"}]


def _checked_order(slot_value: Any, purpose: str, dispatcher: CollectingDispatcher) -> Dict[Text, Any]:
    """The order the form was given, checked. An unknown number is asked again (a typo, most often); an order
    that cannot be ``purpose`` ends the form, with what can be done with it instead (``requested_slot`` None:
    rasa-sdk's way to end a form from its validation, and the form's submit does not run)."""
    problem = order_problem(slot_value, purpose)
    if problem is None:
        return {"order_id": slot_value}
    if status_of(slot_value) is None:
        dispatcher.utter_message(text=problem)
        return {"order_id": None}
    dispatcher.utter_message(text=problem, buttons=what_instead(slot_value))
    return {"order_id": None, "requested_slot": None}


class ValidateChangeOrderForm(FormValidationAction):
    def name(self) -> Text:
        return "validate_change_order_form"

    def validate_order_id(self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                          domain: DomainDict) -> Dict[Text, Any]:
        return _checked_order(slot_value, "changed", dispatcher)

    def validate_order_change(self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                              domain: DomainDict) -> Dict[Text, Any]:
        if len(str(slot_value).split()) < 2:
            dispatcher.utter_message(text="Please describe the change in a few words, e.g. 'add a blue scarf'.")
            return {"order_change": None}
        return {"order_change": slot_value}


class ValidateCancelOrderForm(FormValidationAction):
    def name(self) -> Text:
        return "validate_cancel_order_form"

    def validate_order_id(self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                          domain: DomainDict) -> Dict[Text, Any]:
        return _checked_order(slot_value, "cancelled", dispatcher)


class ValidateTrackOrderForm(FormValidationAction):
    def name(self) -> Text:
        return "validate_track_order_form"

    def validate_order_id(self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                          domain: DomainDict) -> Dict[Text, Any]:
        return _checked_order(slot_value, "tracked", dispatcher)


class ValidateRefundForm(FormValidationAction):
    def name(self) -> Text:
        return "validate_refund_form"

    def validate_order_id(self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                          domain: DomainDict) -> Dict[Text, Any]:
        return _checked_order(slot_value, "refunded", dispatcher)

    def validate_refund_reason(self, slot_value: Any, dispatcher: CollectingDispatcher, tracker: Tracker,
                               domain: DomainDict) -> Dict[Text, Any]:
        if not any(c.isalpha() for c in str(slot_value)):
            dispatcher.utter_message(text="Please tell me the reason in a few words, e.g. 'it arrived damaged'.")
            return {"refund_reason": None}
        return {"refund_reason": str(slot_value).strip()}


class ActionCancelOrder(Action):
    """The cancel form's submit: nothing when the customer said no; else the order, checked by the form, is
    checked again (it may have shipped since) and cancelled."""

    def name(self) -> Text:
        return "action_cancel_order"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: Dict[Text, Any]) -> List[Dict[Text, Any]]:
        order_id = tracker.get_slot("order_id")
        if tracker.get_slot("cancel_confirmed") is False:
            dispatcher.utter_message(text=f"OK, I won't cancel order {order_id}. Is there anything else I can help "
                                          "you with?")
            return []
        problem = order_problem(order_id, "cancelled")
        if problem is not None:
            dispatcher.utter_message(text=problem)
            return [SlotSet("order_id", None)]
        dispatcher.utter_message(text=f"Done: order {order_id} is cancelled. You'll get a confirmation email, and any "
                                      "payment goes back to your original payment method within 5 business days.")
        return []


# Where the shop ships (kb/shipping.md), and countries customers ask about that it does not ship to.
SHIPS_TO = {
    "austria", "belgium", "bulgaria", "croatia", "cyprus", "czechia", "czech republic", "denmark", "estonia",
    "finland", "france", "germany", "greece", "hungary", "ireland", "italy", "latvia", "lithuania", "luxembourg",
    "malta", "netherlands", "the netherlands", "holland", "poland", "portugal", "romania", "slovakia", "slovenia",
    "spain", "sweden", "united kingdom", "the united kingdom", "uk", "the uk", "great britain", "britain", "england",
    "scotland", "wales", "northern ireland", "switzerland", "norway",
}
NOT_SHIPPED_TO = {
    "us", "usa", "the us", "the usa", "united states", "the united states", "america", "canada", "mexico",
    "brazil", "argentina", "australia", "new zealand", "japan", "china", "india", "singapore", "south korea",
    "korea", "russia", "ukraine", "turkey", "israel", "egypt", "south africa", "nigeria", "morocco", "iceland",
    "serbia", "albania", "bosnia", "north macedonia", "montenegro", "uae", "united arab emirates", "saudi arabia",
}
WHERE_WE_SHIP = "all EU countries, the United Kingdom, Switzerland and Norway"
SHIPPING_TERMS = ("Standard delivery takes 3 to 5 business days and is free for orders over 50 euros; express "
                  "takes 1 to 2 business days and costs 9 euros.")
_WITH_THE = {"us", "usa", "uk", "uae", "united states", "united kingdom", "netherlands", "united arab emirates"}


def _named(place: str) -> str:
    """A country as a sentence names it, however it was typed: "the US" (for "us"), "Canada" (for "canada")."""
    key = place.lower()
    shown = key.upper() if key in ("us", "usa", "uk", "uae") else (place.title() if place.islower() else place)
    return f"the {shown}" if key in _WITH_THE else shown


class ActionDeliveryOptions(Action):
    """Where and how the shop delivers. A country in this message is answered yes or no (never "if X is one of
    them"); one kept from an earlier message is not reused: the customer may be asking about something else."""

    def name(self) -> Text:
        return "action_delivery_options"

    def run(self, dispatcher: CollectingDispatcher, tracker: Tracker,
            domain: Dict[Text, Any]) -> List[Dict[Text, Any]]:
        country = next(tracker.get_latest_entity_values("delivery_country"), None)
        place = str(country).strip() if country else ""
        key = place.lower().rstrip(".?!")
        if key in SHIPS_TO:
            text = (f"Yes, we ship to {_named(place)}. {SHIPPING_TERMS} The options for your address are shown at "
                    "checkout.")
        elif key in NOT_SHIPPED_TO:
            text = f"Sorry, we don't ship to {_named(place)}: we deliver to {WHERE_WE_SHIP} only."
        elif place:
            text = (f"We deliver to {WHERE_WE_SHIP} only, so to {_named(place)} only if it is in one of them. "
                    f"{SHIPPING_TERMS}")
        else:
            text = (f"We deliver to {WHERE_WE_SHIP}, with standard and express shipping and pick-up points in many "
                    f"areas. {SHIPPING_TERMS} The options for your address are shown at checkout.")
        dispatcher.utter_message(text=text)
        return []

from rasa_sdk import Action
from settings import SHOP_NAME  # the project folder's own module

from actions.hours import ActionOpeningHours  # noqa: F401 - the package by its own name


class ActionGreet(Action):
    def name(self):
        return "action_greet"

    def run(self, dispatcher, tracker, domain):
        dispatcher.utter_message(text=f"Welcome to {SHOP_NAME}!")
        return []

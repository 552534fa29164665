from rasa_sdk import Action


class ActionOpeningHours(Action):
    def name(self):
        return "action_opening_hours"

    def run(self, dispatcher, tracker, domain):
        import settings  # imported when the action runs

        dispatcher.utter_message(text=f"{settings.SHOP_NAME} is open {settings.HOURS}.")
        return []

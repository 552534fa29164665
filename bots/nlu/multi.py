"""Two requests in one message: "I want to cancel order 12345 and also update my email address".

A sentence classifier gives such a message one intent, often neither of the two (that one read as
change_shipping_address at 0.56). Rasa needs every combination written as its own intent (``cancel+update``)
with examples; Switchboard finds the two requests by itself, like this:

- The message is cut once, at the first conjunction that leaves at least ``MIN_WORDS`` words on each side:
  "and also", "and then", "and", "also", "plus", "as well as" (after a space or a punctuation mark: "…, and
  also …", "…. Also, …"), else between two questions ("where is my order 98765? how do I get an invoice?": a
  question mark, then a question word or a second question mark). Any other sentence boundary is no cut:
  "where is my order? it's 3707955617" is one request and its detail.
- Both parts are read by the same model, through the same out-of-scope rule as a whole message. The message has
  two requests when the parts read as two different intents of the bot, each in scope and each with a confidence
  of at least ``MIN_CONFIDENCE``. Then its intent is the first part's (what the customer asked first, with the
  first part's ranking; entities stay those of the whole message) and ``Understanding.also`` names the second.
- Anything less (a part not understood, or both parts the same intent: "my card was charged and the payment
  failed") leaves the message as one request.

Only bot.yml bots use it (``multi_intent: false`` turns it off); a Rasa project keeps Rasa's one intent per
message, which its test stories expect. ``switchboard evaluate`` reads through the same path. The extra model run
is made only for a message with a boundary: most messages cost nothing more. bench/multi_intent.py measures how
often single requests are taken for two.
"""

from __future__ import annotations

import re

MIN_WORDS = 3  # each part: "track order 12345" yes, "and thanks" no
MIN_CONFIDENCE = 0.8  # each part's intent confidence (softmax), besides the bot's out-of-scope rule
_BOUNDARY = re.compile(r"(?:[.?!;,]\s*|\s+)(?:and also|and then|as well as|and|also|plus),?\s+", re.IGNORECASE)
_WORDS = re.compile(r"\w+")
_QUESTION_END = re.compile(r"\?\s+")
_QUESTION = re.compile(r"^\s*(?:what|how|when|where|why|who|which|can|could|do|does|did|is|are|will|would|should|"
                       r"may|have|has)\b|\?\s*$", re.IGNORECASE)


def is_question(text: str) -> bool:
    """Whether ``text`` reads as a question: a question word first ("can I pay with apple pay"), or a question
    mark last. Also what the dialogue asks of a message a form did not understand (bots/dialogue/engine.py)."""
    return _QUESTION.search(text) is not None


def split(text: str) -> tuple[str, str] | None:
    """The message's two parts, cut at its first conjunction with ``MIN_WORDS`` words on each side, else between
    two questions; None when it has neither."""
    for m in _BOUNDARY.finditer(text):
        first, second = text[:m.start()].strip(), text[m.end():].strip()
        if len(_WORDS.findall(first)) >= MIN_WORDS and len(_WORDS.findall(second)) >= MIN_WORDS:
            return first, second
    for m in _QUESTION_END.finditer(text):
        first, second = text[:m.start() + 1].strip(), text[m.end():].strip()
        if (len(_WORDS.findall(first)) >= MIN_WORDS and len(_WORDS.findall(second)) >= MIN_WORDS
                and is_question(second)):
            return first, second
    return None

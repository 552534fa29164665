"""Request bodies and frames that carry what people wrote (customer messages, button payloads,
user ids, agent replies, corrections).

``TextBody`` makes every string of the raw JSON valid Unicode (``bots.types.valid_unicode``: a
lone surrogate such as the JSON escape ``\\ud800`` becomes U+FFFD) before pydantic checks the
fields. Its length and pattern checks cannot read a lone surrogate and would refuse the message
(a 422 that "cannot parse raw data as a unicode string"), where the rule is that it is stored
with U+FFFD in its place, as the runtime stores it whichever channel brought it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, model_validator

from bots.types import valid_unicode


class TextBody(BaseModel):
    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        return valid_unicode(data)

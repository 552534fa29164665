"""Which rich parts of a reply a channel may show as they are, and which it must turn into text.

``BotResponse`` carries buttons (a payload, or a ``url`` for a link button), an ``image``, an
``attachment`` and a ``custom`` payload. Every channel renders them in its own way
(docs/channels.md), and the rule they share is DESIGN.md's: what a channel cannot show is shown as
text (a button's title, the image's or attachment's link), never dropped.

The URL checks live here, once, because a URL that a channel's API refuses fails the whole message
(Slack's ``invalid_blocks``, Telegram's ``BUTTON_URL_INVALID``): a link that is not ``http(s)://``
with a host, or longer than the channel takes, is shown as text instead. The web widget applies
the same rules in the browser (connectors/static/widget.js), where ``data:`` images are also
shown inline.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from bots.types import BotResponse, Button

_HTTP = re.compile(r"^https?://[^\s/?#@]+(?:[/?#]\S*)?$", re.IGNORECASE)
_DATA_IMAGE = re.compile(r"^data:image/(png|jpeg|gif|webp);base64,([A-Za-z0-9+/=\s]+)$", re.IGNORECASE)
MAX_DATA_IMAGE_BYTES = 10 * 1024 * 1024  # what Telegram's sendPhoto takes as an upload


def http_url(url: str | None, max_chars: int = 3000) -> bool:
    """Whether ``url`` is an absolute http(s) URL with a host, without spaces, of at most ``max_chars``."""
    return url is not None and len(url) <= max_chars and _HTTP.match(url) is not None


def data_image(url: str | None) -> tuple[bytes, str] | None:
    """A ``data:image/(png|jpeg|gif|webp);base64,...`` URL's bytes and file extension, or None (not such a
    URL, not valid base64, or over ``MAX_DATA_IMAGE_BYTES``)."""
    m = _DATA_IMAGE.match(url or "")
    if m is None or len(m.group(2)) > MAX_DATA_IMAGE_BYTES * 4 // 3 + 8:
        return None
    try:
        data = base64.b64decode("".join(m.group(2).split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return (data, m.group(1).lower().replace("jpeg", "jpg")) if data else None


@dataclass(frozen=True)
class Plan:
    """What a channel shows natively of one reply, and the text that carries the rest.

    ``text`` is the reply's text followed by what is degraded: the titles of buttons that cannot be
    shown (with their link), the image's link when the image is not shown, the attachment's link
    when it is not sent as a file or link of its own."""

    text: str
    buttons: tuple[tuple[int, Button], ...]   # (index in response.buttons, button) shown as buttons
    image: str | None                          # shown as an image
    attachment: str | None                     # shown as a file / link of its own


def plan(response: BotResponse, *, image_ok: bool, attachment_ok: bool,
         button_ok: bool | None = None, max_url_chars: int = 3000) -> Plan:
    """Split ``response`` into what the channel shows natively and the degraded text.

    ``image_ok`` / ``attachment_ok``: the channel shows the (already checked) image / attachment;
    a link button is shown when its URL passes ``http_url``; a payload button always, unless
    ``button_ok`` is False (the channel has no buttons)."""
    shown: list[tuple[int, Button]] = []
    lines = [response.text] if response.text.strip() else []
    degraded: list[Button] = []
    for i, b in enumerate(response.buttons):
        native = (http_url(b.url, max_url_chars) if b.url else True) and button_ok is not False
        if native:
            shown.append((i, b))
        else:
            degraded.append(b)
    lines.extend(f"{b.title}: {b.url}" if b.url else f"- {b.title}" for b in degraded)
    if response.image and not image_ok:
        lines.append(f"Image: {_shown_url(response.image)}")
    if response.attachment and not attachment_ok:
        lines.append(f"Attachment: {_shown_url(response.attachment)}")
    return Plan(text="\n".join(lines), buttons=tuple(shown), image=response.image if image_ok else None,
                attachment=response.attachment if attachment_ok else None)


def _shown_url(url: str) -> str:
    """A link as text; an inline ``data:`` URL (kilobytes of base64, no use as text) is named, not printed."""
    return "(inline data, not shown on this channel)" if url[:5].lower() == "data:" else url

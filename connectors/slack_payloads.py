"""Shape checks for Slack requests, after the signature and before slack-bolt: Slack's own
payloads always pass; anything else gets a 400 with the reason instead of failing deep
inside a listener."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

_EVENT_STRINGS = ("type", "subtype", "channel", "channel_type", "user", "text", "ts", "thread_ts", "bot_id")
_ENVELOPE_STRINGS = ("type", "team_id", "event_id", "api_app_id", "challenge", "token")


def _strings(doc: Mapping[str, Any], keys: tuple[str, ...], where: str) -> str | None:
    for key in keys:
        if key in doc and not isinstance(doc[key], str):
            return f"{where}.{key} must be a string"
    return None


def _interaction(payload: Any) -> str | None:
    if not isinstance(payload, dict):
        return "payload must be a JSON object"
    problem = _strings(payload, ("type", "trigger_id"), "payload")
    if problem:
        return problem
    for key in ("team", "user", "channel", "container", "message"):
        if key in payload and not isinstance(payload[key], dict):
            return f"payload.{key} must be an object"
    actions = payload.get("actions", [])
    if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
        return "payload.actions must be a list of objects"
    for action in actions:
        problem = _strings(action, ("action_id", "value", "action_ts", "block_id", "type"), "payload.actions[]")
        if problem:
            return problem
        if "text" in action and not isinstance(action["text"], dict):
            return "payload.actions[].text must be an object"
    for key in ("channel", "container", "message", "team", "user"):
        problem = _strings(payload.get(key) or {}, ("id", "channel_id", "thread_ts", "ts", "domain"), f"payload.{key}")
        if problem:
            return problem
    return None


def malformed_request(body: bytes, content_type: str) -> str | None:
    """What is wrong with an Events API / interactivity body, or None if its shape is Slack's."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "the body is not UTF-8"
    # slack-bolt reads a body that starts with "{" as JSON whatever its content type says.
    if content_type.startswith("application/x-www-form-urlencoded") and not text.startswith("{"):
        fields = parse_qs(text)
        if "payload" not in fields:
            return None  # bolt answers ssl_check and other form requests itself
        try:
            return _interaction(json.loads(fields["payload"][0]))
        except json.JSONDecodeError:
            return "payload is not JSON"
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return "the body is not JSON"
    if not isinstance(doc, dict):
        return "the body must be a JSON object"
    problem = _strings(doc, _ENVELOPE_STRINGS, "body")
    if problem:
        return problem
    if "authorizations" in doc and not isinstance(doc["authorizations"], list):
        return "body.authorizations must be a list"
    if "event" in doc:
        event = doc["event"]
        if not isinstance(event, dict):
            return "body.event must be an object"
        problem = _strings(event, _EVENT_STRINGS, "event")
        if problem:
            return problem
        if "blocks" in event and not isinstance(event["blocks"], list):
            return "event.blocks must be a list"
    return None

"""The runtime's exceptions. One root; user-facing messages say what to do."""

from __future__ import annotations


class SwitchboardError(Exception):
    """Root of every error Switchboard raises on purpose."""


class ConfigError(SwitchboardError):
    """Bad configuration or bot data. ``problems`` lists each one as ``file:line: message``."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class ArtifactError(SwitchboardError):
    """A model artifact is missing or unusable."""


class StoreUnavailable(SwitchboardError):
    """The conversation store cannot be reached; channels answer 503 so the sender retries."""


class ConversationNotFound(SwitchboardError):
    """No such conversation (or turn) of that bot (HTTP 404)."""


class InvalidChange(SwitchboardError):
    """A change asked of a conversation (an agent's reply, a correction) that cannot be made as
    asked; the message names the field and says why (HTTP 422)."""


class Conflict(SwitchboardError):
    """Another agent got there first (HTTP 409): the conversation is assigned to someone else; the
    message names who has it."""


class NotDelivered(SwitchboardError):
    """An agent's reply is stored in the transcript, but the customer's channel did not take it
    (HTTP 502): the agent sees it did not reach the customer."""


class Busy(SwitchboardError):
    """Back-pressure: the runtime has too much in flight; answer 503 with Retry-After."""

    def __init__(self, retry_after_s: float = 1.0) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"busy, retry after {retry_after_s:g}s")

"""Store, acknowledge, reply in the background: the flow of every channel whose sender waits only
for an acknowledgement (Slack, Telegram), written once.

``WebhookFlow.accept`` stores the message (``Inbox.accept``). When it returns the message is safe
and the channel acknowledges it; the sender's deadline (Slack's is 3 s) is never spent on the
answer or on the channel's API. When the store is down or the runtime busy it raises
``StoreUnavailable`` or ``Busy`` (counted as rejected): the channel answers 503 and the sender
redelivers. A redelivery whose turn is done, or whose reply this process is already making, is
counted as a duplicate and not answered again (the store decides across replicas).

Otherwise the answer is made and sent after the ack, one task per message, which ``aclose``
waits for at shutdown. ``aside`` runs best-effort calls while the answer is made (typing
feedback); ``send`` posts the answer through the channel's API with ``outgoing.call_with_retry``
and the channel's classifier, which retries what is worth it and counts and logs a final
failure: ``api_errors`` are the exceptions that failure ends with, so they are not logged twice.
Anything else is a bug and is logged with its traceback. Either way the answer stays in the
transcript, and a turn that could not be answered stays pending for the conversation's next message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence
from typing import Any

from bots.errors import Busy, StoreUnavailable
from bots.store.base import Turn
from bots.types import BotResponse, UserMessage
from connectors.base import Inbox

log = logging.getLogger("switchboard.webhook")

Send = Callable[[Sequence[BotResponse]], Awaitable[None]]
Aside = Callable[[], Coroutine[Any, Any, None]]


class ReplyTasks:
    """The replies being made: one task per message (never two for one message in this process)."""

    def __init__(self) -> None:
        self._tasks: dict[Hashable, asyncio.Task[None]] = {}

    def running(self, key: Hashable) -> bool:
        return key in self._tasks

    def start(self, key: Hashable, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None))

    async def aclose(self, timeout_s: float) -> None:
        """Wait for the replies in progress; cancel what is left after ``timeout_s``."""
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=timeout_s)
        for task in late:
            task.cancel()
        if late:
            log.warning("replies cancelled at shutdown", extra={"count": len(late)})
            await asyncio.gather(*late, return_exceptions=True)


class WebhookFlow:
    def __init__(self, inbox: Inbox, channel: str, *, api_errors: tuple[type[BaseException], ...]) -> None:
        self._inbox = inbox
        self._channel = channel
        self._api_errors = api_errors
        self._replies = ReplyTasks()

    async def accept(self, message: UserMessage, send: Send, *, aside: Aside | None = None) -> bool:
        """Store ``message`` and start its answer; False for a redelivery (nothing started).
        Raises ``StoreUnavailable`` or ``Busy``: answer 503 so that the sender redelivers."""
        metrics = self._inbox.metrics
        try:
            turn = await self._inbox.accept(message)
        except (StoreUnavailable, Busy) as exc:
            metrics.rejected.labels(self._channel, "unavailable").inc()
            log.warning("message refused, the sender redelivers", extra={"channel": self._channel,
                                                                          "error": str(exc)})
            raise
        key = (message.ref.bot, message.ref.conversation_id, message.message_id)
        if turn.status == "done" or self._replies.running(key):
            metrics.duplicates.labels(message.ref.bot, self._channel).inc()
            return False  # answered (or being answered) already
        self._replies.start(key, self._reply(message, turn, send, aside))
        return True

    async def _reply(self, message: UserMessage, turn: Turn, send: Send, aside: Aside | None) -> None:
        where = {"channel": self._channel, "bot": message.ref.bot, "conversation_id": message.ref.conversation_id}
        side = asyncio.get_running_loop().create_task(aside()) if aside is not None else None
        try:
            responses = await self._inbox.process(message, turn)
        except Exception:
            # The turn stays in the store (pending): the conversation's next message answers it.
            log.exception("message stored but not answered", extra=where)
            return
        finally:
            if side is not None:
                await asyncio.gather(side, return_exceptions=True)  # best effort: never stops the answer
        try:
            await send(responses)
        except self._api_errors:
            return  # counted and logged by call_with_retry
        except Exception:
            log.exception("answer not sent", extra=where)

    async def aclose(self) -> None:
        await self._replies.aclose(self._inbox.limits.drain_timeout_s)

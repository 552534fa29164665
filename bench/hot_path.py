"""CPU time of the pieces of a message's hot path, each measured alone in this process (no server,
no load generator): what bench/load.py's "CPU per message" is made of.

    .venv/bin/python bench/hot_path.py --bot examples/support --runs 3

Prints, per piece, the CPU time (user+system of this process, ``time.process_time``) per message or per
call, the median of ``--runs`` repetitions with the spread (min-max):

- **store**: the embedded SQLite store's three operations of a message, as the runtime makes them
  (enqueue taking the lease, read the new turns, complete and release), on ``--messages`` messages over 50
  conversations, with the shipped bench questions as texts and an answer of two questions' length;
  the store's checkpoints (worker thread) count in whichever operation runs meanwhile;
- **NLU model**: the bot's served model (``OnnxNLU.predict``, 1 thread) per text, in batches of 1 to 16:
  what a text costs alone and in a batch;
- **thread hop**: ``asyncio.to_thread`` of a function that does nothing, on uvloop: what handing work to
  a thread and back costs (each NLU batch takes one);
- **runtime**: ``Runtime.handle`` of the bot (NLU micro-batched on its workers, dialogue, answers, the
  embedded SQLite store; no HTTP), 50 customers each sending its next message once answered
  (``--runtime-messages``): CPU per message of the whole process and of the event loop's thread alone
  (``--only-runtime`` measures just this; the process is tuned as ``switchboard serve`` tunes it);
- **dialogue**: ``Tracker.replay`` of a 200-event history (the most a dialogue state keeps) over the
  bot's domain (turns of user message, NLU, one of the first 10 intents, an answer action and its text,
  then listening); the replay ``decide`` does every turn, carried over from the previous turn's
  (``WindowReplay``, the window full and sliding by one such turn a call); and the bot's policy ensemble
  predicting the next action after a user message of each of those intents (``Ensemble.predict``,
  without a learned policy model), which ``decide`` does for each action of a turn.

The figures depend on the machine and on what else runs on it (the load average is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import read_questions  # noqa: E402
from bots.artifact import resolve_artifact  # noqa: E402
from bots.events import ACTION, BOT, NLU, USER, Event  # noqa: E402
from bots.settings import Settings  # noqa: E402
from bots.store.base import SummaryUpdate  # noqa: E402
from bots.store.sqlite import SQLiteStore  # noqa: E402
from connectors.cli import tune_serving_process  # noqa: E402

OPS = ("enqueue", "load", "complete")


async def store_costs(texts: list[str], messages: int) -> dict[str, float]:
    """CPU ms per message of each store operation (the first fifth of the messages warm up)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(Path(tmp) / "conversations.db")
        await store.start()
        spent = dict.fromkeys(OPS, 0.0)
        warmup = messages // 5
        for i in range(messages):
            await asyncio.sleep(0)  # the event loop goes on between messages, as it does serving
            cid, mid, now = f"c{i % 50}", f"m{i}", time.time()
            text = texts[i % len(texts)]
            marks = [time.process_time()]
            result = await store.enqueue("bench", cid, "web", "user", {}, mid,
                                         Event(USER, {"text": text, "message_id": mid, "channel": "web"}, now),
                                         lease_owner="owner", lease_ttl_s=2.0)
            assert result.leased, "the lease was released with the conversation's last answer"
            marks.append(time.process_time())
            await store.load("bench", cid, last_n=200, after_seq=result.turn.seq - 1)
            marks.append(time.process_time())
            answer = f"{texts[(i + 1) % len(texts)]} {texts[(i + 2) % len(texts)]}"
            ranking = [{"name": f"intent_{k}", "confidence": 0.01} for k in range(10)]
            events = [Event(NLU, {"intent": "intent_0", "confidence": 0.9, "entities": [], "ranking": ranking}, now),
                      Event(ACTION, {"name": "utter_answer"}, now), Event(BOT, {"text": answer}, now),
                      Event(ACTION, {"name": "action_listen"}, now)]
            await store.complete("bench", cid, result.turn.seq, events,
                                 SummaryUpdate(last_intent="intent_0", confidence=0.9), release_lease_of="owner")
            marks.append(time.process_time())
            if i >= warmup:
                for op, start, end in zip(OPS, marks, marks[1:], strict=False):
                    spent[op] += end - start
        await store.aclose()
    return {op: 1000 * s / (messages - warmup) for op, s in spent.items()}


def nlu_costs(bot: Path, texts: list[str], per_size: int) -> dict[int, float]:
    """CPU ms per text of the served model, by batch size."""
    from bots.nlu.model import OnnxNLU

    model = OnnxNLU.load(resolve_artifact(bot), threads=1)
    model.predict(texts[:16])  # warm
    costs = {}
    for size in (1, 2, 4, 8, 16):
        started, done = time.process_time(), 0
        while done < per_size:
            model.predict(texts[done % len(texts): done % len(texts) + size])
            done += size
        costs[size] = 1000 * (time.process_time() - started) / done
    return costs


async def runtime_costs(bot: Path, texts: list[str], messages: int, customers: int = 50) -> tuple[float, float]:
    """CPU ms per message of the whole runtime without HTTP: ``Runtime.handle`` of the example bot (NLU
    micro-batched, dialogue, answers, the embedded SQLite store), ``customers`` conversations each sending
    its next message once answered (the first fifth warm up). Returns (the process: every thread; the
    event loop's thread alone)."""
    from bots.metrics import Metrics
    from bots.runtime import Runtime
    from bots.settings import Settings
    from bots.types import ConversationRef, UserMessage

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        store = SQLiteStore(Path(tmp) / "conversations.db")
        await store.start()
        runtime = Runtime(settings, store, Metrics())
        await runtime.load_bot(bot)
        name = next(iter(runtime.bots))
        sent = 0
        marks: list[tuple[float, float]] = []
        warmup = messages // 5

        async def customer(k: int) -> None:
            nonlocal sent
            while sent < messages:
                i, sent = sent, sent + 1
                if i == warmup:
                    marks.append((time.process_time(), time.thread_time()))
                ref = ConversationRef(bot=name, channel="web", conversation_id=f"c{k}")
                await runtime.handle(UserMessage(ref=ref, message_id=f"m{i}", text=texts[i % len(texts)]))

        await asyncio.gather(*(customer(k) for k in range(customers)))
        marks.append((time.process_time(), time.thread_time()))
        await runtime.aclose()
    (p0, t0), (p1, t1) = marks
    n = messages - warmup
    return 1000 * (p1 - p0) / n, 1000 * (t1 - t0) / n


async def hop_cost(calls: int) -> float:
    """CPU µs of one ``asyncio.to_thread`` round trip."""
    started = time.process_time()
    for _ in range(calls):
        await asyncio.to_thread(int)
    return 1e6 * (time.process_time() - started) / calls


def dialogue_costs(bot: Path, calls: int) -> tuple[float, float, float]:
    """CPU ms of one ``Tracker.replay`` of a 200-event history, of a turn's replay carried over
    (``WindowReplay``) and of one ``Ensemble.predict``."""
    from bots.dialogue.policies import Ensemble, Tracker, WindowReplay
    from bots.dialogue.state import State
    from bots.loader import load_bot_folder

    _, dialogue = load_bot_folder(bot)
    intents = list(dialogue.domain.intents)[:10] or ["greet"]

    def turns(n: int) -> list[list[Event]]:
        return [[Event(USER, {"text": "hello"}, float(k)),
                 Event(NLU, {"intent": intents[k % len(intents)], "confidence": 0.9, "entities": []}, float(k)),
                 Event(ACTION, {"name": "utter_answer"}, float(k)), Event(BOT, {"text": "an answer"}, float(k)),
                 Event(ACTION, {"name": "action_listen"}, float(k))] for k in range(n)]

    history = [e for turn in turns(40) for e in turn][:200]
    Tracker.replay(dialogue.domain, history)  # warm
    started = time.process_time()
    for _ in range(calls):
        Tracker.replay(dialogue.domain, history)
    replay = 1000 * (time.process_time() - started) / calls
    state, cache, ahead = State(), WindowReplay(), turns(40 + calls)
    for turn in ahead[:40]:  # the window full
        for event in turn:
            state.apply(event)
    cache.tracker(dialogue.domain, state.history, state.history_start)
    spent = 0.0
    for turn in ahead[40:]:
        for event in turn:
            state.apply(event)
        started = time.process_time()
        cache.tracker(dialogue.domain, state.history, state.history_start)
        spent += time.process_time() - started
    carried = 1000 * spent / calls
    ensemble = Ensemble.build(dialogue.domain, dialogue.stories, dialogue.policy, None)
    trackers = []
    for intent in intents:
        tracker = Tracker.replay(dialogue.domain, history)
        tracker.user(intent, ())
        trackers.append(tracker)
        ensemble.predict(tracker)  # warm
    started = time.process_time()
    for _ in range(calls):
        for tracker in trackers:
            ensemble.predict(tracker)
    return replay, carried, 1000 * (time.process_time() - started) / (calls * len(trackers))


def _spread(values: list[float], digits: int) -> str:
    median = statistics.median(values)
    return f"{median:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bot", type=Path, default=ROOT / "examples" / "support", help="a trained bot folder")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=1500, help="messages through the store per run")
    parser.add_argument("--texts", type=int, default=480, help="texts through the model per batch size and run")
    parser.add_argument("--runtime-messages", type=int, default=3000,
                        help="messages through Runtime.handle per run, 50 customers (0: skip)")
    parser.add_argument("--only-runtime", action="store_true", help="measure Runtime.handle only")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.messages < 5 or args.texts < 16:
        parser.error("--runs at least 1, --messages at least 5, --texts at least 16")
    texts = read_questions()
    tune_serving_process(Settings())  # as `switchboard serve`: BLAS on one thread, the young-generation GC
    print(f"load average {os.getloadavg()[0]:.2f}, cores {os.cpu_count()}, {args.runs} run(s); CPU time, median "
          "(min-max)", flush=True)
    runs: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        runs.setdefault(name, []).append(value)

    for _ in range(args.runs):
        if not args.only_runtime:
            for op, ms in uvloop.run(store_costs(texts, args.messages)).items():
                add(f"store {op} (ms/message)", ms)
            for size, ms in nlu_costs(args.bot, texts, args.texts).items():
                add(f"NLU model, batches of {size} (ms/text)", ms)
            add("thread hop, asyncio.to_thread (µs/call)", uvloop.run(hop_cost(2000)))
            replay, carried, predict = dialogue_costs(args.bot, 500)
            add("dialogue Tracker.replay, 200 events (ms/turn)", replay)
            add("dialogue replay carried over, window full (ms/turn)", carried)
            add("dialogue Ensemble.predict (ms/prediction)", predict)
        if args.runtime_messages:
            process, loop = uvloop.run(runtime_costs(args.bot, texts, args.runtime_messages))
            add("runtime, Runtime.handle, all threads (ms/message)", process)
            add("runtime, the event loop's thread (ms/message)", loop)
    if not args.only_runtime:
        store_total = [sum(values) for values in zip(*(runs[f"store {op} (ms/message)"] for op in OPS), strict=True)]
        runs["store, the three together (ms/message)"] = store_total
    digits: Callable[[str], int] = lambda name: 0 if "µs" in name else 3  # noqa: E731
    for name, values in runs.items():
        print(f"{name:<44} {_spread(values, digits(name))}")


if __name__ == "__main__":
    main()

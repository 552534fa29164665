"""Memory plateau: does a replica's RSS stop growing once its dialogue-state cache is full?

Starts one `switchboard serve` (embedded store, or --mongodb-uri) and drives rounds of new
conversations through the web connector, 50 at a time, printing the server's RSS after each round.
With the default cache of 1,000 conversations, RSS should grow for the first 1,000 conversations
and then stay level; `--state-cache` makes the plateau come sooner (for a slow test database).

    python bench/memory.py --bot examples/support --rounds 15 --conversations 200 --messages 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from load import _Client, read_questions, rss_mb, run_server, server_env  # noqa: E402

from bots.botspec import load_bot  # noqa: E402
from tests.fixtures.server import free_port  # noqa: E402

TEXTS = read_questions()  # the questions bench/load.py's customers say (bench/data/bitext_questions.txt)


async def one_round(port: int, bot: str, round_: int, conversations: int, messages: int) -> int:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for c in range(round_ * conversations, (round_ + 1) * conversations):
        queue.put_nowait(c)
    failures = 0

    async def worker() -> None:
        nonlocal failures
        client = _Client("127.0.0.1", port)
        try:
            while not queue.empty():
                c = queue.get_nowait()
                for i in range(messages):
                    body = json.dumps({"conversation_id": f"mem-{c}", "message_id": f"m{i}",
                                       "text": TEXTS[(c * messages + i) % len(TEXTS)]})
                    status, _ = await client.post(f"/bots/{bot}/webhooks/web", body.encode())
                    failures += status != 200
        finally:
            await client.close()

    await asyncio.gather(*(worker() for _ in range(min(50, conversations))))
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bot", type=Path, default=ROOT / "examples" / "support")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--conversations", type=int, default=200, help="new conversations per round")
    parser.add_argument("--messages", type=int, default=20, help="messages per conversation")
    parser.add_argument("--state-cache", type=int, help="SWITCHBOARD_STATE_CACHE (default: the server's, 1000)")
    parser.add_argument("--mongodb-uri", help="use this MongoDB instead of the embedded store")
    args = parser.parse_args()

    spec = load_bot(args.bot)
    data_dir = Path(tempfile.mkdtemp(prefix="switchboard-memory-"))
    env = server_env(data_dir, args.mongodb_uri)
    if args.state_cache is not None:
        env["SWITCHBOARD_STATE_CACHE"] = str(args.state_cache)
    port = free_port()
    proc, ready_s = run_server([sys.executable, "-m", "connectors.cli", "serve", str(args.bot), "--port", str(port)],
                               env, f"http://127.0.0.1:{port}")
    print(f"bot {spec.name}, store {'MongoDB' if args.mongodb_uri else 'embedded'}, state cache "
          f"{args.state_cache or 'default'}; rounds of {args.conversations} new conversations x {args.messages} "
          f"messages; ready in {ready_s:.1f} s, RSS {rss_mb(proc.pid):.1f} MB", flush=True)
    try:
        for r in range(args.rounds):
            started = time.monotonic()
            failures = asyncio.run(one_round(port, spec.name, r, args.conversations, args.messages))
            print(f"round {r + 1:3d}  conversations {(r + 1) * args.conversations:6d}  "
                  f"{time.monotonic() - started:6.1f} s  failures {failures}  RSS {rss_mb(proc.pid):7.1f} MB",
                  flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

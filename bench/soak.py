"""Soak: the chaos harness run for a long time (default 30 minutes; not part of CI).

Two `switchboard serve` replicas share a MongoDB-protocol server (SecantusDB, started here);
customers keep chatting in new conversations; once per round one replica is SIGKILLed and
restarted, and every few rounds the database is restarted. Reports, per interval, throughput
and p99 latency, and RSS of each replica, then the growth of RSS over the run and the
exactly-once check of every conversation.

    python bench/soak.py --minutes 30 --bot examples/support
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.load import rss_mb  # noqa: E402
from bots.botspec import load_bot  # noqa: E402
from tests.fixtures.chaos import Chaos, ChaosPlan, ChaosReport  # noqa: E402
from tests.fixtures.mongo import SecantusServer  # noqa: E402
from tests.fixtures.server import ServeProcess  # noqa: E402

TOKEN = "soak-admin-token-0123456789abcdef"
# What the soak's customers say to examples/support: questions it is trained for, none that asks for
# a human or is out of scope (two uncertain messages in a row rightly hand a conversation to a person,
# after which the bot stays silent: the harness checks one answer per message). Checked by sending
# them in random orders: one answer each, forms included.
SUPPORT_TEXTS = (
    "I want to cancel my order 123", "what payment methods do you accept", "I need a refund for order 98765",
    "how long does delivery take", "send me the invoice 55555", "I forgot my password",
    "how do I change my shipping address", "where is my package", "track order 55", "please cancel order 4411",
    "where is my order", "I want to open a premium account", "my payment did not go through",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bot", type=Path, default=ROOT / "examples" / "support")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--round-conversations", type=int, default=200)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--db-restart-every", type=int, default=3, help="restart the database every N rounds")
    args = parser.parse_args()

    spec = load_bot(args.bot)
    root = Path(tempfile.mkdtemp(prefix="switchboard-soak-"))
    (root / "db").mkdir()
    db = SecantusServer(root / "db")
    db.start()
    env = {"SWITCHBOARD_MONGODB_URI": db.uri(), "SWITCHBOARD_ADMIN_TOKEN": TOKEN, "SWITCHBOARD_LOG_LEVEL": "WARNING",
           "SWITCHBOARD_LEASE_TTL_S": "5"}
    servers = [ServeProcess([args.bot], data_dir=root / f"s{i}", env=env) for i in range(2)]
    for server in servers:
        server.start()
    print(f"soak: bot {spec.name}, {args.minutes:g} min, rounds of {args.round_conversations} conversations x "
          f"{args.messages} messages, cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}", flush=True)
    header = f"{'min':>5} {'round':>5} {'msg/s':>7} {'p99 ms':>7} {'rss0 MB':>8} {'rss1 MB':>8}  faults  events"
    print(header, flush=True)
    started = time.monotonic()
    first_rss: list[float] | None = None
    totals = ChaosReport()
    round_no = 0
    try:
        while time.monotonic() - started < args.minutes * 60:
            round_no += 1
            plan = ChaosPlan(conversations=args.round_conversations, messages=args.messages, kill_at=0.5,
                             db_restart_at=0.25 if round_no % args.db_restart_every == 0 else None)
            if spec.name == "support":
                plan.texts = SUPPORT_TEXTS
            chaos = Chaos(servers, spec.name, plan, restart_db=db.restart, admin_token=TOKEN)
            chaos._cid = lambda n, r=round_no: f"soak-{r}-{n}"  # type: ignore[method-assign,misc]
            report = asyncio.run(chaos.run())
            rss = [rss_mb(s.proc.pid) if s.proc else 0.0 for s in servers]
            first_rss = first_rss or rss
            lat = sorted(report.latencies)
            p99 = lat[int(0.99 * (len(lat) - 1))] * 1000 if lat else float("nan")
            faults = report.lost + report.duplicated + report.reordered + report.unanswered + report.extra_answers
            print(f"{(time.monotonic() - started) / 60:5.1f} {round_no:5d} {report.answered / report.seconds:7.1f} "
                  f"{p99:7.0f} {rss[0]:8.0f} {rss[1]:8.0f}  {faults:6d}  {'; '.join(report.events)}", flush=True)
            for name in ("answered", "lost", "duplicated", "reordered", "unanswered", "extra_answers",
                         "checked_conversations"):
                setattr(totals, name, getattr(totals, name) + getattr(report, name))
            last_rss = rss
    finally:
        for server in servers:
            server.stop()
        db.stop()
    print(f"total: {round_no} rounds, {totals.answered} messages, {totals.checked_conversations} conversations "
          f"checked: lost {totals.lost}, duplicated {totals.duplicated}, reordered {totals.reordered}, unanswered "
          f"{totals.unanswered}, turns without exactly one answer {totals.extra_answers}")
    if first_rss:
        growth = ", ".join(f"replica {i}: {a:.0f} -> {b:.0f} MB ({b - a:+.0f})"
                           for i, (a, b) in enumerate(zip(first_rss, last_rss, strict=True)))
        print(f"RSS after first round vs last (replica 0 restarts each round): {growth}")


if __name__ == "__main__":
    main()

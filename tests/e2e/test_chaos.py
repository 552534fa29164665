"""Chaos in CI: two server processes and the MongoDB-protocol server; one server SIGKILLed
mid-run and restarted, the database restarted once; clients redeliver. Every conversation
must end with each message exactly once, in order, with one answer, and a conversation whose
message was in flight at the killed server must go on within RESUME_BOUND_S of the kill (its lease
expires: SWITCHBOARD_LEASE_TTL_S, 2 s by default), plus the time an ordinary answer takes on this
machine in the same run (its median latency, at least CI_MARGIN_S): the kill may add at most
RESUME_BOUND_S to what any customer waits then. A fixed margin failed a CI run on a loaded machine
where every answer took a median 4.7 s (the resume, 7.3 s at most, was the lease plus one such answer).

Size: SWITCHBOARD_CHAOS_CONVERSATIONS x SWITCHBOARD_CHAOS_MESSAGES (default 100 x 20 in CI: the MongoDB-protocol
test server, pure Python, is the bottleneck; the 1000 x 20 run is recorded in bench/RESULTS.md), within
SWITCHBOARD_CHAOS_DEADLINE_S (default 900 s).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from tests.conftest import ADMIN_TOKEN
from tests.fixtures.chaos import Chaos, ChaosPlan
from tests.fixtures.mongo import SecantusServer
from tests.fixtures.server import ServeProcess

CONVERSATIONS = int(os.environ.get("SWITCHBOARD_CHAOS_CONVERSATIONS", "100"))
MESSAGES = int(os.environ.get("SWITCHBOARD_CHAOS_MESSAGES", "20"))
DEADLINE_S = float(os.environ.get("SWITCHBOARD_CHAOS_DEADLINE_S", "900"))
RESUME_BOUND_S = 5.0  # issue 16: a conversation whose replica died resumes within 5 s
# Two servers, the pure-Python database server and 48 clients share a few CI cores: an answer takes
# longer there than in production (the measured resume is recorded in bench/RESULTS.md). The margin
# is the run's median answer latency, never less than this.
CI_MARGIN_S = 1.5


def test_kill_a_replica_and_restart_the_database_nothing_lost_or_doubled(tiny_bot_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    db = SecantusServer(tmp_path / "db")
    db.start()
    env = {"SWITCHBOARD_MONGODB_URI": db.uri(), "SWITCHBOARD_ADMIN_TOKEN": ADMIN_TOKEN,
           "SWITCHBOARD_LOG_LEVEL": "WARNING"}  # the default lease: what is shipped is tested
    servers = [ServeProcess([tiny_bot_dir], data_dir=tmp_path / f"s{i}", env=env) for i in range(2)]
    try:
        for server in servers:
            server.start()
        plan = ChaosPlan(conversations=CONVERSATIONS, messages=MESSAGES, deadline_s=DEADLINE_S)
        report = asyncio.run(Chaos(servers, "tiny", plan, restart_db=db.restart, admin_token=ADMIN_TOKEN).run())
    finally:
        for server in servers:
            server.stop()
        db.stop()
    print(report.summary())
    assert report.checked_conversations == CONVERSATIONS
    faults = (report.lost, report.duplicated, report.reordered, report.unanswered, report.extra_answers)
    assert faults == (0, 0, 0, 0, 0), report.summary()
    assert report.answered == CONVERSATIONS * MESSAGES
    assert any("SIGKILL" in e for e in report.events) and any("database back" in e for e in report.events)
    assert not [o for o in report.outcomes if o.startswith("5") and o != "503"], report.outcomes
    assert report.resume_seconds, "no conversation was in flight at the killed server: nothing measured"
    ordinary = sorted(report.latencies)[len(report.latencies) // 2]
    bound = RESUME_BOUND_S + max(CI_MARGIN_S, ordinary)
    assert max(report.resume_seconds) <= bound, f"resume bound {bound:.2f} s; {report.summary()}"

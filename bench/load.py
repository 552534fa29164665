"""Load benchmark: N concurrent simulated customers over the web connector against a running
`switchboard serve` (store on), and the same load against a naive baseline (a Hugging Face
pipeline per request behind FastAPI, bench/naive_server.py) in the same run.

    python bench/load.py --bot examples/support --concurrency 50 --duration 30 --runs 5            # flat out
    python bench/load.py --bot examples/support --concurrency 50 --duration 30 --rate 300 --runs 5 # 300 msg/s
    python bench/load.py --mongodb --skip-baseline --duration 10 --rate 50    # store: SecantusDB (MongoDB protocol)
    python bench/load.py --bot tests/data/rasa/moodbot --skip-baseline        # a story-driven Rasa project
    python bench/load.py --rate 300 --turns 10 --skip-baseline                # conversations of 10 messages

Prints, per run and server: msgs/s, p50/p95/p99 latency, errors, the server's CPU time per answered
message, RSS and time to ready, and for Switchboard the mean texts per NLU batch in the window (its
``switchboard_nlu_batch_size`` histogram, from /metrics); with a MongoDB store also the store round
trips per message and the database server's own CPU per message. With ``--runs N`` (N consecutive
runs, each with a fresh server and data folder) it then prints the median and the spread (min-max)
of each figure over the runs. The load average at the start of each run is printed: on a shared
machine it says how far the figures can be trusted.

Inputs are the same on every machine: with a bot.yml bot the customers say the questions shipped in
bench/data/bitext_questions.txt (the bench stops if the file is missing, never substituting others);
with a Rasa project (``--bot PATH``, e.g. tests/data/rasa/moodbot) they play the project's own test
stories (``tests/test_*.yml``), one conversation per story, the user turns in order. A Rasa project
without a trained model is first trained with ``switchboard train --fast`` into a temporary copy
(the project folder is not written to).

``--profile FILE`` records the Switchboard server with py-spy over the measured window (sampling
without stopping it; ``.txt``: collapsed stacks, ``.json``: speedscope, else a flame graph SVG;
``-N`` before the suffix with several runs). How bench/RESULTS.md's "Where the CPU goes" was taken.

CPU per message: user+system time of the server process and its descendants, read from
/proc/PID/stat at the start and at the end of the measured window (warm-up excluded), divided by the
messages answered within the window. Store round trips: the MongoDB server's ``network.numRequests``
(serverStatus; the bench's own serverStatus calls subtracted; the driver's periodic monitoring
``hello`` are included, a few per 10 s) over the same window, divided the same way. The load
generator's own CPU per message (this process: the customers' event loop, on uvloop as the server's is,
and the probes) is printed too: on a 2-core machine it is what the server cannot have. Linux only;
loopback only; each run is bounded by --duration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np
import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bots.artifact import list_artifacts  # noqa: E402
from bots.botspec import BotSpec  # noqa: E402
from bots.dialogue.domain import Step, Story  # noqa: E402
from bots.dialogue.rasa_data import read_test_stories  # noqa: E402
from bots.dialogue.rasa_project import is_rasa_project, rasa_test_files  # noqa: E402
from bots.errors import ConfigError  # noqa: E402
from bots.loader import load_bot_folder  # noqa: E402
from tests.fixtures.server import free_port  # noqa: E402

QUESTIONS = ROOT / "bench" / "data" / "bitext_questions.txt"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def read_questions(path: Path = QUESTIONS) -> list[str]:
    """The shipped bench questions (one a line, ``#`` lines are the header); stops with a message
    when the file is missing or empty: a benchmark must not switch to other inputs silently."""
    if not path.is_file():
        raise SystemExit(f"{path}: the bench questions are missing. They ship with the project (see "
                         f"bench/data/README.md; regenerate with bench/data/build_questions.py); the bench does not "
                         "run with other inputs, so that its figures are comparable between machines.")
    texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    if not texts:
        raise SystemExit(f"{path}: no questions in the file")
    return texts


@dataclass(frozen=True)
class Message:
    conversation: str   # suffix of the conversation id: unique per customer and conversation
    message_id: str
    text: str
    payload: str | None = None


@dataclass(frozen=True)
class Workload:
    """What the customers say. Without ``stories`` each customer keeps one conversation going and says
    ``texts`` in turn (customer n starts at text n), or, with ``turns``, starts a new conversation every
    ``turns`` messages (the same texts in the same order); with ``stories`` each customer plays stories one
    after another (customer n starts at story n), each a new conversation, its user turns in order."""

    source: str
    texts: tuple[str, ...] = ()
    stories: tuple[tuple[tuple[str, str | None], ...], ...] = ()
    turns: int = 0  # messages per conversation with ``texts`` (0: one conversation per customer)

    def messages(self, customer: int) -> Iterator[Message]:
        if not self.stories:
            i = 0
            while True:
                conversation = f"{customer}-{i // self.turns}" if self.turns else str(customer)
                yield Message(conversation, f"m{i}", self.texts[(customer + i) % len(self.texts)])
                i += 1
        played = 0
        while True:
            story = self.stories[(customer + played) % len(self.stories)]
            for j, (text, payload) in enumerate(story):
                yield Message(f"{customer}-{played}", f"m{j}", text, payload)
            played += 1


def _user_turn(step: Step) -> tuple[str, str | None] | None:
    """The message a customer sends for a test story's user step: its text, or the intent as a
    payload (``/intent{"entity": "value"}``, as `switchboard test` sends it) when the step has none."""
    if step.kind == "or" and step.alternatives:
        step = step.alternatives[0]
    if step.kind != "intent" or (step.name is None and step.user_text is None):
        return None
    if step.user_text is not None and step.user_text.strip():
        text = step.user_text.strip()
        return text, (text if text.startswith("/") else None)
    values = {e.entity: e.value for e in step.entities if e.value is not None}
    payload = f"/{step.name}" + (json.dumps(values, ensure_ascii=False) if values else "")
    return payload, payload


def story_workload(project: Path) -> Workload:
    """The user turns of a Rasa project's test stories; stops with a message when it has none."""
    files = rasa_test_files(project)
    stories: tuple[Story, ...] = read_test_stories(files) if files else ()
    played = tuple(turns for s in stories if (turns := tuple(t for step in s.steps if (t := _user_turn(step)))))
    if not played:
        raise SystemExit(f"{project}: no test stories with user turns (tests/test_*.yml): the bench plays a Rasa "
                         "project's own test stories as its customers' conversations")
    count = sum(len(s) for s in played)
    return Workload(f"the {len(played)} test stories of {project} ({count} user turns), one conversation per story",
                    stories=played)


def question_workload(path: Path = QUESTIONS) -> Workload:
    texts = read_questions(path)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return Workload(f"{len(texts)} distinct questions from {shown}", texts=tuple(texts))


def _descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it (from /proc/*/stat's parent ids)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants so far (/proc/PID/stat utime,
    stime), plus what its waited-for children used (cutime, cstime)."""
    total = 0
    for p in _descendants(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue  # exited in between
        fields = stat[stat.rindex(")") + 2:].split()  # fields from 3 (state) on; the name may hold spaces
        total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime (fields 14-17)
    return total / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    total = 0.0
    for p in _descendants(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


class Probe(Protocol):
    """Something read at the start and at the end of the measured window."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


class CpuProbe:
    """CPU seconds a process tree spent within the window."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._start = 0.0
        self.seconds: float | None = None

    def start(self) -> None:
        self._start = process_cpu_seconds(self.pid)

    def stop(self) -> None:
        self.seconds = process_cpu_seconds(self.pid) - self._start


class OwnCpuProbe:
    """CPU seconds this process (the load generator: its event loop and the probes' threads) spent within
    the window: what the customers cost the two cores the server shares with them."""

    def __init__(self) -> None:
        self._start = 0.0
        self.seconds: float | None = None

    @staticmethod
    def _now() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def start(self) -> None:
        self._start = self._now()

    def stop(self) -> None:
        self.seconds = self._now() - self._start


class BatchProbe:
    """Texts per NLU batch within the window (mean): the server's ``switchboard_nlu_batch_size`` histogram
    (its sum and count, every bot) read from /metrics. Larger batches cost less model time per text."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._start = (0.0, 0.0)
        self.mean: float | None = None

    def _read(self) -> tuple[float, float]:
        text = httpx.get(self.url + "/metrics", timeout=10).text
        found = {"sum": 0.0, "count": 0.0}
        for line in text.splitlines():
            for kind in found:
                if line.startswith(f"switchboard_nlu_batch_size_{kind}{{"):
                    found[kind] += float(line.rsplit(" ", 1)[1])
        return found["sum"], found["count"]

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> None:
        texts, batches = (b - a for a, b in zip(self._start, self._read(), strict=True))
        self.mean = texts / batches if batches else None


class ProfileProbe:
    """py-spy recording a process over the window (``py-spy record --nonblocking``: the server is not
    stopped to be sampled, so its CPU figure stays what it would be)."""

    def __init__(self, pid: int, out: Path) -> None:
        self.pid, self.out = pid, out
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        fmt = {".txt": "raw", ".json": "speedscope"}.get(self.out.suffix, "flamegraph")
        self._proc = subprocess.Popen([_py_spy(), "record", "--pid", str(self.pid), "--nonblocking", "--rate", "100",
                                       "--format", fmt, "--output", str(self.out)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.send_signal(signal.SIGINT)  # py-spy writes what it sampled, then exits
        try:
            _, err = self._proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            raise SystemExit("py-spy did not finish writing the profile within 60 s") from None
        if not self.out.is_file():
            raise SystemExit(f"py-spy wrote no profile ({err.decode(errors='replace')[-500:]}); it needs "
                             "ptrace rights over the server (root, or kernel.yama.ptrace_scope=0)")


def _py_spy() -> str:
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("--profile needs py-spy: pip install 'py-spy>=0.3.14,<1' (in the test extra)")
    return found


class MongoProbe:
    """Requests a MongoDB server received within the window (serverStatus ``network.numRequests``,
    with the opcounters broken down), less the probe's own serverStatus calls; and the server's pid,
    for its CPU when it runs on this machine."""

    def __init__(self, uri: str) -> None:
        from pymongo import MongoClient

        self._client: Any = MongoClient(uri, serverSelectionTimeoutMS=5000)
        first = self._status()
        # What one serverStatus adds: the least of a few back-to-back deltas (another client's request
        # or a driver heartbeat falling between two calls can only add, and counted as the probe's own
        # it would be subtracted from the window twice: 5 requests counted for 7 in a test run).
        counts = [self._requests(first)] + [self._requests(self._status()) for _ in range(3)]
        self._own = max(min(b - a for a, b in itertools.pairwise(counts)), 0)
        self.pid: int | None = int(first["pid"]) if isinstance(first.get("pid"), int) else None
        self._start: dict[str, Any] = {}
        self.requests: int | None = None
        self.opcounters: dict[str, int] = {}

    def _status(self) -> dict[str, Any]:
        return dict(self._client.admin.command("serverStatus"))

    @staticmethod
    def _requests(status: dict[str, Any]) -> int:
        return int(status["network"]["numRequests"])

    def start(self) -> None:
        self._start = self._status()

    def stop(self) -> None:
        end = self._status()
        self.requests = self._requests(end) - self._requests(self._start) - self._own
        self.opcounters = {k: int(v) - int(self._start["opcounters"].get(k, 0))
                           for k, v in end["opcounters"].items()}

    def close(self) -> None:
        self._client.close()


@dataclass
class Result:
    name: str
    messages: int
    errors: int
    seconds: float
    latencies: list[float]
    rss_mb: float
    ready_s: float
    load_avg: float = 0.0
    answered_in_window: int = 0          # answers that arrived within the measured window
    cpu_s: float | None = None           # server CPU within the window
    store_requests: int | None = None    # MongoDB requests within the window
    store_ops: dict[str, int] = field(default_factory=dict)
    db_cpu_s: float | None = None        # the MongoDB server's CPU within the window (when local)
    error_kinds: dict[str, int] = field(default_factory=dict)
    log_tail: str = ""                   # the server's last log lines, kept when there were errors
    nlu_batch: float | None = None       # texts per NLU batch within the window (mean), Switchboard only
    load_cpu_s: float | None = None      # the load generator's own CPU within the window

    def _per_message(self, value: float | None) -> float | None:
        return None if value is None or not self.answered_in_window else value / self.answered_in_window

    def figures(self) -> dict[str, float | None]:
        lat = np.array(self.latencies) * 1000 if self.latencies else np.array([float("nan")])
        cpu = self._per_message(self.cpu_s)
        load_cpu = self._per_message(self.load_cpu_s)
        db_cpu = self._per_message(self.db_cpu_s)
        trips = self._per_message(None if self.store_requests is None else float(self.store_requests))
        return {"msg/s": self.messages / self.seconds, "p50 ms": float(np.percentile(lat, 50)),
                "p95 ms": float(np.percentile(lat, 95)), "p99 ms": float(np.percentile(lat, 99)),
                "errors": float(self.errors), "CPU ms/msg": None if cpu is None else cpu * 1000,
                "store trips/msg": trips, "DB CPU ms/msg": None if db_cpu is None else db_cpu * 1000,
                "RSS MB": self.rss_mb, "ready s": self.ready_s, "NLU batch": self.nlu_batch,
                "load gen CPU ms/msg": None if load_cpu is None else load_cpu * 1000}

    def line(self) -> str:
        f = self.figures()
        text = (f"{self.name:<12} {f['msg/s']:8.1f} msg/s  p50 {f['p50 ms']:7.1f} ms  p95 {f['p95 ms']:7.1f} ms  "
                f"p99 {f['p99 ms']:7.1f} ms  errors {self.errors:5d}  CPU {_fmt(f['CPU ms/msg'], 2)} ms/msg  "
                f"RSS {self.rss_mb:6.0f} MB  ready {self.ready_s:5.1f} s")
        if self.nlu_batch is not None:
            text += f"  NLU batch {self.nlu_batch:4.1f}"
        if self.load_cpu_s is not None:
            text += f"  load generator CPU {_fmt(f['load gen CPU ms/msg'], 2)} ms/msg"
        if self.errors:
            kinds = ", ".join(f"{k} x{v}" for k, v in sorted(self.error_kinds.items()))
            text += f"\n{'':<12} errors: {kinds}; server log tail:\n{self.log_tail or '(empty)'}"
        if self.store_requests is not None:
            ops = ", ".join(f"{k} {v}" for k, v in sorted(self.store_ops.items()) if v)
            text += (f"\n{'':<12} store: {_fmt(f['store trips/msg'], 2)} round trips/msg ({self.store_requests} "
                     f"requests for {self.answered_in_window} answers; opcounters {ops or 'none'}), "
                     f"DB server CPU {_fmt(f['DB CPU ms/msg'], 2)} ms/msg")
        return text


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def summary(results: Sequence[Result]) -> str:
    """One markdown row per figure: the median over the runs and the spread (min-max)."""
    rows = []
    for key in results[0].figures():
        values = [v for r in results if (v := r.figures()[key]) is not None and not np.isnan(v)]
        if not values:
            continue
        two = ("CPU ms/msg", "store trips/msg", "DB CPU ms/msg", "load gen CPU ms/msg")
        digits = 2 if key in two else 0 if key == "errors" else 1
        spread = f" ({min(values):.{digits}f}-{max(values):.{digits}f})" if len(values) > 1 else ""
        rows.append(f"{key} {statistics.median(values):.{digits}f}{spread}")
    return f"{results[0].name:<12} median of {len(results)} run(s), (min-max): " + "; ".join(rows)


class _Client:
    """A lean HTTP/1.1 keep-alive client: the load generator shares the two cores with the server,
    so it must cost as little CPU per request as possible (httpx spends about as much CPU per
    request as the server's whole turn). One connection per simulated customer, reconnecting on error."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST ``body``; answers (status, body). A kept-alive connection the server has closed while
        it was idle (uvicorn closes them after 5 s, which Poisson gaps at low rates reach) fails before
        any byte of the answer arrives: the request is then sent again once on a new connection (the
        server never read it; the message id would make a second delivery harmless anyway)."""
        reused = self._writer is not None
        try:
            return await self._post(path, body)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            if not reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise
        return await self._post(path, body)

    async def _post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        try:
            self._writer.write(b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                               b"Content-Length: %d\r\n\r\n%s" % (path.encode(), self.host.encode(), self.port,
                                                                   len(body), body))
            head = await self._reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            payload = await self._reader.readexactly(length)
            if b"connection: close" in head.lower():
                await self.close()
            return status, payload
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None


@dataclass
class Drive:
    ok: int
    errors: int
    latencies: list[float]
    answered_in_window: int
    error_kinds: dict[str, int] = field(default_factory=dict)  # "HTTP 503", "OSError", ...: how many


async def drive(url: str, bot: str, concurrency: int, duration: float, warmup: float, workload: Workload,
                rate: float | None = None, probes: Sequence[Probe] = ()) -> Drive:
    """Each of ``concurrency`` customers sends its next message when the answer to the last one
    arrives (saturation: the server's most messages per second), or, with ``rate``, at random
    (Poisson) moments adding up to ``rate`` messages per second over all customers. A customer still
    waits for an answer before sending again, and latency then counts from the moment the message
    was due, not when it could be sent, so a slow server cannot hide its stalls by slowing the
    customers down (no coordinated omission). ``probes`` are read (in a thread, so the customers are
    not held up) when the measured window starts and when it ends."""
    latencies: list[float] = []
    counts = {"ok": 0, "err": 0, "in_window": 0}
    error_kinds: dict[str, int] = {}
    host, port = url.removeprefix("http://").split(":")
    path = f"/bots/{bot}/webhooks/web"
    start = time.monotonic()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def window() -> None:
        await asyncio.sleep(max(0.0, measure_from - time.monotonic()))
        for probe in probes:
            await asyncio.to_thread(probe.start)
        await asyncio.sleep(max(0.0, stop_at - time.monotonic()))
        for probe in probes:
            await asyncio.to_thread(probe.stop)

    async def customer(n: int) -> None:
        client = _Client(host, int(port))
        rng = random.Random(n)
        messages = workload.messages(n)
        due = start + (rng.expovariate(rate / concurrency) if rate else 0.0)
        try:
            while due < stop_at and time.monotonic() < stop_at:  # a server behind schedule has no time added
                if rate:
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                m = next(messages)
                fields: dict[str, str] = {"conversation_id": f"load-{m.conversation}-{int(start)}",
                                          "message_id": m.message_id, "text": m.text}
                if m.payload is not None:
                    fields["payload"] = m.payload
                body = json.dumps(fields).encode()
                sent = due if rate else time.monotonic()
                try:
                    status, payload = await client.post(path, body)
                    ok = status == 200 and b'"responses"' in payload
                    kind = f"HTTP {status}"
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    ok, kind = False, type(exc).__name__
                done = time.monotonic()
                if ok and measure_from <= done <= stop_at:
                    counts["in_window"] += 1
                if sent >= measure_from:
                    counts["ok" if ok else "err"] += 1
                    if not ok:
                        error_kinds[kind] = error_kinds.get(kind, 0) + 1
                    if ok:
                        latencies.append(done - sent)
                due = due + rng.expovariate(rate / concurrency) if rate else time.monotonic()
        finally:
            await client.close()

    await asyncio.gather(window(), *(customer(n) for n in range(concurrency)))
    return Drive(counts["ok"], counts["err"], latencies, counts["in_window"], error_kinds)


def server_env(data_dir: Path, mongodb_uri: str | None = None, **extra: str) -> dict[str, str]:
    """Environment of a benchmarked `switchboard serve`: quiet logs, no hub, and the per-client rate
    limits off (every simulated customer comes from 127.0.0.1, so they would cap the run)."""
    env = {**os.environ, "SWITCHBOARD_DATA_DIR": str(data_dir), "SWITCHBOARD_LOG_LEVEL": "WARNING",
           "HF_HUB_OFFLINE": "1", "SWITCHBOARD_RATE_PER_IP": "0", "SWITCHBOARD_RATE_PER_CONVERSATION": "0", **extra}
    if mongodb_uri:
        env["SWITCHBOARD_MONGODB_URI"] = mongodb_uri
    return env


def run_server(cmd: list[str], env: dict[str, str], url: str,
               log: Path | None = None) -> tuple[subprocess.Popen[bytes], float]:
    """Start a server (its output to ``log``, or discarded) and wait until /readyz answers 200."""
    started = time.monotonic()
    with log.open("ab") if log is not None else open(os.devnull, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    while True:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log is not None else ""
            raise SystemExit(f"server exited with {proc.returncode}: {' '.join(cmd)}\n{tail}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, time.monotonic() - started
        except httpx.HTTPError:
            pass
        if time.monotonic() - started > 120:
            proc.kill()
            raise SystemExit("server not ready after 120 s")
        time.sleep(0.05)


def bench(name: str, cmd: list[str], env: dict[str, str], port: int, bot: str, workload: Workload,
          args: argparse.Namespace, log: Path, mongodb_uri: str | None = None, local_db: bool = False,
          profile: Path | None = None) -> Result:
    """One run against one server: start it, drive the load, read the probes, stop it. ``local_db``:
    the MongoDB server runs on this machine (started here), so its CPU is read too; ``profile``: a
    py-spy recording of the server over the window goes there."""
    url = f"http://127.0.0.1:{port}"
    load_avg = os.getloadavg()[0]
    proc, ready_s = run_server(cmd, env, url, log)
    mongo = MongoProbe(mongodb_uri) if mongodb_uri else None
    try:
        cpu = CpuProbe(proc.pid)
        db_cpu = CpuProbe(mongo.pid) if mongo is not None and mongo.pid and local_db else None
        batches = BatchProbe(url) if name == "switchboard" else None
        own = OwnCpuProbe()
        probes: list[Probe] = [cpu, own, *(p for p in (mongo, db_cpu, batches) if p is not None)]
        if profile is not None:
            probes.append(ProfileProbe(proc.pid, profile))
        run = uvloop.run(drive(url, bot, args.concurrency, args.duration, args.warmup, workload, args.rate, probes))
        rss = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if mongo is not None:
            mongo.close()
    return Result(name, run.ok, run.errors, args.duration, run.latencies, rss, ready_s, load_avg,
                  run.answered_in_window, cpu.seconds,
                  mongo.requests if mongo is not None else None, mongo.opcounters if mongo is not None else {},
                  db_cpu.seconds if db_cpu is not None else None, run.error_kinds,
                  "\n".join(log.read_text(errors="replace").splitlines()[-5:]) if run.errors else "",
                  batches.mean if batches is not None else None, own.seconds)


def has_model(bot_dir: Path) -> bool:
    return bool(list_artifacts(bot_dir / "models")) if (bot_dir / "models").is_dir() else False


def prepare_bot(path: Path, workdir: Path) -> tuple[Path, BotSpec, Workload]:
    """The bot folder to serve, its spec and what its customers say. A Rasa project plays its test
    stories; one without a model is trained (``switchboard train --fast``) into a copy under
    ``workdir`` first. A bot.yml bot says the shipped questions and must be trained already."""
    try:
        spec, _ = load_bot_folder(path)
    except ConfigError as exc:
        raise SystemExit("\n".join(exc.problems)) from None
    rasa = is_rasa_project(path)
    workload = story_workload(path) if rasa else question_workload()
    if has_model(path):
        return path, spec, workload
    if not rasa:
        raise SystemExit(f"{path}: no trained model; run `switchboard train {path}` first")
    copy = workdir / path.resolve().name
    shutil.copytree(path, copy, ignore=shutil.ignore_patterns("models", "results", "__pycache__"))
    print(f"{path}: no trained model; training a copy with `switchboard train --fast` ...", flush=True)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "connectors.cli", "train", str(copy), "--fast"], cwd=ROOT,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
                          capture_output=True, text=True)
    if done.returncode != 0 or not has_model(copy):
        raise SystemExit(f"{path}: `switchboard train {path} --fast` failed (exit {done.returncode}); train it "
                         f"yourself and run the bench again:\n{(done.stdout + done.stderr)[-3000:]}")
    print(f"{path}: trained in {time.monotonic() - started:.1f} s", flush=True)
    return copy, spec, workload


def _secantus_executable() -> str:
    beside = Path(sys.executable).parent / "secantusd-py"
    found = str(beside) if beside.exists() else shutil.which("secantusd-py")
    if found is None:
        raise SystemExit("--mongodb needs the MongoDB wire-protocol test server: pip install SecantusDB==0.7.0b3 "
                         "(or give --mongodb-uri of a running MongoDB)")
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bot", type=Path, default=ROOT / "examples" / "support",
                        help="a trained bot.yml bot, or a Rasa project folder (trained here with --fast if it "
                             "has no model; its test stories are what the customers say)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=1, help="consecutive runs (fresh servers each); prints the "
                                                            "median and spread over them")
    parser.add_argument("--threads", type=int, default=1, help="NLU threads of each server")
    stores = parser.add_mutually_exclusive_group()
    stores.add_argument("--mongodb-uri", help="use this MongoDB instead of the embedded store (round trips are "
                                             "counted with serverStatus, which the user must be allowed to run)")
    stores.add_argument("--mongodb", action="store_true", help="start SecantusDB (the MongoDB wire-protocol server "
                                                             "of tests/fixtures/mongo.py) and use it as the store")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--profile", type=Path, metavar="FILE", help="record the Switchboard server with py-spy "
                        "over the measured window (.txt collapsed stacks, .json speedscope, else SVG)")
    parser.add_argument("--rate", type=float, help="messages per second over all customers, at random (Poisson) "
                                                    "moments; default: each customer sends again as soon as answered")
    parser.add_argument("--turns", type=int, default=0, help="a bot.yml bot's customers start a new conversation "
                        "every N messages (default: one conversation each, which most of them end waiting for a "
                        "person: bench/RESULTS.md)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.duration <= 0 or args.concurrency < 1 or args.turns < 0:
        parser.error("--runs and --concurrency must be at least 1, --duration above 0, --turns 0 or more")
    if not Path("/proc/self/stat").is_file():
        raise SystemExit("this bench reads CPU times from /proc: Linux only")
    if args.mongodb:
        _secantus_executable()
    if args.profile is not None:
        _py_spy()

    workdir = Path(tempfile.mkdtemp(prefix="switchboard-load-"))
    secantus = None
    try:
        bot_dir, spec, workload = prepare_bot(args.bot, workdir)
        if args.turns:
            if workload.stories:
                parser.error("--turns is for a bot.yml bot's questions: a Rasa project's stories are "
                             "conversations already")
            workload = replace(workload, turns=args.turns,
                               source=f"{workload.source}, a new conversation every {args.turns} messages")
        if args.mongodb:
            from tests.fixtures.mongo import SecantusServer

            secantus = SecantusServer(workdir / "secantus")
            secantus.start()
        store = "SecantusDB (started here)" if secantus else "MongoDB" if args.mongodb_uri else "embedded SQLite"
        print(f"bot {spec.name} ({len(spec.intents)} intents), {args.concurrency} concurrent customers, "
              f"{args.duration:g} s (+{args.warmup:g} s warm-up) x {args.runs} run(s), "
              f"{f'{args.rate:g} msg/s offered' if args.rate else 'each sends when answered'}, NLU threads "
              f"{args.threads}, store {store}, cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}; "
              f"customers say {workload.source}", flush=True)
        results: dict[str, list[Result]] = {}
        for run in range(1, args.runs + 1):
            data_dir = workdir / f"data-{run}"
            mongodb_uri = secantus.uri(f"load_{run}") if secantus is not None else args.mongodb_uri
            env = server_env(data_dir, mongodb_uri, SWITCHBOARD_NLU_THREADS=str(args.threads))
            port = free_port()
            servers = [("switchboard", [sys.executable, "-m", "connectors.cli", "serve", str(bot_dir), "--port",
                                        str(port)], port, mongodb_uri)]
            if not args.skip_baseline:
                base_port = free_port()
                servers.append(("naive-hf", [sys.executable, "bench/naive_server.py", "--port", str(base_port),
                                             "--labels", str(len(spec.intents)), "--threads", str(args.threads)],
                                base_port, None))
            for name, cmd, server_port, uri in servers:
                profile = None
                if args.profile is not None and name == "switchboard":
                    profile = args.profile if args.runs == 1 else \
                        args.profile.with_name(f"{args.profile.stem}-{run}{args.profile.suffix}")
                result = bench(name, cmd, env, server_port, spec.name, workload, args,
                               workdir / f"{name}-{run}.log", uri, local_db=secantus is not None, profile=profile)
                results.setdefault(name, []).append(result)
                print(f"run {run}/{args.runs}, load average {result.load_avg:.2f} at start: {result.line()}",
                      flush=True)
        if args.runs > 1:
            for runs in results.values():
                print(summary(runs))
        if "naive-hf" in results:
            a, b = results["switchboard"], results["naive-hf"]
            a_p99 = statistics.median(r.figures()["p99 ms"] or float("nan") for r in a)
            b_p99 = statistics.median(r.figures()["p99 ms"] or float("nan") for r in b)
            a_rate = statistics.median(r.messages for r in a)
            b_rate = statistics.median(r.messages for r in b)
            print(f"ratio (medians): {a_rate / max(b_rate, 1):.1f}x throughput, p99 {b_p99 / a_p99:.1f}x lower"
                  if a_p99 == a_p99 and b_p99 == b_p99 else "ratio: n/a")
    finally:
        if secantus is not None:
            secantus.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

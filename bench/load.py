"""Load benchmark: N concurrent simulated customers over the web connector against a running
`switchboard serve` (store on), and the same load against a naive baseline (a Hugging Face
pipeline per request behind FastAPI, bench/naive_server.py) in the same run.

    python bench/load.py --bot examples/support --concurrency 50 --duration 30            # flat out
    python bench/load.py --bot examples/support --concurrency 50 --duration 30 --rate 300 # 300 msg/s

Prints msgs/s, p50/p95/p99 latency, errors, server RSS and time to ready, for both.
Loopback only; the run is bounded by --duration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bots.botspec import load_bot  # noqa: E402
from tests.fixtures.server import free_port  # noqa: E402

FALLBACK_TEXTS = [
    "I want to cancel my order 123", "where is my package", "how do I change my shipping address",
    "I need a refund for order 98765", "my payment did not go through", "what payment methods do you accept",
    "I forgot my password", "I want to open a premium account", "how long does delivery take",
    "send me the invoice 55555",
]
BITEXT = ROOT.parent / "shared" / "data" / "bitext" / "customer_support_responses.csv"


def customer_texts(path: Path | None, limit: int = 5000) -> tuple[list[str], str]:
    """What the simulated customers say: distinct real questions (Bitext's, shuffled) so that nothing
    downstream can profit from a handful of repeated texts; a short built-in list without the data."""
    if path is not None and path.is_file():
        with path.open(encoding="utf-8", newline="") as f:
            texts = sorted({row["instruction"].strip() for row in csv.DictReader(f) if row.get("instruction")})
        random.Random(0).shuffle(texts)
        return texts[:limit], f"{min(limit, len(texts))} distinct questions from {path.name}"
    return FALLBACK_TEXTS, f"{len(FALLBACK_TEXTS)} built-in questions (no {BITEXT.name} here)"


TEXTS, TEXTS_FROM = customer_texts(BITEXT)


@dataclass
class Result:
    name: str
    messages: int
    errors: int
    seconds: float
    latencies: list[float]
    rss_mb: float
    ready_s: float

    def line(self) -> str:
        lat = np.array(self.latencies) * 1000 if self.latencies else np.array([float("nan")])
        return (f"{self.name:<12} {self.messages / self.seconds:8.1f} msg/s  p50 {np.percentile(lat, 50):7.1f} ms  "
                f"p95 {np.percentile(lat, 95):7.1f} ms  p99 {np.percentile(lat, 99):7.1f} ms  errors {self.errors:5d}  "
                f"RSS {self.rss_mb:6.0f} MB  ready {self.ready_s:5.1f} s")


def rss_mb(pid: int) -> float:
    total = 0.0
    pids = [pid] + [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
                    .stdout.split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except FileNotFoundError:
            pass
    return total


class _Client:
    """A lean HTTP/1.1 keep-alive client: the load generator shares the two cores with the server,
    so it must cost as little CPU per request as possible (httpx spends about as much CPU per
    request as the server's whole turn). One connection per simulated customer, reconnecting on error."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
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


async def drive(url: str, bot: str, concurrency: int, duration: float, warmup: float,
                rate: float | None = None) -> tuple[int, int, list[float]]:
    """Each of ``concurrency`` customers sends its next message when the answer to the last one
    arrives (saturation: the server's most messages per second), or, with ``rate``, at random
    (Poisson) moments adding up to ``rate`` messages per second over all customers. A customer still
    waits for an answer before sending again, and latency then counts from the moment the message
    was due, not when it could be sent, so a slow server cannot hide its stalls by slowing the
    customers down (no coordinated omission)."""
    latencies: list[float] = []
    counts = {"ok": 0, "err": 0}
    host, port = url.removeprefix("http://").split(":")
    path = f"/bots/{bot}/webhooks/web"
    start = time.monotonic()
    measure_from = start + warmup
    stop_at = measure_from + duration

    async def customer(n: int) -> None:
        client = _Client(host, int(port))
        rng = random.Random(n)
        due = start + (rng.expovariate(rate / concurrency) if rate else 0.0)
        i = 0
        try:
            while due < stop_at and time.monotonic() < stop_at:  # a server behind schedule has no time added
                if rate:
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                body = json.dumps({"conversation_id": f"load-{n}-{int(start)}", "message_id": f"m{i}",
                                   "text": TEXTS[(n + i) % len(TEXTS)]}).encode()
                sent = due if rate else time.monotonic()
                try:
                    status, payload = await client.post(path, body)
                    ok = status == 200 and b'"responses"' in payload
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    ok = False
                done = time.monotonic()
                if sent >= measure_from:
                    counts["ok" if ok else "err"] += 1
                    if ok:
                        latencies.append(done - sent)
                i += 1
                due = due + rng.expovariate(rate / concurrency) if rate else time.monotonic()
        finally:
            await client.close()

    await asyncio.gather(*(customer(n) for n in range(concurrency)))
    return counts["ok"], counts["err"], latencies


def server_env(data_dir: Path, mongodb_uri: str | None = None, **extra: str) -> dict[str, str]:
    """Environment of a benchmarked `switchboard serve`: quiet logs, no hub, and the per-client rate
    limits off (every simulated customer comes from 127.0.0.1, so they would cap the run)."""
    env = {**os.environ, "SWITCHBOARD_DATA_DIR": str(data_dir), "SWITCHBOARD_LOG_LEVEL": "WARNING",
           "HF_HUB_OFFLINE": "1", "SWITCHBOARD_RATE_PER_IP": "0", "SWITCHBOARD_RATE_PER_CONVERSATION": "0", **extra}
    if mongodb_uri:
        env["SWITCHBOARD_MONGODB_URI"] = mongodb_uri
    return env


def run_server(cmd: list[str], env: dict[str, str], url: str) -> tuple[subprocess.Popen[bytes], float]:
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {' '.join(cmd)}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, time.monotonic() - started
        except httpx.HTTPError:
            pass
        if time.monotonic() - started > 120:
            proc.kill()
            raise SystemExit("server not ready after 120 s")
        time.sleep(0.05)


def bench(name: str, cmd: list[str], env: dict[str, str], port: int, bot: str, args: argparse.Namespace) -> Result:
    url = f"http://127.0.0.1:{port}"
    proc, ready_s = run_server(cmd, env, url)
    try:
        ok, err, lat = asyncio.run(drive(url, bot, args.concurrency, args.duration, args.warmup, args.rate))
        rss = rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return Result(name, ok, err, args.duration, lat, rss, ready_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bot", type=Path, default=ROOT / "examples" / "support")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1, help="NLU threads of each server")
    parser.add_argument("--mongodb-uri", help="use this MongoDB instead of the embedded store")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--rate", type=float, help="messages per second over all customers, at random (Poisson) "
                                                    "moments; default: each customer sends again as soon as answered")
    args = parser.parse_args()

    spec = load_bot(args.bot)
    print(f"bot {spec.name} ({len(spec.intents)} intents), {args.concurrency} concurrent customers, "
          f"{args.duration:g} s (+{args.warmup:g} s warm-up), "
          f"{f'{args.rate:g} msg/s offered' if args.rate else 'each sends when answered'}, NLU threads {args.threads}, "
          f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.2f}; customers say {TEXTS_FROM}")
    data_dir = Path(tempfile.mkdtemp(prefix="switchboard-load-"))
    env = server_env(data_dir, args.mongodb_uri, SWITCHBOARD_NLU_THREADS=str(args.threads))
    results = []
    port = free_port()
    results.append(bench("switchboard", [sys.executable, "-m", "connectors.cli", "serve", str(args.bot), "--port",
                                         str(port)], env, port, spec.name, args))
    print(results[-1].line(), flush=True)
    if not args.skip_baseline:
        port = free_port()
        results.append(bench("naive-hf", [sys.executable, "bench/naive_server.py", "--port", str(port), "--labels",
                                          str(len(spec.intents)), "--threads", str(args.threads)],
                             env, port, spec.name, args))
        print(results[-1].line(), flush=True)
        a, b = results
        print(f"ratio: {(a.messages / max(b.messages, 1)):.1f}x throughput, p99 "
              f"{np.percentile(b.latencies, 99) / np.percentile(a.latencies, 99):.1f}x lower"
              if a.latencies and b.latencies else "ratio: n/a")
    shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

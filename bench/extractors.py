"""Latency of the Duckling-compatible extractors (bots/nlu/extractors.py) per customer message.

    .venv/bin/python bench/extractors.py [--data CSV] [--messages 200] [--repeat 3] [--dimensions time,number]

Takes ``--messages`` customer messages spread evenly over the Bitext ``instruction`` column (real support
questions: order numbers, amounts, dates), runs ``extract`` on each (all dimensions unless
``--dimensions``) ``--repeat`` times after one warm-up call, and prints p50/p95/max milliseconds per
message, the entities found per dimension and the load average: on a shared machine it says how much
the figures can be trusted. Not part of the test run.
"""

from __future__ import annotations

import argparse
import collections
import csv
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bots.nlu.extractors import extract, warm_up  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "bitext" / "customer_support_responses.csv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--messages", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dimensions", default="", help="comma-separated; all when empty")
    args = ap.parse_args()
    with args.data.open(encoding="utf-8", newline="") as f:
        texts = [row["instruction"] for row in csv.DictReader(f) if row.get("instruction")]
    if not texts:
        sys.exit(f"{args.data}: no 'instruction' column with text")
    step = max(1, len(texts) // args.messages)
    sample = texts[::step][:args.messages]
    dims = [d for d in args.dimensions.split(",") if d] or None
    ref = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    warm_up()
    first_ms = (time.perf_counter() - t0) * 1000
    times: list[float] = []
    found: collections.Counter[str] = collections.Counter()
    for r in range(args.repeat):
        for text in sample:
            t = time.perf_counter()
            entities = extract(text, dimensions=dims, reference_time=ref)
            times.append((time.perf_counter() - t) * 1000)
            if r == 0:
                found.update(e.entity for e in entities)
    q = statistics.quantiles(times, n=100, method="inclusive")
    print(f"{len(sample)} Bitext messages x {args.repeat}, dimensions: {', '.join(dims or ['all'])}")
    print(f"per message: p50 {q[49]:.2f} ms  p95 {q[94]:.2f} ms  max {max(times):.2f} ms  "
          f"(warm-up call {first_ms:.0f} ms)")
    print("entities:", ", ".join(f"{k} {v}" for k, v in sorted(found.items())) or "none")
    print(f"load average before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

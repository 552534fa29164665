"""How well and how fast does the frustration detector work? (issue 14, item 4)

    .venv/bin/python bench/sentiment.py [--data CSV] [--repeats R]

Quality, on the Bitext customer-service training set (../shared/data/bitext, 4,514 customer
messages, CDLA-Sharing 1.0): each message carries Bitext's language-variation tags, among them
``W`` = offensive language ("where is the bloody invoice"). That tag is the only label of an angry
customer a public customer-service set reachable here has, so "frustrated" is measured as: the
detector's ``frustrated`` (bots/nlu/sentiment.py, each message alone: no conversation, so neither
repeated questions nor repeated fallbacks can fire) against ``W``. Printed: precision, recall and F1
of the detector and of each signal alone, and the examples it gets wrong (a few of each kind).

Speed: every message scored as the runtime scores it (``SentimentScorer.score`` with the customer's
five previous messages), R passes over all of them: median and range of the time per message, and
the worst case (a message of 4,000 characters, the default limit). Prints the machine's load.
Not part of the test run.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bots.nlu.sentiment import SIGNALS, SentimentScorer  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "bitext" / "customer_support_responses.csv"
OFFENSIVE = "W"


def _load(path: Path) -> list[tuple[str, bool]]:
    if not path.exists():
        sys.exit(f"{path}: not found; the Bitext customer-service CSV (instruction, tags columns) is expected "
                 "there (../shared/data/bitext), or give --data")
    with path.open(encoding="utf-8", newline="") as f:
        rows = [(r["instruction"], OFFENSIVE in r["tags"]) for r in csv.DictReader(f)]
    if not rows:
        sys.exit(f"{path}: no rows")
    return rows


def _prf(predicted: list[bool], truth: list[bool]) -> tuple[float, float, float, int, int, int]:
    tp = sum(p and t for p, t in zip(predicted, truth, strict=True))
    fp = sum(p and not t for p, t in zip(predicted, truth, strict=True))
    fn = sum(t and not p for p, t in zip(predicted, truth, strict=True))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1, tp, fp, fn


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rows = _load(args.data)
    texts = [t for t, _ in rows]
    truth = [label for _, label in rows]
    scorer = SentimentScorer()
    moods = [scorer.score(t) for t in texts]

    print(f"data: {args.data} ({len(rows)} messages, {sum(truth)} tagged offensive ({OFFENSIVE}))")
    print(f"{'detector':<28} {'precision':>9} {'recall':>7} {'F1':>6} {'TP':>5} {'FP':>5} {'FN':>5}")

    def row(name: str, predicted: list[bool]) -> None:
        p, r, f1, tp, fp, fn = _prf(predicted, truth)
        print(f"{name:<28} {p:>9.3f} {r:>7.3f} {f1:>6.3f} {tp:>5} {fp:>5} {fn:>5}")

    row("frustrated", [m.frustrated for m in moods])
    for signal in SIGNALS:
        row(f"  signal {signal}", [signal in m.signals for m in moods])
    print("missed (tagged offensive, not frustrated):")
    for text, mood in [(t, m) for t, m, y in zip(texts, moods, truth, strict=True) if y and not m.frustrated][:8]:
        print(f"  {mood.score:+.2f} {text}")
    print("false alarms (frustrated, not tagged):")
    for text, mood in [(t, m) for t, m, y in zip(texts, moods, truth, strict=True) if m.frustrated and not y][:8]:
        print(f"  {mood.score:+.2f} {','.join(mood.signals)}: {text}")

    # Speed: as the runtime scores a message (against the customer's earlier ones). CPU time of this
    # thread is the steadier figure on a shared machine; wall time is printed beside it.
    def timed(work: list[tuple[str, list[str]]]) -> tuple[list[float], list[float]]:
        cpu, wall = [], []
        for _ in range(args.repeats):
            started, started_cpu = time.perf_counter(), time.thread_time()
            for text, earlier in work:
                scorer.score(text, earlier)
            cpu.append((time.thread_time() - started_cpu) / len(work) * 1e6)
            wall.append((time.perf_counter() - started) / len(work) * 1e6)
        return cpu, wall

    def show(what: str, cpu: list[float], wall: list[float]) -> None:
        print(f"{what}: CPU median {statistics.median(cpu):.1f} µs (range {min(cpu):.1f}-{max(cpu):.1f}), "
              f"wall median {statistics.median(wall):.1f} µs (range {min(wall):.1f}-{max(wall):.1f})")

    show(f"time per message ({args.repeats} passes over {len(texts)} messages)",
         *timed([(t, texts[max(0, i - 5):i]) for i, t in enumerate(texts)]))
    longest = ("I ordered a blue shirt three weeks ago and it still has not arrived. " * 60)[:4000]
    show("time per 4,000-character message after five of them", *timed([(longest, [longest] * 5)] * 200))
    load = os.getloadavg()
    print(f"machine load (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Two requests in one message (bots/nlu/multi.py): how many are found, and how often one request is taken for two.

    .venv/bin/python bench/multi_intent.py [--sets bitext,banking77] [--pairs N] [--seed N] [--mode fast|finetune]
                                           [--min-confidence X,Y,...]

For each data set one model is trained as ``switchboard train`` trains it, and served as a bot.yml bot serves it
(the calibrated out-of-scope point, spelling correction), with the two-request reading off and on:

- single requests: the test messages as they are (Bitext: 20% of its messages, held out; BANKING77: its test
  set). Every one asks one thing, so a message read as two is a false alarm; printed: served accuracy (the first
  request's intent counts), the share read as two, and the messages it made right or wrong.
- two requests: ``--pairs`` messages made of two test messages of different intents joined as customers join
  them ("…, and also …", "… and …", "…. Also, …", "… and then …"), seeded. Printed, with the reading off and
  on: the share whose intent is either of the two; on: the share whose first request is read right, and the
  share whose both requests are read right.

``--min-confidence`` repeats the figures for each of these part confidences (default: bots/nlu/multi.py's).

Inputs: ../shared/data (Bitext, CDLA-Sharing 1.0; BANKING77, CC BY 4.0): the bench stops with a message when
they are missing. Not part of the test run.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from spelling import banking77_sets, bitext_sets  # noqa: E402

from bots.nlu import multi  # noqa: E402
from bots.nlu.model import OnnxNLU  # noqa: E402
from bots.types import Understanding  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import NluData, Sample, clean  # noqa: E402

JOINS = (", and also ", " and ", ". Also, ", " and then ")


def pairs(test: list[Sample], n: int, seed: int) -> list[tuple[str, str, str]]:
    """``n`` messages made of two test messages of different intents: (text, first intent, second intent)."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        a, b = rng.sample(test, 2)
        if a.intent == b.intent:
            continue
        join = rng.choice(JOINS)
        first = a.text.rstrip(" ?.!")
        second = b.text if join.endswith(". Also, ") or not b.text[:1].isupper() else b.text[0].lower() + b.text[1:]
        out.append((first + join + second, a.intent, b.intent))
    return out


def read(nlu: OnnxNLU, texts: list[str], on: bool) -> list[Understanding]:
    nlu.multi_intent = on
    return nlu.predict(texts)


def report(nlu: OnnxNLU, name: str, test: list[Sample], made: list[tuple[str, str, str]]) -> None:
    texts = [s.text for s in test]
    off, on = read(nlu, texts, False), read(nlu, texts, True)
    right_off = [u.intent == s.intent for u, s in zip(off, test, strict=True)]
    right_on = [u.intent == s.intent for u, s in zip(on, test, strict=True)]
    flagged = sum(bool(u.also) for u in on)
    print(f"\n{name}: single requests ({len(test)}): served accuracy off {100 * sum(right_off) / len(test):.2f}%, "
          f"on {100 * sum(right_on) / len(test):.2f}%; read as two {flagged} ({100 * flagged / len(test):.2f}%): "
          f"made wrong {sum(a and not b for a, b in zip(right_off, right_on, strict=True))}, made right "
          f"{sum(b and not a for a, b in zip(right_off, right_on, strict=True))}")
    for u, s in [(u, s) for u, s in zip(on, test, strict=True) if u.also][:8]:
        print(f"  e.g. {s.text!r} ({s.intent}) read as {u.intent} + {u.also[0].name}")
    ptexts = [t for t, _, _ in made]
    p_off, p_on = read(nlu, ptexts, False), read(nlu, ptexts, True)
    n = len(made)
    either = sum(u.intent in (a, b) for u, (_, a, b) in zip(p_off, made, strict=True))
    either_on = sum(u.intent in (a, b) for u, (_, a, b) in zip(p_on, made, strict=True))
    first = sum(u.intent == a for u, (_, a, _) in zip(p_on, made, strict=True))
    both = sum(u.intent == a and bool(u.also) and u.also[0].name == b for u, (_, a, b) in zip(p_on, made, strict=True))
    print(f"{name}: two requests ({n}): off, the one intent is one of the two {100 * either / n:.1f}%; on, it is one "
          f"of the two {100 * either_on / n:.1f}%, the first read right {100 * first / n:.1f}%, both read right "
          f"{100 * both / n:.1f}%", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="bitext,banking77")
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mode", default="fast", choices=("fast", "finetune"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-confidence", default=str(multi.MIN_CONFIDENCE), help="comma-separated")
    args = parser.parse_args()
    from training.pipeline import train as train_model

    print(f"mode {args.mode}, pairs {args.pairs}, seed {args.seed}, load average {os.getloadavg()[0]:.1f}", flush=True)
    for name in args.sets.split(","):
        train, tests = bitext_sets() if name == "bitext" else banking77_sets(args.seed)
        test = next(iter(tests.values()))  # the clean test set
        data = clean(NluData(tuple(train)), min_examples=0, max_per_intent=0, seed=0)
        with tempfile.TemporaryDirectory(prefix="multi-") as tmp:
            trained = train_model(data, TrainConfig(mode=args.mode, threads=args.threads), bot_name=name,
                                  out_dir=Path(tmp) / "model")
            nlu = OnnxNLU.load(trained.directory, threads=args.threads)
            for level in (float(x) for x in args.min_confidence.split(",")):
                multi.MIN_CONFIDENCE = level
                report(nlu, f"{name}, part confidence >= {level}", test, pairs(test, args.pairs, args.seed))
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

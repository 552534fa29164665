"""Spelling correction (bots/nlu/spelling.py): what it gains on typed typos, what it costs on clean text.

    .venv/bin/python bench/spelling.py [--sets bitext,banking77] [--mode fast|finetune] [--seed N]

For each data set one model is trained as ``switchboard train`` trains it (spelling on: the artifact keeps the
training vocabulary) and its test messages are scored twice by the served model, with the correction and with
it switched off (``OnnxNLU.speller = None``), at the same calibrated out-of-scope point:

- ``bitext``: Bitext customer support (../shared/data/bitext, CDLA-Sharing 1.0). Trained on the messages
  *without* the tag ``Z`` (Bitext's "noise phenomena like spelling or punctuation errors"), tested on the ones
  with it: 814 messages with the typos people really typed, and a clean test split of the others (20%).
- ``banking77``: BANKING77 (../shared/data/banking77, CC BY 4.0): its test set as it is, and the same test set
  with one typo made in each message (seeded: a word of 4+ letters, one letter deleted, inserted, replaced or
  swapped with its neighbour).

Prints, per test set and setting: the model's best intent's accuracy (closed set), the served accuracy (the
out-of-scope rule applied: a rejected message counts as wrong), the share of messages rejected, the share of
messages the speller changed, and the speller's CPU time per message. Not part of the test run.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import string
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bots.nlu.model import OnnxNLU  # noqa: E402
from bots.nlu.oos import NOT_UNDERSTOOD  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import NluData, Sample, clean, stratified_split  # noqa: E402
from training.importers import load_csv  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
BITEXT = DATA / "bitext" / "customer_support_responses.csv"
BANKING77 = DATA / "banking77"


def _need(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        sys.exit(f"bench/spelling.py: input missing: {', '.join(missing)} (the ../shared/data folder of the "
                 "project: BANKING77 and Bitext, see their LICENSE files)")


def bitext_sets() -> tuple[list[Sample], dict[str, list[Sample]]]:
    _need(BITEXT)
    noisy: list[Sample] = []
    rest: list[Sample] = []
    seen: set[str] = set()
    with BITEXT.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            text, intent = row["instruction"].strip(), row["intent"].strip()
            if not text or text.lower() in seen:
                continue
            seen.add(text.lower())
            sample = Sample(text, intent, (), f"{BITEXT}:{reader.line_num}")
            (noisy if "Z" in row["tags"] else rest).append(sample)
    train, clean_test = stratified_split(rest, 0.2, seed=0)
    return train, {"bitext clean (20% of the untagged)": clean_test, "bitext typos (tag Z, as typed)": noisy}


def _typo(text: str, rng: random.Random) -> str:
    words = [(i, w) for i, w in enumerate(text.split(" ")) if len(w) >= 4 and w.isalpha()]
    if not words:
        return text
    i, w = rng.choice(words)
    k = rng.randrange(len(w))
    kind = rng.choice(("delete", "insert", "replace", "swap"))
    letter = rng.choice(string.ascii_lowercase)
    if kind == "delete":
        w = w[:k] + w[k + 1:]
    elif kind == "insert":
        w = w[:k] + letter + w[k:]
    elif kind == "replace":
        w = w[:k] + letter + w[k + 1:]
    else:
        k = min(k, len(w) - 2)
        w = w[:k] + w[k + 1] + w[k] + w[k + 2:]
    parts = text.split(" ")
    parts[i] = w
    return " ".join(parts)


def banking77_sets(seed: int) -> tuple[list[Sample], dict[str, list[Sample]]]:
    _need(BANKING77 / "train.csv", BANKING77 / "test.csv")
    train = list(load_csv(BANKING77 / "train.csv").samples)
    test = list(load_csv(BANKING77 / "test.csv").samples)
    rng = random.Random(seed)
    typos = [Sample(_typo(s.text, rng), s.intent, (), s.source) for s in test]
    return train, {"banking77 test": test, "banking77 test, one typo each": typos}


def score(nlu: OnnxNLU, test: list[Sample]) -> dict[str, float]:
    texts = [s.text for s in test]
    changed = 0
    if nlu.speller is not None:
        t0 = time.process_time()
        changed = sum(1 for t in texts if nlu.speller.correct(t).changes)
        per = (time.process_time() - t0) / len(texts) * 1000
    else:
        per = 0.0
    out = nlu.predict(texts)
    closed = sum(u.ranking[0].name == s.intent for u, s in zip(out, test, strict=True)) / len(test)
    served = sum(u.intent == s.intent for u, s in zip(out, test, strict=True)) / len(test)
    rejected = sum(u.intent == NOT_UNDERSTOOD for u in out) / len(test)
    return {"closed": closed, "served": served, "rejected": rejected, "changed": changed / len(test), "ms": per}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="bitext,banking77")
    parser.add_argument("--mode", default="fast", choices=("fast", "finetune"))
    parser.add_argument("--seed", type=int, default=0, help="of BANKING77's typos")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    cfg = TrainConfig(mode=args.mode, threads=args.threads)
    from training.pipeline import train as train_model

    print(f"mode {args.mode}, load average {os.getloadavg()[0]:.1f}", flush=True)
    print("| test set | messages | spelling | closed-set accuracy | served accuracy | rejected | changed | "
          "speller CPU ms/msg |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.sets.split(","):
        train, tests = bitext_sets() if name == "bitext" else banking77_sets(args.seed)
        data = clean(NluData(tuple(train)), min_examples=0, max_per_intent=0, seed=0)
        with tempfile.TemporaryDirectory(prefix="spelling-") as tmp:
            trained = train_model(data, cfg, bot_name=name, out_dir=Path(tmp) / "model")
            nlu = OnnxNLU.load(trained.directory, threads=args.threads)
            speller = nlu.speller
            for test_name, test in tests.items():
                for setting in ("off", "on"):
                    nlu.speller = speller if setting == "on" else None
                    f = score(nlu, test)
                    print(f"| {test_name} | {len(test)} | {setting} | {100 * f['closed']:.2f}% | "
                          f"{100 * f['served']:.2f}% | {100 * f['rejected']:.2f}% | {100 * f['changed']:.1f}% | "
                          f"{f['ms']:.3f} |", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

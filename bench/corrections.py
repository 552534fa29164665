"""Do agents' corrections make the next model better? The review UI's correction loop on BANKING77.

    nice -n 10 .venv/bin/python bench/corrections.py [--n 50 100 200] [--seeds 13 14 15]
                                                     [--base-per-intent 20] [--threads 1]

For each seed, BANKING77's training set is split: ``--base-per-intent`` examples per intent train the
first model, the rest (shuffled) is the held-out traffic the bot then serves. An agent corrects the first N
misclassified messages in arrival order; the corrections go through the review UI's export code path
(``bots.corrections.corrections_document`` in the ``switchboard`` format, written to a file, read back by
``training.importers.load_data`` as ``switchboard train`` reads ``BOT_DIR/corrections.yml``: pinned, never
held out), and the model is retrained on the first model's data plus the corrections. Training is the fast
mode of ``switchboard train --fast`` (training/linear.py: the frozen all-MiniLM-L6-v2 encoder's normalised
mean-pooled embeddings, logistic-regression intent head, ``TrainConfig`` defaults): every text is encoded
once and each retrain fits the head again, which is what the fast mode does before its ONNX export.

Printed per N: accuracy on BANKING77's untouched test split before and after (points), and the share of the
corrected messages the retrained model now labels right; median and spread (min..max) over the seeds.
Target (issue 18): fixes >= 80% of the corrected messages, gains on the test split, never loses > 0.2 points.
Not part of the test run.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bots.botspec import BotSpec, Intent  # noqa: E402
from bots.corrections import CorrectedExample, corrections_document  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import NluData, Sample  # noqa: E402
from training.importers import load_csv, load_data  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "banking77"


def embed(texts: list[str], threads: int) -> dict[str, np.ndarray]:
    """The fast mode's features of every text: the frozen encoder's normalised mean-pooled embedding."""
    import torch

    from training.linear import extract
    from training.pipeline import build_model
    from training.tokens import encode

    torch.set_num_threads(threads)
    unique = sorted(set(texts))
    samples = [Sample(t, "x") for t in unique]
    model, tokenizer, _, tags = build_model(NluData(tuple(samples)), TrainConfig(mode="fast"))
    with torch.no_grad():
        feats = extract(model, encode(tokenizer, samples, tags), tokens=False, desc="encoding (frozen)")
    return dict(zip(unique, feats.embeddings, strict=True))


class Head:
    """The fast mode's intent head (training/linear.py ``_fit``, the same solver, C and seed)."""

    def __init__(self, labels: list[str], samples: list[Sample], vectors: dict[str, np.ndarray], seed: int) -> None:
        from training.linear import _fit

        self.labels = labels
        index = {name: i for i, name in enumerate(labels)}
        x = np.stack([vectors[s.text] for s in samples])
        y = np.array([index[s.intent] for s in samples], dtype=np.int64)
        self.weight, self.bias = _fit(x, y, len(labels), TrainConfig().linear_c, seed)

    def predict(self, texts: list[str], vectors: dict[str, np.ndarray]) -> list[str]:
        scores = np.stack([vectors[t] for t in texts]) @ self.weight.T + self.bias
        return [self.labels[i] for i in scores.argmax(axis=1)]


def accuracy(gold: list[str], predicted: list[str]) -> float:
    return sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold)


def through_export(spec: BotSpec, corrected: list[Sample], folder: Path) -> list[Sample]:
    """The corrections as the review UI exports them and as ``switchboard train`` reads them back."""
    examples = [CorrectedExample(s.text, s.intent, (), f"conversation-{i}#1") for i, s in enumerate(corrected)]
    document = corrections_document(spec, examples, "switchboard")
    path = folder / "corrections.yml"
    path.write_text(document.text, encoding="utf-8")
    read = load_data(path)
    return [Sample(s.text, s.intent, s.entities, s.source, pinned=True) for s in read.samples]


Row = tuple[float, float, float, int]  # test accuracy before, after, share of corrections fixed, corrections


def run_seed(seed: int, ns: list[int], base_per_intent: int, train: list[Sample], test: list[Sample],
             vectors: dict[str, np.ndarray], spec: BotSpec, labels: list[str]) -> dict[int, Row]:
    rng = random.Random(seed)
    by_intent: dict[str, list[Sample]] = defaultdict(list)
    for s in train:
        by_intent[s.intent].append(s)
    base: list[Sample] = []
    traffic: list[Sample] = []
    for intent in sorted(by_intent):
        group = list(by_intent[intent])
        rng.shuffle(group)
        base += group[:base_per_intent]
        traffic += group[base_per_intent:]
    rng.shuffle(traffic)
    test_texts, test_gold = [s.text for s in test], [s.intent for s in test]
    first = Head(labels, base, vectors, seed)
    before = accuracy(test_gold, first.predict(test_texts, vectors))
    served = first.predict([s.text for s in traffic], vectors)
    wrong = [s for s, p in zip(traffic, served, strict=True) if p != s.intent]
    out = {}
    for n in ns:
        corrected = wrong[:n]
        with tempfile.TemporaryDirectory(prefix="corrections-") as tmp:
            fixed = through_export(spec, corrected, Path(tmp))
        if len(fixed) != len({" ".join(s.text.lower().split()) for s in corrected}):
            raise SystemExit(f"the export lost corrections: {len(fixed)} of {len(corrected)} read back")
        second = Head(labels, base + fixed, vectors, seed)
        after = accuracy(test_gold, second.predict(test_texts, vectors))
        now = second.predict([s.text for s in fixed], vectors)
        fixes = accuracy([s.intent for s in fixed], now)
        out[n] = (before, after, fixes, len(fixed))
    return out


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}..{max(values):.2f})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--n", type=int, nargs="+", default=[50, 100, 200], help="corrected messages")
    p.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    p.add_argument("--base-per-intent", type=int, default=20, help="examples per intent of the first model")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    train = list(load_csv(args.data_dir / "train.csv").samples)
    test = list(load_csv(args.data_dir / "test.csv").samples)
    labels = sorted({s.intent for s in train})
    spec = BotSpec("banking77", args.data_dir, {name: Intent(name, (), ("ok",)) for name in labels})
    print(f"BANKING77: {len(train)} training messages, {len(test)} test messages (untouched), {len(labels)} "
          f"intents; first model {args.base_per_intent} per intent; seeds {args.seeds}; {args.threads} thread(s); "
          f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, "
          f"{os.cpu_count()} CPUs")
    t0 = time.perf_counter()
    texts = [s.text for s in train + test]
    vectors = embed(texts + [" ".join(t.split()) for t in texts], args.threads)  # as exported: single spaces
    print(f"encoded {len(vectors)} texts once in {time.perf_counter() - t0:.1f} s")
    results: dict[int, list[Row]] = defaultdict(list)
    for seed in args.seeds:
        t0 = time.perf_counter()
        for n, row in run_seed(seed, args.n, args.base_per_intent, train, test, vectors, spec, labels).items():
            results[n].append(row)
            before, after, fixes, count = row
            print(f"seed {seed} N={n}: {count} corrections exported; test accuracy {before * 100:.2f} -> "
                  f"{after * 100:.2f} ({(after - before) * 100:+.2f} points); corrected messages now right "
                  f"{fixes * 100:.1f}%")
        print(f"seed {seed}: {time.perf_counter() - t0:.1f} s")
    print("median (min..max) over seeds:")
    for n in args.n:
        rows = results[n]
        print(f"N={n}: test accuracy before {spread([r[0] * 100 for r in rows])}, after "
              f"{spread([r[1] * 100 for r in rows])}, change {spread([(r[1] - r[0]) * 100 for r in rows])} points; "
              f"corrected messages fixed {spread([r[2] * 100 for r in rows])}%")
    load_after = os.getloadavg()
    print(f"load average after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What the intent classifier's n-gram features (bots/nlu/ngrams.py) cost per message, served.

    .venv/bin/python bench/ngrams.py [--artifact DIR] [--data-dir DIR] [--ngram-features SPEC] [--runs N]
                                     [--texts N]

Times ``NgramHead.logits`` for one message at a time (what ``OnnxNLU`` adds to each text's intent logits) over
BANKING77's test texts: the first pass with an empty word cache (every word's ``char_wb`` columns looked up),
then ``--runs`` passes with it filled; prints the median and the spread (min-max) of the passes, in wall time
and in this process's CPU time (on a shared machine the CPU time is the steadier of the two), the
vocabulary size, and the load average before and after. With ``--artifact`` the head is the artifact's own;
otherwise the vocabulary is fitted on BANKING77's training texts with weights drawn at random for its 77
intents (the cost does not depend on the weights' values, only on the vocabulary and the number of intents).
Not part of the test run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bots.artifact import read_manifest  # noqa: E402
from bots.nlu.ngrams import NgramHead, NgramVectorizer, parse_analyzers  # noqa: E402
from training.importers import load_csv  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "banking77"


def _pass(head: NgramHead, texts: list[str]) -> tuple[float, float]:
    """Wall and CPU (this process) milliseconds per message."""
    t0, c0 = time.perf_counter(), time.process_time()
    for text in texts:
        head.logits([text])
    return (time.perf_counter() - t0) / len(texts) * 1e3, (time.process_time() - c0) / len(texts) * 1e3


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", type=Path, help="a trained artifact folder with n-gram features")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--ngram-features", default="word,char_wb:1-4", metavar="SPEC")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--texts", type=int, default=1000, help="test texts per pass")
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    texts = [s.text for s in load_csv(args.data_dir / "test.csv").samples][: args.texts]
    if args.artifact:
        manifest = read_manifest(args.artifact)
        if not manifest.ngrams:
            sys.exit(f"bench/ngrams.py: {args.artifact} has no n-gram features")
        head = NgramHead.load(args.artifact, manifest.ngrams, len(manifest.labels))
        source = str(args.artifact)
    else:
        train = load_csv(args.data_dir / "train.csv").samples
        vectorizer = NgramVectorizer.fit([s.text for s in train], parse_analyzers(args.ngram_features))
        labels = len({s.intent for s in train})
        weights = np.random.default_rng(0).standard_normal((labels, len(vectorizer.features))).astype(np.float32)
        head = NgramHead(vectorizer, weights)
        source = f"fitted on {len(train)} BANKING77 training texts, random weights"
    print(f"load average before {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, {os.cpu_count()} "
          f"CPUs; head: {source}; {len(head.vectorizer.features)} features "
          f"({', '.join(map(str, head.vectorizer.analyzers))}), {head.labels} intents; {len(texts)} texts, "
          f"{statistics.mean(len(t.split()) for t in texts):.1f} words on average")
    cold = _pass(head, texts)
    warm = [_pass(head, texts) for _ in range(args.runs)]
    print(f"per message, first pass (word cache empty): wall {cold[0]:.4f} ms, CPU {cold[1]:.4f} ms")
    for i, what in enumerate(("wall", "CPU")):
        runs = [w[i] for w in warm]
        print(f"per message, word cache filled, {what}: median {statistics.median(runs):.4f} ms (min-max "
              f"{min(runs):.4f}-{max(runs):.4f} over {args.runs} passes)")
    load_after = os.getloadavg()
    print(f"load average after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

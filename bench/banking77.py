"""BANKING77 benchmark: train, score the served model, time batch-1 latency.

    .venv/bin/python bench/banking77.py [--mode finetune|fast] [--epochs N] [--threads N]
                                        [--max-examples-per-intent N] [--max-test N] [--latency-samples N]
                                        [--ngram-features SPEC]

Prints closed-set test accuracy and macro-F1 of the model's best intent (ONNX fp32 and int8),
and the share of in-scope test messages the served out-of-scope rule rejects (bots/nlu/oos.py,
the calibrated operating point), training wall time, batch-1 latency p50/p95 for eager torch,
ONNX fp32 and ONNX int8 (tokenisation and, for ONNX, the out-of-scope scores and rule included),
the thread count and the load average before and after: on a shared machine the load average
says how much the figures can be trusted. ``--ngram-features word,char_wb:1-4`` trains the intent classifier
with n-gram features (bots/nlu/ngrams.py; default: TrainConfig's); bench/ngrams.py measures what they cost.
Not part of the test run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bots.nlu.model import OnnxNLU  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import NluData, clean  # noqa: E402
from training.importers import load_csv  # noqa: E402
from training.scoring import intent_report  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "banking77"


def _percentiles(samples_ms: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(samples_ms, n=100, method="inclusive")
    return q[49], q[94]


def _time(fn: Callable[[str], object], texts: Sequence[str]) -> tuple[float, float]:
    for t in texts[:10]:  # warm-up
        fn(t)
    out = []
    for t in texts:
        t0 = time.perf_counter()
        fn(t)
        out.append((time.perf_counter() - t0) * 1000)
    return _percentiles(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--mode", choices=("finetune", "fast"), default="finetune")
    p.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-examples-per-intent", type=int, default=0, help="0 = the full training set")
    p.add_argument("--max-test", type=int, default=0, help="0 = the full test set")
    p.add_argument("--latency-samples", type=int, default=300)
    p.add_argument("--seed", type=int, default=TrainConfig().seed)
    p.add_argument("--ngram-features", default=TrainConfig().ngram_features, metavar="SPEC",
                   help="n-gram features of the intent classifier, e.g. word,char_wb:1-4 ('' = none)")
    args = p.parse_args(argv)

    import torch

    from training.pipeline import train

    load_before = os.getloadavg()
    train_data = clean(load_csv(args.data_dir / "train.csv"), min_examples=0,
                       max_per_intent=args.max_examples_per_intent, seed=args.seed)
    test = list(load_csv(args.data_dir / "test.csv").samples)
    if args.max_test:
        test = test[:: max(1, len(test) // args.max_test)][: args.max_test]
    cfg = TrainConfig(mode=args.mode, epochs=args.epochs, threads=args.threads, seed=args.seed,
                      validation_fraction=0.1, ngram_features=args.ngram_features)
    print(f"threads {args.threads}, load average before {load_before[0]:.2f} {load_before[1]:.2f} "
          f"{load_before[2]:.2f}, {os.cpu_count()} CPUs")
    print(f"train {len(train_data.samples)} examples, test {len(test)}; config {cfg.to_dict()}")
    with tempfile.TemporaryDirectory(prefix="banking77-") as tmp:
        t0 = time.perf_counter()
        trained = train(NluData(train_data.samples), cfg, bot_name="banking77", out_dir=Path(tmp) / "model")
        train_seconds = time.perf_counter() - t0
        m = trained.manifest
        print(f"training wall time {train_seconds:.1f} s (validation accuracy {m.metrics['accuracy']:.4f}, "
              f"linear-head validation accuracy {m.extra.get('linear_accuracy', float('nan')):.4f}, "
              f"best epoch {m.extra.get('best_epoch', '-')}, serving {m.onnx_file})")
        gold = [s.intent for s in test]
        texts = [s.text for s in test]
        nlus = {name: OnnxNLU.load(trained.directory, threads=args.threads, onnx_file=f)
                for name, f in (("onnx fp32", "model.onnx"), ("onnx int8", "model.int8.onnx"))}
        print(f"out-of-scope operating point: {nlus['onnx int8'].point.describe()}")
        for name, nlu in nlus.items():
            scored = nlu.score(texts)
            report = intent_report(gold, [x.understanding.intent for x in scored])
            rejected = sum(1 for x in scored if nlu.decide(x).intent != x.understanding.intent) / len(scored)
            print(f"{name}: closed-set test accuracy {report['accuracy']:.4f}, macro-F1 "
                  f"{report['macro avg']['f1-score']:.4f}; in-scope test messages rejected as out of scope "
                  f"{rejected:.4f}")

        torch.set_num_threads(args.threads)
        model = trained.model.eval()
        tokenizer = nlus["onnx fp32"]._tokenizer  # the served tokenizer, for a like-for-like comparison

        @torch.no_grad()
        def eager(text: str) -> object:
            enc = tokenizer.encode_batch([text])
            ids = torch.tensor([e.ids for e in enc])
            mask = torch.tensor([e.attention_mask for e in enc])
            return model(ids, mask)[0].softmax(-1)

        probe = texts[: args.latency_samples]
        rows = [("eager torch", _time(eager, probe))]
        for name, nlu in nlus.items():
            rows.append((name, _time(lambda t, n=nlu: n.predict([t]), probe)))  # type: ignore[misc]
        for name, (p50, p95) in rows:
            print(f"batch-1 latency {name}: p50 {p50:.2f} ms, p95 {p95:.2f} ms")
        eager_p50 = rows[0][1][0]
        print(f"int8 speed-up over eager torch (p50): {eager_p50 / rows[2][1][0]:.2f}x")
    load_after = os.getloadavg()
    print(f"load average after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

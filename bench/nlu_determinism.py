"""Does a message score the same alone and in a batch, and at what speed? (issue 14, item 2)

    .venv/bin/python bench/nlu_determinism.py [--model ARTIFACT] [--texts N] [--repeats R]
                                              [--max-examples-per-intent N] [--threads N]

Without ``--model`` it trains a fast-mode BANKING77 model (../shared/data/banking77, capped per
intent) into a temporary folder; training writes the fp32 file and the static-int8 twin
(training/export.py). The bench adds the int8 twin as training made it before (dynamic
activation scales, ``quantize_dynamic``) and compares the three on N test texts:

- determinism: each text scored alone, then in shuffled batches of 2, 8, 32 and 64 texts:
  texts whose intent changes, and the largest confidence change;
- accuracy of the texts scored alone;
- speed, R times, interleaved: batch-1 latency p50 over 200 texts and batch throughput
  (texts/s, all N texts in one ``predict`` call, which cuts them into padded groups of 8), as
  wall time and as CPU time of the scoring thread (ONNX Runtime runs on the calling thread with
  one intra-op thread; on a shared machine CPU time is the steadier figure). Median and range.

"dynamic, batched" is what serving did before; "dynamic, one per call" is how bots/nlu/model.py
now serves such an old file (exact, slower). Not part of the test run.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bots.nlu.model import OnnxNLU  # noqa: E402
from training.importers import load_csv  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "banking77"
BATCH_SIZES = (2, 8, 32, 64)


def _train(data_dir: Path, out: Path, per_intent: int, threads: int) -> None:
    from training.config import TrainConfig
    from training.data import NluData, clean
    from training.pipeline import train

    data = clean(load_csv(data_dir / "train.csv"), min_examples=0, max_per_intent=per_intent, seed=13)
    cfg = TrainConfig(mode="fast", threads=threads, seed=13, validation_fraction=0.1)
    train(NluData(data.samples), cfg, bot_name="banking77", out_dir=out)


def _dynamic_twin(artifact: Path) -> None:
    """The int8 file as training/export.py wrote it before issue 14 (dynamic activation scales)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(artifact / "model.onnx"), str(artifact / "model.dynamic-int8.onnx"),
                         weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul", "Gemm"])


def _determinism(nlu: OnnxNLU, texts: list[str], gold: list[str]) -> tuple[int, int, float, float]:
    """(texts whose intent changed in some batch, comparisons, largest confidence change, accuracy alone)."""
    alone = [nlu.predict([t])[0] for t in texts]
    rng = random.Random(0)
    changed: set[int] = set()
    worst, compared = 0.0, 0
    for size in BATCH_SIZES:
        order = list(range(len(texts)))
        rng.shuffle(order)
        for start in range(0, len(order), size):
            rows = order[start:start + size]
            for row, got in zip(rows, nlu.predict([texts[r] for r in rows]), strict=True):
                compared += 1
                worst = max(worst, abs(got.confidence - alone[row].confidence))
                if got.intent != alone[row].intent:
                    changed.add(row)
    accuracy = sum(a.intent == g for a, g in zip(alone, gold, strict=True)) / len(gold)
    return len(changed), compared, worst, accuracy


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this thread)."""
    w0, c0 = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - w0, time.thread_time() - c0


def _speed(nlu: OnnxNLU, texts: list[str]) -> tuple[float, float, float, float]:
    """(p50 wall ms, p50 CPU ms, throughput wall /s, throughput CPU /s) for one round."""
    probe = texts[:200]
    for t in probe[:10]:
        nlu.predict([t])
    single = [_timed(lambda t=t: nlu.predict([t])) for t in probe]  # type: ignore[misc]
    wall, cpu = _timed(lambda: nlu.predict(texts))
    return (statistics.median(s[0] for s in single) * 1000, statistics.median(s[1] for s in single) * 1000,
            len(texts) / wall, len(texts) / cpu)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="an artifact folder with model.onnx and model.int8.onnx")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--texts", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--max-examples-per-intent", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    load_before = os.getloadavg()
    test = list(load_csv(args.data_dir / "test.csv").samples)
    random.Random(1).shuffle(test)
    test = test[:args.texts]
    texts, gold = [s.text for s in test], [s.intent for s in test]
    with tempfile.TemporaryDirectory(prefix="nlu-determinism-") as tmp:
        artifact = args.model
        if artifact is None:
            artifact = Path(tmp) / "model"
            t0 = time.perf_counter()
            _train(args.data_dir, artifact, args.max_examples_per_intent, args.threads)
            print(f"trained a fast BANKING77 model ({args.max_examples_per_intent} examples per intent) "
                  f"in {time.perf_counter() - t0:.0f} s")
        _dynamic_twin(artifact)
        nlus = {
            "fp32": OnnxNLU.load(artifact, threads=args.threads, onnx_file="model.onnx"),
            "int8 dynamic, batched (before)": OnnxNLU.load(artifact, threads=args.threads,
                                                           onnx_file="model.dynamic-int8.onnx"),
            "int8 dynamic, one per call": OnnxNLU.load(artifact, threads=args.threads,
                                                       onnx_file="model.dynamic-int8.onnx"),
            "int8 static (after)": OnnxNLU.load(artifact, threads=args.threads, onnx_file="model.int8.onnx"),
        }
        nlus["int8 dynamic, batched (before)"].group = 8  # as served before: 8 texts per model call
        print(f"{len(texts)} BANKING77 test texts, {args.threads} thread(s), load average before "
              f"{load_before[0]:.2f}, {os.cpu_count()} CPUs")
        print(f"\n{'model':32} {'intent changed':>16} {'max |Δconf|':>12} {'accuracy alone':>15}")
        for name, nlu in nlus.items():
            changed, compared, worst, accuracy = _determinism(nlu, texts, gold)
            print(f"{name:32} {changed:>5} of {len(texts):<8} {worst:>12.2e} {accuracy:>15.4f}"
                  f"   ({compared} batched scorings, batch sizes {', '.join(map(str, BATCH_SIZES))})")
        rounds: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in nlus}
        for _ in range(args.repeats):
            for name, nlu in nlus.items():
                rounds[name].append(_speed(nlu, texts))
        print(f"\nspeed, median [min-max] of {args.repeats} interleaved rounds")
        print(f"{'model':32} {'p50 wall ms':>20} {'p50 CPU ms':>20} {'batch texts/s wall':>22} "
              f"{'batch texts/s CPU':>22}")
        for name, values in rounds.items():
            cells = []
            for k in range(4):
                col = [v[k] for v in values]
                digits = 2 if k < 2 else 0
                cells.append(f"{statistics.median(col):.{digits}f} [{min(col):.{digits}f}-{max(col):.{digits}f}]")
            print(f"{name:32} {cells[0]:>20} {cells[1]:>20} {cells[2]:>22} {cells[3]:>22}")
    load_after = os.getloadavg()
    print(f"\nload average after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Out-of-scope detection on BANKING77, with the open-intent protocol of Zhang et al. (AAAI 2021, ADB).

    .venv/bin/python bench/oos.py [--mode fast|finetune] [--known 0.25,0.5,0.75] [--seeds 0,1,2]
                                  [--epochs N] [--threads N] [--max-test N] [--targets T1,T2]
                                  [--data DIR_OR_CSV] [--max-examples-per-intent N] [--ngram-features SPEC]
                                  [--no-spelling] [--oos-label NAME] [--oos-train]

For each share of known intents and each seed: that share of the 77 intents is drawn at random
(seeded), the model is trained on the training examples of those intents only (the pipeline's
held-out split of them is the validation set: the operating point is calibrated there, with no
out-of-scope example, for the default target), and the whole test set is scored with the test
examples of the other intents labelled out_of_scope. For every out-of-scope method (bots/nlu/oos.py)
at its own calibrated point it prints: accuracy and macro-F1 over the known intents plus the open
class (as ADB reports them), in-scope accuracy and out-of-scope recall; then the median and the
spread (min-max) over seeds. Each method is calibrated for each of ``--targets`` on the held-out
split; the first target with the default method, marked ``served``, is what the pipeline itself
writes into the artifact.
Also the closed-set accuracy on the known intents (nothing rejected) and the load average.
Published ADB (BERT-base) figures to compare with: 25% known 78.85 / 71.62, 50% 78.86 / 80.90,
75% 81.08 / 85.96 (accuracy / macro-F1, %).
``--data`` takes another data set the same way: a folder with ``train.csv`` and ``test.csv``, or one CSV
(``text,intent`` or Bitext's columns) that is split 80/20 per intent (seeded; exact duplicate texts, case
ignored, are dropped first, so no test text is also a training text), e.g. Bitext's customer-support CSV,
whose 27 intents span several topics of a shop's support (BANKING77 is one domain).
``--data`` also reads CLINC150's ``data_full.json`` (Larson et al., 2019; keys ``train``/``test``/``oos_test``/
``oos_train``, lists of ``[text, intent]``) as it is distributed: ``--known 1`` is then its standard out-of-scope
protocol (all 150 intents known, the ``oos_test`` queries out of scope). Its ``oos_train`` queries are left out
unless ``--oos-train`` is given, when they train the learned ``out_of_scope`` intent (bots/nlu/oos.py).
``--oos-label NAME`` names the label that means out of scope in a CSV (default ``oos``, CLINC150's; the bench
prints how many examples it read so): such examples are out of scope in the test set and, in the training set,
examples of the learned ``out_of_scope`` intent, which is always known.
``--ngram-features word,char_wb:1-4`` trains the intent classifier with n-gram features (bots/nlu/ngrams.py;
default: TrainConfig's). ``--no-spelling`` trains and serves without the spelling correction
(bots/nlu/spelling.py), which is on by default.
Not part of the test run.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bots.nlu.model import OnnxNLU  # noqa: E402
from bots.nlu.oos import METHODS, OUT_OF_SCOPE, OperatingPoint, Target  # noqa: E402
from training.config import TrainConfig  # noqa: E402
from training.data import NluData, Sample, clean, stratified_split  # noqa: E402
from training.importers import load_csv  # noqa: E402
from training.scoring import calibrate, intent_report, oos_figures  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "banking77"
ADB = {0.25: (78.85, 71.62), 0.5: (78.86, 80.90), 0.75: (81.08, 85.96)}


def _texts_and_intents(path: Path) -> list[Sample]:
    """A CSV's texts (column ``text``, or Bitext's ``instruction``) and intents (``intent``, else ``category``
    or ``label``), exact duplicates (case ignored) dropped. Only the intent matters here, so Bitext's entity
    columns (some with offsets outside their text, which ``switchboard train`` reports) are not read."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        names = {c.strip().lower(): c for c in reader.fieldnames or []}
        text_col = names.get("text") or names.get("instruction")
        intent_col = names.get("intent") or names.get("category") or names.get("label")
        if text_col is None or intent_col is None:
            sys.exit(f"bench/oos.py: {path}:1: the header must name a text (or instruction) and an intent column")
        seen: set[str] = set()
        samples = []
        for row in reader:
            text, intent = (row[text_col] or "").strip(), (row[intent_col] or "").strip()
            if text and intent and text.lower() not in seen:
                seen.add(text.lower())
                samples.append(Sample(text, intent, (), f"{path}:{reader.line_num}"))
    return samples


def _clinc(path: Path, oos_train: bool) -> tuple[list[Sample], list[Sample]]:
    """CLINC150's ``data_full.json`` (or another of its variants, same keys): in-scope ``train`` (plus ``oos_train``
    as ``out_of_scope`` examples when asked), ``test`` plus ``oos_test`` (out of scope)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        sys.exit(f"bench/oos.py: {path}: not readable as JSON: {exc}")
    missing = [k for k in ("train", "test", "oos_test") if not isinstance(doc, dict) or k not in doc]
    if missing:
        sys.exit(f"bench/oos.py: {path}: not CLINC150's format (no {', '.join(missing)}: expected the keys train, "
                 "test, oos_test and optionally oos_train, each a list of [text, intent])")

    def part(key: str, intent: str | None = None) -> list[Sample]:
        rows = doc.get(key) or []
        out = []
        for i, row in enumerate(rows):
            if not (isinstance(row, list) and len(row) == 2 and all(isinstance(x, str) for x in row)):
                sys.exit(f"bench/oos.py: {path}: {key}[{i}] is not a [text, intent] pair: {row!r:.80}")
            if row[0].strip():
                out.append(Sample(row[0].strip(), intent or row[1].strip(), (), f"{path}:{key}[{i}]"))
        return out

    train = part("train") + (part("oos_train", OUT_OF_SCOPE) if oos_train else [])
    return train, part("test") + part("oos_test", OUT_OF_SCOPE)


def _relabel(samples: list[Sample], label: str, where: str) -> list[Sample]:
    """Examples labelled ``label`` (the data set's name for out of scope) become ``out_of_scope`` examples."""
    if not label or label == OUT_OF_SCOPE:
        return samples
    out = [replace(s, intent=OUT_OF_SCOPE) if s.intent == label else s for s in samples]
    n = sum(1 for s in samples if s.intent == label)
    if n:
        print(f"note: {n} {where} examples labelled {label!r} are read as out of scope (--oos-label)")
    return out


def _load(data: Path, oos_label: str = "oos", oos_train: bool = False) -> tuple[list[Sample], list[Sample]]:
    if data.is_file() and data.suffix.lower() == ".json":
        return _clinc(data, oos_train)
    if data.is_file():  # one CSV: split it
        train, test = stratified_split(_relabel(_texts_and_intents(data), oos_label, "data"), 0.2, seed=0)
    else:
        missing = [p for p in (data / "train.csv", data / "test.csv") if not p.is_file()]
        if missing:
            sys.exit(f"bench/oos.py: the data set is missing ({', '.join(map(str, missing))}); put train.csv and "
                     f"test.csv (text,category) in {data} (BANKING77 by default), or pass --data with one CSV or "
                     "CLINC150's data_full.json")
        train = _relabel(list(load_csv(data / "train.csv").samples), oos_label, "training")
        test = _relabel(list(load_csv(data / "test.csv").samples), oos_label, "test")
    if not oos_train:
        train = [s for s in train if s.intent != OUT_OF_SCOPE]
    return train, test


def run_one(train: list[Sample], test: list[Sample], known_share: float, seed: int, cfg: TrainConfig,
            targets: list[str]) -> dict[tuple[str, str], dict[str, float]]:
    """One draw of known intents: {(target, method): figures on the test set}."""
    from training.pipeline import train as train_model

    intents = sorted({s.intent for s in train} - {OUT_OF_SCOPE})  # a learned out_of_scope is always trained
    known = set(random.Random(seed).sample(intents, round(len(intents) * known_share)))
    data = clean(NluData(tuple(s for s in train if s.intent in known or s.intent == OUT_OF_SCOPE)), min_examples=0,
                 max_per_intent=cfg.max_examples_per_intent, seed=seed)  # as switchboard train does
    _, val = stratified_split(data.samples, 0 if cfg.calibration_folds else cfg.validation_fraction,
                              cfg.seed)  # the pipeline's held-out split (none with calibration folds)
    gold = [s.intent if s.intent in known else OUT_OF_SCOPE for s in test]
    with tempfile.TemporaryDirectory(prefix="oos-") as tmp:
        t0 = time.perf_counter()
        trained = train_model(data, cfg, bot_name="open-intent", out_dir=Path(tmp) / "model")
        seconds = time.perf_counter() - t0
        nlu = OnnxNLU.load(trained.directory, threads=cfg.threads)
        scored = nlu.score([s.text for s in test])
        held = nlu.score([s.text for s in val])
    top = [x.understanding.intent for x in scored]
    held_top = [x.understanding.intent for x in held]
    in_scope = [i for i, g in enumerate(gold) if g != OUT_OF_SCOPE]
    closed = sum(1 for i in in_scope if top[i] == gold[i]) / len(in_scope)
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for target in targets[:1] if cfg.calibration_folds else targets:
        for method in METHODS:
            served = target == cfg.oos_target and method == cfg.oos_method
            if cfg.calibration_folds:  # calibrated by the pipeline on its out-of-fold scores, every method
                point = OperatingPoint(method, trained.manifest.oos["methods"][method]["threshold"], "calibrated")
            else:
                point = calibrate([s.intent for s in val], held_top, [x.scores[method] for x in held], method,
                                  Target.parse(target), calibrated_on="held-out split")
            if served:  # the bench's calibration is the pipeline's own
                assert math.isclose(point.threshold, trained.manifest.oos["threshold"], abs_tol=1e-9), (
                    point, trained.manifest.oos)
            scores = [x.scores[method] for x in scored]
            rejected = point.rejects(top, scores)
            predicted = [OUT_OF_SCOPE if r else t for r, t in zip(rejected, top, strict=True)]
            report = intent_report(gold, predicted)
            figures = oos_figures(gold, top, scores, point)
            rows[(target, method)] = {
                "accuracy": report["accuracy"], "macro_f1": report["macro avg"]["f1-score"],
                "in_scope_accuracy": figures["in_scope_accuracy"], "oos_recall": figures["oos_recall"],
                "closed_accuracy": closed, "train_seconds": seconds, "served": float(served)}
    return rows


def _spread(values: list[float]) -> str:
    return f"{100 * statistics.median(values):.2f} ({100 * min(values):.2f}-{100 * max(values):.2f})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", "--data-dir", dest="data", type=Path, default=DEFAULT_DATA,
                   help="a folder with train.csv and test.csv (default: BANKING77), one CSV split 80/20 per intent, or "
                        "CLINC150's data_full.json")
    p.add_argument("--oos-label", default="oos", metavar="NAME",
                   help="the label meaning out of scope in the data's CSVs (default: oos, CLINC150's; out_of_scope "
                        "always is)")
    p.add_argument("--oos-train", action="store_true",
                   help="train on the data's out-of-scope examples (CLINC150's oos_train) as the learned out_of_scope "
                        "intent (default: left out, as in the open-intent protocol)")
    p.add_argument("--max-examples-per-intent", type=int, default=0, help="0 = every training example")
    p.add_argument("--calibration-folds", type=int, default=0, metavar="K",
                   help="calibrate on K-fold out-of-fold scores (switchboard train --calibration-folds K; only the "
                        "first target) instead of the held-out split")
    p.add_argument("--mode", choices=("finetune", "fast"), default="fast")
    p.add_argument("--known", default="0.25,0.5,0.75", help="shares of known intents, comma-separated")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated")
    p.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-test", type=int, default=0, help="0 = the whole test set")
    p.add_argument("--ngram-features", default=TrainConfig().ngram_features, metavar="SPEC",
                   help="n-gram features of the intent classifier, e.g. word,char_wb:1-4 ('' = none)")
    p.add_argument("--no-spelling", action="store_true", help="no spelling correction (default: on)")
    p.add_argument("--targets", default=f"{TrainConfig().oos_target},in-scope-drop<=0.05",
                   help="out-of-scope targets to calibrate each method for (comma-separated; the first is served)")
    args = p.parse_args(argv)
    train, test = _load(args.data, args.oos_label, args.oos_train)
    adb = ADB if args.data.resolve() == DEFAULT_DATA.resolve() else {}  # published figures are BANKING77's
    if args.max_test:
        test = test[:: max(1, len(test) // args.max_test)][: args.max_test]
    load_before = os.getloadavg()
    targets = args.targets.split(",")
    print(f"mode {args.mode}, threads {args.threads}, n-gram features {args.ngram_features or 'none'}, spelling "
          f"{'off' if args.no_spelling else 'on'}, targets "
          f"{targets}, calibration "
          f"{f'{args.calibration_folds}-fold' if args.calibration_folds else 'held-out split'}, load average before "
          f"{load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}, {os.cpu_count()} CPUs; "
          f"data {args.data}: train {len(train)}, test {len(test)}, {len({s.intent for s in train})} intents")
    results: dict[tuple[float, str, str], list[dict[str, float]]] = {}
    for share in (float(x) for x in args.known.split(",")):
        for seed in (int(x) for x in args.seeds.split(",")):
            cfg = TrainConfig(mode=args.mode, epochs=args.epochs, threads=args.threads, seed=seed,
                              validation_fraction=0.1, oos_target=targets[0],
                              max_examples_per_intent=args.max_examples_per_intent,
                              calibration_folds=args.calibration_folds, ngram_features=args.ngram_features,
                              spelling=not args.no_spelling)
            rows = run_one(train, test, share, seed, cfg, targets)
            for (target, method), row in rows.items():
                results.setdefault((share, target, method), []).append(row)
                print(f"known {share:.0%} seed {seed} {target} {method:11s}{' (served)' if row['served'] else ''}: "
                      f"accuracy {100 * row['accuracy']:.2f}, macro-F1 {100 * row['macro_f1']:.2f}, in-scope "
                      f"{100 * row['in_scope_accuracy']:.2f}, OOS recall {100 * row['oos_recall']:.2f} (closed-set "
                      f"{100 * row['closed_accuracy']:.2f}, trained in {row['train_seconds']:.0f} s)", flush=True)
    print("\n| known | target | method | accuracy | macro-F1 | in-scope accuracy | OOS recall | closed-set accuracy "
          "| ADB acc / F1 |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for (share, target, method), runs in results.items():
        served = " (served)" if runs[0]["served"] else ""
        published = adb.get(share)
        print(f"| {share:.0%} | {target} | {method}{served} | " + " | ".join(_spread([r[k] for r in runs]) for k in (
            "accuracy", "macro_f1", "in_scope_accuracy", "oos_recall", "closed_accuracy"))
              + f" | {f'{published[0]:.2f} / {published[1]:.2f}' if published else '-'} |")
    load_after = os.getloadavg()
    print(f"\nmedian (min-max) over seeds {args.seeds}; load average after {load_after[0]:.2f} {load_after[1]:.2f} "
          f"{load_after[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``switchboard train`` and ``switchboard evaluate``.

    train BOT_DIR [--fast] [--epochs N] [--max-examples-per-intent N] [--threads N] [--seed N]
                  [--out DIR] [--data FILE ...] [--base-model DIR] [--no-quantize] [--no-spelling]
                  [--augmentation N]
                  [--validation FILE ...] [--oos-target T] [--oos-method M] [--ngram-features SPEC]
    evaluate MODEL DATA... [--out DIR] [--threads N] [--min-accuracy X] [--cross-validation K] [--fast]

Bad bot data prints ``file:line: message`` lines on stderr and exits 2; a missed
``--min-accuracy`` exits 1. ``train`` runs ``switchboard check`` first (bots/dialogue/check.py): a
bot whose dialogue is wrong never trains. BOT_DIR is a bot.yml bot or a Rasa 3.x project
(bots/loader.py). When the bot's policies ask for the learned next-action model (a Rasa project
with TEDPolicy, or none listed) and it has stories, ``train`` trains it first (training/policy.py,
seconds) and writes it into the artifact with the NLU model; its figures go in the manifest
(``extra.policy``). An intent that ``--data`` (or corrections.yml) labels and the bot does not
declare is refused at its first example's ``file:line`` (the bot would fall back on it every
time), unless the bot's answer pairs (``answers: pairs:``) answer it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bots.artifact import Manifest
from bots.errors import ArtifactError, ConfigError
from bots.nlu.oos import DEFAULT_METHOD, METHODS

if TYPE_CHECKING:
    from bots.botspec import BotSpec
    from training.answers_config import AnswersConfig
    from training.data import NluData

EXIT_OK, EXIT_GATE, EXIT_CONFIG = 0, 1, 2
CORRECTIONS_FILE = "corrections.yml"  # written by `switchboard export-corrections`; merged by train


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="switchboard", description="Train and evaluate a bot's NLU model.")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train BOT_DIR's model into BOT_DIR/models/<version>/")
    t.add_argument("bot_dir", type=Path)
    t.add_argument("--fast", action="store_true", help="frozen encoder + linear heads (seconds, for iterating)")
    t.add_argument("--epochs", type=int, help="fine-tuning epochs (default 4; early stopping on validation)")
    t.add_argument("--max-examples-per-intent", type=int, help="cap per intent, sampled with the seed (0 = all)")
    t.add_argument("--threads", type=int, help="torch / ONNX Runtime threads (default 1)")
    t.add_argument("--seed", type=int, help="seed for the split, sampling and initialisation (default 13)")
    t.add_argument("--base-model", help="a local Hugging Face encoder folder (default: packaged all-MiniLM-L6-v2)")
    t.add_argument("--data", type=Path, action="append", default=[],
                   help="extra training data: Rasa nlu.yml/domain.yml, CSV text,intent, Bitext CSV (repeatable)")
    t.add_argument("--no-quantize", action="store_true", help="skip the int8 export")
    t.add_argument("--no-spelling", action="store_true",
                   help="read customers' messages as typed: no spelling correction toward the training words "
                        "(default: bot.yml training: spelling, else on)")
    t.add_argument("--augmentation", type=int, metavar="N",
                   help="learned dialogue policy: stories glued into N x 10 conversations (default 50; 0 = off)")
    t.add_argument("--out", type=Path, help="artifact folder (default BOT_DIR/models/<version>)")
    t.add_argument("--validation", type=Path, action="append", default=[],
                   help="held-out data (formats of --data; repeatable) for model selection and the out-of-scope "
                        "calibration, instead of a split of the training data; may hold out_of_scope examples")
    t.add_argument("--oos-target", help="what the out-of-scope operating point aims at: accuracy (needs "
                                        "out_of_scope examples), in-scope>=X or in-scope-drop<=X "
                                        "(default in-scope-drop<=0.01)")
    t.add_argument("--oos-method", choices=METHODS, help=f"the out-of-scope score (default {DEFAULT_METHOD})")
    t.add_argument("--ngram-features", metavar="SPEC",
                   help="the intent classifier's n-gram features, e.g. word,char_wb:1-4 (Rasa's default pipeline); "
                        "'none' for none (default: bot.yml training: ngram_features, or config.yml's "
                        "CountVectorsFeaturizers)")
    t.add_argument("--calibration-folds", type=int, metavar="K",
                   help="calibrate the out-of-scope point on K-fold cross-validation (K more trainings) and train "
                        "the served model on every example, instead of holding 15%% out (without --validation)")
    e = sub.add_parser("evaluate", help="score a trained model on labelled data and write reports")
    e.add_argument("model", type=Path, help="an artifact folder, a models folder or a bot folder")
    e.add_argument("data", type=Path, nargs="+", help="bot folder, bot.yml, Rasa nlu.yml, CSV or Bitext CSV")
    e.add_argument("--out", type=Path, help="report folder (default MODEL/reports)")
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--min-accuracy", type=float, help="exit 1 when accuracy (0-1) is below this")
    e.add_argument("--cross-validation", type=int, metavar="K",
                   help="train K models on K stratified folds of DATA with MODEL's config and report on all")
    e.add_argument("--fast", action="store_true", help="with --cross-validation: train the folds in fast mode")
    return p


def _config_from_bot(section: Any) -> dict[str, Any]:
    """The bot.yml ``training:`` section, each unknown key reported at its own line."""
    from bots.yamlspan import plain
    from training.config import TrainConfig

    if section is None:
        return {}
    if not isinstance(section.value, dict):
        raise ConfigError(f"{section.where()}: 'training' must be a mapping of training settings")
    known = set(TrainConfig.__dataclass_fields__)
    problems = [f"{v.where()}: unknown training key {k!r} (known: {', '.join(sorted(known))})"
                for k, v in section.value.items() if k not in known]
    if problems:
        raise ConfigError(problems)
    values = plain(section)
    assert isinstance(values, dict)
    return values


def _ngram_features(bot: BotSpec) -> str:
    """The n-gram features (``TrainConfig.ngram_features``) a Rasa project's config.yml pipeline asks for."""
    from bots.nlu.pipeline import COUNT_VECTORS, ngram_features_of

    try:
        return ngram_features_of(bot.pipeline)
    except ValueError as exc:
        where = next((c.where for c in bot.pipeline if c.name == COUNT_VECTORS), str(bot.file))
        raise ConfigError(f"{where}: {exc}") from None


def _check_extra_intents(bot: BotSpec, domain_intents: Iterable[str], extra: Sequence[NluData],
                         answers: AnswersConfig | None) -> None:
    """An intent in ``--data`` (or corrections) that the bot does not declare is served by the bot's
    answer pairs (no rule: the dialogue's fallback asks the answer provider first, which answers from
    that intent's pairs) or refused, each at its first example's file:line: never trained into a
    model whose bot then falls back on it every time."""
    from bots.dialogue.domain import DEFAULT_INTENTS
    from training.answers import pair_intents
    from training.data import undeclared_intents

    found = undeclared_intents(extra, {*bot.intents, *domain_intents, *DEFAULT_INTENTS})
    answered = pair_intents(bot, answers) if answers is not None and found else set()
    problems = []
    for intent, where in found.items():
        if intent in answered:
            print(f"note: {where}: intent {intent!r} is not in {bot.source}; the bot's answer pairs answer it")
            continue
        problems.append(f"{where}: intent {intent!r} is in the training data but not in {bot.source}: the model "
                        f"would learn it and the bot would fall back on it every time. Declare it in {bot.source} "
                        f"with a response, give the bot answer pairs for it (answers: pairs:), or remove it from "
                        f"the data")
    if problems:
        raise ConfigError(problems)


def _train(args: argparse.Namespace) -> int:
    from bots.dialogue.check import check_bot_folder
    from training.config import TrainConfig
    from training.data import clean, from_bot, merge
    from training.importers import load_data

    report = check_bot_folder(args.bot_dir)  # the bot is checked whole before minutes of training
    for line in report.lines()[len(report.errors):]:
        print(line, file=sys.stderr)
    if report.errors or report.loaded is None:
        raise ConfigError(report.errors or [f"{args.bot_dir}: the bot could not be loaded"])
    bot = report.loaded[0]
    from training.answers import parse_answers_config, wants_answers

    answers = wants_answers(bot)
    answers_cfg = parse_answers_config(bot) if answers else None  # a bad section fails before minutes of training
    section = bot.sections.get("training")
    cfg = TrainConfig.from_dict(_config_from_bot(section), where=section.where() if section else "training config")
    cfg = cfg.with_overrides(
        mode="fast" if args.fast else None, epochs=args.epochs, max_examples_per_intent=args.max_examples_per_intent,
        threads=args.threads, seed=args.seed, base_model=args.base_model,
        quantize=False if args.no_quantize else None, spelling=False if args.no_spelling else None,
        augmentation_factor=args.augmentation,
        oos_target=args.oos_target, oos_method=args.oos_method, calibration_folds=args.calibration_folds)
    if args.ngram_features is not None:
        cfg = TrainConfig.from_dict({**cfg.to_dict(), "ngram_features": "" if args.ngram_features.strip() == "none"
                                     else args.ngram_features}, where="--ngram-features")
    elif bot.pipeline and not (section is not None and "ngram_features" in section.value):
        cfg = cfg.with_overrides(ngram_features=_ngram_features(bot))  # config.yml's CountVectorsFeaturizers
    parts = [from_bot(bot), *(load_data(p) for p in args.data)]
    corrections = bot.directory / CORRECTIONS_FILE
    if corrections.is_file() and corrections.resolve() not in {Path(p).resolve() for p in args.data}:
        # The review UI's exported corrections: trained on always, never held out.
        fixed = load_data(corrections)
        parts.append(replace(fixed, samples=tuple(replace(s, pinned=True) for s in fixed.samples)))
        print(f"using {len(fixed.samples)} corrections from {corrections}")
    _check_extra_intents(bot, report.loaded[1].domain.intents, parts[1:], answers_cfg)
    data = merge(parts)
    data = clean(data, min_examples=cfg.min_examples_per_intent, max_per_intent=cfg.max_examples_per_intent,
                 seed=cfg.seed)
    for w in data.warnings:
        print(f"warning: {w}", file=sys.stderr)
    validation = None
    if args.validation:
        validation = clean(merge(load_data(p) for p in args.validation), min_examples=0)
        if not validation.samples:
            raise ConfigError(f"{', '.join(map(str, args.validation))}: no labelled examples to validate on")
        if cfg.calibration_folds:
            raise ConfigError("give --validation FILE or --calibration-folds K (training: calibration_folds), not "
                              "both: each is what the out-of-scope point is calibrated on")

    if bot.rasa_project and validation is None and cfg.validation_fraction > 0:
        # Rasa trains on every example, and a Rasa project's config.yml threshold (FallbackClassifier's, or none)
        # decides what is not understood, never a calibrated point: holding examples out would only take them
        # from the model (an intent with 3 examples would lose one). --validation FILE still calibrates.
        cfg = cfg.with_overrides(validation_fraction=0.0)
        print(f"note: {bot.file}: a Rasa project is trained on every example, as rasa train does (nothing is held "
              "out; give --validation FILE to measure and calibrate on data of your own)")
    _check_target(cfg.oos_target, validation or data, set(data.intents), "--validation" if validation else "held-out")

    from training.pipeline import train
    from training.policy import PolicyTrainConfig, export_policy, summary, train_policy, wants_policy

    dialogue = report.loaded[1]
    policy = None
    if wants_policy(dialogue.domain, dialogue.stories, dialogue.policy):
        # Seconds, before the NLU's minutes: the learned next-action model (TEDPolicy's place).
        policy = train_policy(dialogue.domain, dialogue.stories, PolicyTrainConfig.of(dialogue.policy, cfg))
        print(summary(policy.facts))

    def before_manifest(artifact_dir: Path, manifest: Manifest) -> dict[str, Any] | None:
        """The policy model and the answer index go in before the manifest marks the artifact finished."""
        added: dict[str, Any] = {}
        if policy is not None:
            export_policy(policy, artifact_dir)
            added["policy"] = policy.facts
        if answers:
            from bots.nlu.model import OnnxNLU
            from training.answers_fit import fit_answers

            nlu = OnnxNLU.from_manifest(artifact_dir, manifest, threads=cfg.threads, synonyms=bot.synonyms)
            fit_answers(bot, artifact_dir, nlu)
        return added or None

    result = train(data, cfg, bot_name=bot.name, out_dir=args.out, models_dir=bot.models_dir,
                   validation=validation, before_manifest=before_manifest)
    m = result.manifest.metrics
    print(f"wrote {result.directory}")
    linear = result.manifest.extra.get("linear_accuracy")
    if cfg.mode == "finetune" and linear is not None:
        print(f"fine-tuning: best epoch {result.manifest.extra.get('best_epoch')} (0 = the linear head), "
              f"linear-head validation accuracy {linear:.4f}")
    scored = "held-out accuracy" if m.get("evaluated_on") == "validation" else "accuracy"
    print(f"{scored} {m.get('accuracy', 0):.4f} ({m.get('evaluated_on')}), serving {result.manifest.onnx_file}")
    if "cross_validation" in m:
        from training.scoring import format_figures

        cv = m["cross_validation"]
        print(f"{cv['folds']}-fold cross-validation on {cv['examples']} examples: accuracy of the best intent "
              f"{cv['closed_set_accuracy']:.4f}; with the out-of-scope point {format_figures(cv)}")
    print(operating_point_lines(result.manifest.oos, bot.fallback_threshold, where=bot.source))
    return EXIT_OK


def _check_target(target: str, held_out: NluData, trained: set[str], where: str) -> None:
    """``--oos-target accuracy`` needs out-of-scope examples where it is calibrated: refused before training."""
    from bots.nlu.oos import OUT_OF_SCOPE, Target

    if Target.parse(target).kind != "accuracy":
        return
    oos = [s for s in held_out.samples if s.intent == OUT_OF_SCOPE or (where != "held-out" and s.intent not in trained)]
    if not oos:
        raise ConfigError(f"--oos-target accuracy needs out_of_scope examples in the {where} data; it has none. Give "
                          "--validation FILE with some (or out_of_scope examples in the training data), or use "
                          "--oos-target in-scope-drop<=X")


def operating_point_lines(oos: dict[str, Any], fallback_threshold: float | None, *, where: str) -> str:
    """What decides "not understood" for this model and bot, and the held-out figures of it."""
    from training.scoring import format_figures

    if not oos and fallback_threshold is not None:
        return (f"out of scope: the bot's fallback threshold decides: softmax confidence below {fallback_threshold:g} "
                "is not understood" + (" (0: never, as Rasa without a FallbackClassifier)" if fallback_threshold == 0
                                      else ""))
    if not oos:
        line = "out of scope: nothing held out to calibrate on; only a learned out_of_scope intent is rejected"
    else:
        line = (f"out of scope: {oos['method']} score below {oos['threshold']:.4g} (target {oos['target']}, "
                f"calibrated on {oos['calibrated_on']}: {format_figures(oos['figures'])})")
        if oos.get("note"):
            line += f"\n  note: {oos['note']}"
    if fallback_threshold is not None:
        line += (f"\nwarning: {where}: fallback_threshold {fallback_threshold:g} overrides this: the bot serves "
                 f"'softmax confidence below {fallback_threshold:g}' instead (remove it to serve the calibrated point; "
                 "switchboard evaluate shows both)")
    return line


def _evaluate(args: argparse.Namespace) -> int:
    from training.answers_eval import report_answers
    from training.evaluate import run_evaluation

    code = run_evaluation(args)
    if args.cross_validation is None:
        report_answers(args.model, args.data, args.out, threads=args.threads)  # when DATA has answers
    return code


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # argparse already printed usage and the reason
        return exit_.code if isinstance(exit_.code, int) else EXIT_CONFIG
    try:
        if args.command == "train":
            return _train(args)
        return _evaluate(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except ArtifactError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())

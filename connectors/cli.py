"""The ``switchboard`` command.

``serve`` runs the runtime (never imports torch); ``train`` and ``evaluate`` hand over to
``training.cli`` (torch is imported only there); ``check`` validates bot folders, bot.yml or Rasa projects
(bots/dialogue/check.py); ``test`` runs a bot's test stories through the served pipeline
(connectors/story_test.py) and writes Rasa's reports (training/story_reports.py).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bots.errors import ConfigError, SwitchboardError

if TYPE_CHECKING:
    from bots.settings import Settings

_TRAINING_COMMANDS = ("train", "evaluate")


def tune_serving_process(settings: Settings) -> None:
    """Process-wide settings of a serving process, before any bot loads."""
    from threadpoolctl import threadpool_limits

    # Each message allocates thousands of short-lived objects; with CPython's default (a young
    # collection every 700 allocations) collections interrupt messages often enough to show in the
    # p99 (bench/RESULTS.md, "Load"). Young objects die young: collect them less often.
    gc.set_threshold(settings.gc_gen0, 20, 100)
    # numpy's BLAS (OpenBLAS) runs a small matrix product per message (the out-of-scope kNN score, answer
    # retrieval) on a pool of threads that spin for a while after each call: with messages a few ms apart that
    # spinning cost ~3 ms of CPU per message (bench/RESULTS.md, "Load"). One thread: the products are small.
    # numpy is imported first: threadpoolctl limits only the libraries already loaded, and nothing before
    # this point loads numpy (without the import the limit did nothing and OpenBLAS kept its pool).
    import numpy  # noqa: F401 - loads OpenBLAS so that the limit reaches it

    threadpool_limits(limits=1, user_api="blas")
    # The tokenizer (Hugging Face tokenizers) encodes each NLU batch (a few short texts) on its own thread pool
    # unless told not to: twice the CPU of encoding them in the calling thread, plus waking the pool each batch
    # (bench/RESULTS.md, "Load"). Read by the library at each call; an operator's own setting stays.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from bots.logs import configure
    from bots.pii import RedactingFilter, Redactor
    from bots.settings import Settings
    from connectors.app import create_app

    settings = Settings.from_env()
    configure(settings.log_level, json_lines=settings.log_json, filters=[RedactingFilter(Redactor())])
    tune_serving_process(settings)
    # Every bot is validated whole before listening: a problem exits 2 with every file:line at once.
    # absolute, as data_dir is: in-process custom actions change the working directory while they run
    app = create_app(settings, [d.absolute() for d in args.bot_dirs], freeze_after_load=True)
    host = settings.host if args.host is None else args.host
    port = settings.port if args.port is None else args.port
    # uvloop and httptools (dependencies) named rather than "auto", which would fall back to the slower
    # asyncio loop and h11 parser without a word if they were missing.
    config = uvicorn.Config(app, host=host, port=port, log_config=None, loop="uvloop", http="httptools",
                            timeout_graceful_shutdown=int(settings.drain_timeout_s) + 1)
    server = uvicorn.Server(config)
    server.run()
    return 0


def _telegram(args: argparse.Namespace) -> int:
    import asyncio

    from bots.logs import configure
    from bots.pii import RedactingFilter, Redactor
    from bots.settings import Settings
    from connectors import telegram

    settings = Settings.from_env()
    if args.telegram_command == "set-webhook":
        if args.skip_without_token and not (settings.telegram_token or settings.telegram_tokens):
            # The Kubernetes Job runs on every install, Telegram or not (dev's Secret is empty).
            print("no Telegram token (SWITCHBOARD_TELEGRAM_TOKEN, SWITCHBOARD_TELEGRAM_TOKENS): "
                  "Telegram is off, no webhook registered")
            return 0
        base_url = args.url or settings.telegram_webhook_url
        if not base_url:
            raise ConfigError("give --url (the server's public address) or set SWITCHBOARD_TELEGRAM_WEBHOOK_URL")
        url = asyncio.run(telegram.set_webhook(settings, args.bot_dir, base_url))
        print(f"webhook set: {url} (with SWITCHBOARD_TELEGRAM_SECRET as its secret token)")
        return 0
    configure(settings.log_level, json_lines=settings.log_json, filters=[RedactingFilter(Redactor())])
    print(f"polling Telegram for {args.bot_dir} (Ctrl+C stops)", file=sys.stderr)
    try:
        asyncio.run(telegram.poll_until(settings, args.bot_dir))
    except KeyboardInterrupt:
        pass
    return 0


def _check(args: argparse.Namespace) -> int:
    """``switchboard check BOT_DIR``: every problem of each bot (bots/dialogue/check.py), errors first;
    exit 2 when any bot has an error, 0 when there are only warnings and notes."""
    from bots.dialogue.check import check_bot_folder

    failed = False
    for bot_dir in args.bot_dirs:
        report = check_bot_folder(bot_dir)
        for line in report.lines():
            print(line)
        print(f"{bot_dir}: {len(report.errors)} error(s), {len(report.warnings)} warning(s), "
              f"{len(report.notes)} note(s)")
        failed = failed or not report.ok
    return 2 if failed else 0


def _port(raw: str) -> int:
    """A TCP port to listen on. Out of range is refused: the socket layer would take it modulo
    65536 (99999 listened on 34463) and 0 means "any free port"."""
    try:
        port = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a port number (1-65535)") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def _fraction(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number between 0 and 1") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} is not between 0 and 1")
    return value


def _test(args: argparse.Namespace) -> int:
    """``switchboard test BOT_DIR [PATHS]``: the test stories through the served pipeline
    (connectors/story_test.py), Rasa's report files (training/story_reports.py), a summary; exit 1 when a
    story failed or the action accuracy is below ``--min-accuracy``."""
    import asyncio
    import logging

    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from bots.settings import Settings
    from connectors.story_test import run_story_tests
    from training.story_reports import write_story_reports

    settings = Settings.from_env()
    # What the bot logs (a custom action failing, an unreachable Duckling) is shown above the progress bar.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    bar: tqdm[None] | None = None

    def started(total: int) -> None:
        nonlocal bar
        bar = tqdm(total=total, desc="test stories", unit="story")

    def story_done(result: object) -> None:
        if bar is not None:
            bar.update(1)

    try:
        with logging_redirect_tqdm():
            results = asyncio.run(run_story_tests(args.bot_dir, args.paths, settings=settings,
                                                  on_start=started, on_story=story_done, replay=args.replay))
    finally:
        if bar is not None:
            bar.close()
    out: Path = args.out or args.bot_dir / "results"
    report = write_story_reports(out, results.action_targets, results.action_predictions,
                                 conversations=len(results.stories), failed=len(results.failed),
                                 failed_stories_yaml=results.failed_stories_yaml())
    for story in results.failed:
        for line in story.failures:
            print(f"failed: {line}")
    actions = len(results.action_targets)
    correct_actions = sum(1 for t, p in zip(results.action_targets, results.action_predictions, strict=True)
                          if t == p)
    passed = len(results.stories) - len(results.failed)
    print(f"stories: {passed}/{len(results.stories)} passed (conversation accuracy "
          f"{results.conversation_accuracy:.3f})")
    print(f"actions: {correct_actions}/{actions} correct (accuracy {results.action_accuracy:.3f}"
          + (f", macro F1 {report['macro avg']['f1-score']:.3f}" if "macro avg" in report else "") + ")")
    if results.intent_accuracy is not None:
        right = sum(1 for t, p in zip(results.intent_targets, results.intent_predictions, strict=True) if t == p)
        print(f"user messages: {right}/{len(results.intent_targets)} intents right")
    if results.turn_seconds:
        ms = sorted(s * 1000 for s in results.turn_seconds)
        print(f"latency per turn: p50 {ms[len(ms) // 2]:.1f} ms, p95 {ms[min(len(ms) - 1, int(len(ms) * 0.95))]:.1f}"
              f" ms over {len(ms)} turns")
    print(f"reports in {out}")
    code = 1 if results.failed else 0
    if args.min_accuracy is not None and results.action_accuracy < args.min_accuracy:
        print(f"action accuracy {results.action_accuracy:.3f} is below --min-accuracy {args.min_accuracy}",
              file=sys.stderr)
        code = 1
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description="Train, evaluate and serve support bots.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve bots over HTTP (web chat, Slack, Telegram, admin API, metrics)")
    serve.add_argument("bot_dirs", nargs="+", type=Path, metavar="BOT_DIR")
    # Defaults from the settings (SWITCHBOARD_HOST, SWITCHBOARD_PORT), read with all the others in _serve.
    serve.add_argument("--host", help="address to listen on (default: SWITCHBOARD_HOST, else 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="TCP port, 1-65535 (default: SWITCHBOARD_PORT, else 8000)")
    serve.set_defaults(func=_serve)
    check = sub.add_parser("check", help="validate bot folders (bot.yml or Rasa projects) as `rasa data validate` "
                                         "does: exit 2 on errors")
    check.add_argument("bot_dirs", nargs="+", type=Path, metavar="BOT_DIR")
    check.set_defaults(func=_check)
    test = sub.add_parser("test", help="run Rasa-format test stories end to end through the served pipeline and "
                                       "write Rasa's reports: exit 1 on a failed story")
    test.add_argument("bot_dir", type=Path, metavar="BOT_DIR")
    test.add_argument("paths", nargs="*", type=Path, metavar="PATHS",
                      help="test story files or folders (default: BOT_DIR/tests/test_*.yml)")
    test.add_argument("--out", type=Path, help="report folder (default: BOT_DIR/results)")
    test.add_argument("--min-accuracy", type=_fraction, metavar="X",
                      help="exit 1 when the action-level accuracy (0-1) is below X")
    test.add_argument("--replay", action="store_true",
                      help="evaluate as `rasa test` does: each story's own events are the history and the policies "
                           "predict its actions (nothing is run); for test stories written for Rasa")
    test.set_defaults(func=_test)
    tg = sub.add_parser("telegram", help="Telegram: register the webhook once, or long-poll for development")
    tg_sub = tg.add_subparsers(dest="telegram_command", required=True)
    hook = tg_sub.add_parser("set-webhook", help="register the webhook and its secret token (once, not per replica)")
    hook.add_argument("bot_dir", type=Path, metavar="BOT_DIR")
    hook.add_argument("--url", help="the server's public base URL, e.g. https://bots.example.com "
                                    "(default: SWITCHBOARD_TELEGRAM_WEBHOOK_URL)")
    hook.add_argument("--skip-without-token", action="store_true",
                      help="exit 0 with a message, instead of failing, when no Telegram token is set")
    poll = tg_sub.add_parser("poll", help="answer by long polling (local development, no public URL needed)")
    poll.add_argument("bot_dir", type=Path, metavar="BOT_DIR")
    tg.set_defaults(func=_telegram)
    for name in _TRAINING_COMMANDS:
        sub.add_parser(name, help=f"{name} a model (see `switchboard {name} --help`)", add_help=False)
    from connectors.review.commands import add_review_commands

    add_review_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _TRAINING_COMMANDS:
        from training.cli import main as training_main

        return training_main(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    except SwitchboardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

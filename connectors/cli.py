"""The ``switchboard`` command.

``serve`` runs the runtime (never imports torch); ``train`` and ``evaluate`` hand over to
``training.cli`` (torch is imported only there); ``check`` validates bot folders, bot.yml or Rasa projects
(bots/dialogue/check.py).
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Sequence
from pathlib import Path

from bots.errors import ConfigError, SwitchboardError

_TRAINING_COMMANDS = ("train", "evaluate")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from bots.logs import configure
    from bots.pii import RedactingFilter, Redactor
    from bots.settings import Settings
    from connectors.app import create_app

    settings = Settings.from_env()
    configure(settings.log_level, json_lines=settings.log_json, filters=[RedactingFilter(Redactor())])
    # Each message allocates thousands of short-lived objects; with CPython's default (a young
    # collection every 700 allocations) collections interrupt messages often enough to show in the
    # p99 (bench/RESULTS.md, "Load"). Young objects die young: collect them less often.
    gc.set_threshold(settings.gc_gen0, 20, 100)
    # Every bot is validated whole before listening: a problem exits 2 with every file:line at once.
    app = create_app(settings, args.bot_dirs, freeze_after_load=True)
    host = settings.host if args.host is None else args.host
    port = settings.port if args.port is None else args.port
    config = uvicorn.Config(app, host=host, port=port, log_config=None,
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
    tg = sub.add_parser("telegram", help="Telegram: register the webhook once, or long-poll for development")
    tg_sub = tg.add_subparsers(dest="telegram_command", required=True)
    hook = tg_sub.add_parser("set-webhook", help="register the webhook and its secret token (once, not per replica)")
    hook.add_argument("bot_dir", type=Path, metavar="BOT_DIR")
    hook.add_argument("--url", help="the server's public base URL, e.g. https://bots.example.com "
                                    "(default: SWITCHBOARD_TELEGRAM_WEBHOOK_URL)")
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

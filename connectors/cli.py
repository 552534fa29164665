"""The ``switchboard`` command.

``serve`` runs the runtime (never imports torch); ``train`` and ``evaluate`` hand over to
``training.cli`` (torch is imported only there).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bots.errors import ConfigError, SwitchboardError

_TRAINING_COMMANDS = ("train", "evaluate")


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from bots.logs import configure
    from bots.settings import Settings
    from connectors.app import create_app

    settings = Settings.from_env()
    configure(settings.log_level, json_lines=settings.log_json)
    for bot_dir in args.bot_dirs:
        if not (bot_dir / "bot.yml").is_file():
            raise ConfigError(f"{bot_dir}: not a bot folder (no bot.yml)")
    app = create_app(settings, args.bot_dirs)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_config=None,
                            timeout_graceful_shutdown=int(settings.drain_timeout_s) + 1)
    server = uvicorn.Server(config)
    server.run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description="Train, evaluate and serve support bots.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve bots over HTTP (web chat, Slack, Telegram, admin API, metrics)")
    serve.add_argument("bot_dirs", nargs="+", type=Path, metavar="BOT_DIR")
    serve.add_argument("--host", default=os.environ.get("SWITCHBOARD_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("SWITCHBOARD_PORT", "8000")))
    serve.set_defaults(func=_serve)
    for name in _TRAINING_COMMANDS:
        sub.add_parser(name, help=f"{name} a model (see `switchboard {name} --help`)", add_help=False)
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

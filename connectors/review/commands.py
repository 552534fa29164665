"""``switchboard users``, ``switchboard tokens`` and ``switchboard export-corrections``.

    switchboard users add NAME --role viewer|agent|admin [--password-stdin]
    switchboard users list
    switchboard users remove NAME
    switchboard tokens create NAME [--label LABEL]
    switchboard export-corrections BOT_DIR [--output FILE] [--format switchboard|rasa]

They use the same settings as ``serve`` (``SWITCHBOARD_DATA_DIR`` or ``SWITCHBOARD_MONGODB_URI``).
``export-corrections`` writes FILE (default under the data dir, never into the bot folder, which may
be read-only where the bot is served), merging with what an earlier export left there.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path
from typing import Any

from bots.corrections import FORMATS
from bots.errors import ConfigError
from bots.settings import Settings
from bots.staff.accounts import Accounts, open_staff_store
from bots.staff.base import ROLES, StaffError


def add_review_commands(sub: Any) -> None:
    """Add the subcommands to ``switchboard``'s argparse subparsers."""
    users = sub.add_parser("users", help="staff accounts of the review UI")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    add = users_sub.add_parser("add", help="create a staff account")
    add.add_argument("username")
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin (for scripts)")
    users_sub.add_parser("list", help="list staff accounts")
    remove = users_sub.add_parser("remove", help="delete a staff account, its sessions and tokens")
    remove.add_argument("username")
    users.set_defaults(func=_users)

    tokens = sub.add_parser("tokens", help="API tokens for scripts (review API)")
    tokens_sub = tokens.add_subparsers(dest="tokens_command", required=True)
    create = tokens_sub.add_parser("create", help="create a token acting as USER (printed once)")
    create.add_argument("username")
    create.add_argument("--label", default="script")
    tokens.set_defaults(func=_tokens)

    export = sub.add_parser("export-corrections", help="write the review UI's corrections as training data")
    export.add_argument("bot_dir", type=Path, metavar="BOT_DIR")
    export.add_argument("--output", type=Path, metavar="FILE",
                        help="where to write (merged with an earlier export there); default: "
                             "DATA_DIR/exports/BOT/corrections.yml (BOT-nlu.yml with --format rasa)")
    export.add_argument("--format", choices=FORMATS, default="switchboard",
                        help="switchboard: what `switchboard train` reads (default); rasa: a Rasa 3 nlu.yml")
    export.set_defaults(func=_export)


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise StaffError("no terminal to ask for the password: pipe it with --password-stdin")
    first = getpass.getpass(f"Password for {args.username}: ")
    if getpass.getpass("Again: ") != first:
        raise StaffError("the passwords differ")
    return first


async def _with_accounts(fn: Any) -> int:
    settings = Settings.from_env()
    accounts = Accounts(open_staff_store(uri=settings.mongodb_uri, data_dir=settings.data_dir))
    try:
        return int(await fn(accounts))
    finally:
        await accounts.store.aclose()


def _users(args: argparse.Namespace) -> int:
    async def run(accounts: Accounts) -> int:
        if args.users_command == "add":
            user = await accounts.add_user(args.username, _password(args), args.role)
            print(f"added {user.username} ({user.role})")
        elif args.users_command == "list":
            for user in await accounts.store.list_users():
                print(f"{user.username}\t{user.role}")
        elif not await accounts.store.remove_user(args.username):
            raise StaffError(f"no user named {args.username!r}")
        else:
            print(f"removed {args.username}")
        return 0

    return _run(run)


def _tokens(args: argparse.Namespace) -> int:
    async def run(accounts: Accounts) -> int:
        token = await accounts.create_token(args.username, args.label)
        print(token)
        print(f"(an API token acting as {args.username}; it is shown only now: "
              "send it as 'Authorization: Bearer <token>')", file=sys.stderr)
        return 0

    return _run(run)


def _export(args: argparse.Namespace) -> int:
    from bots.corrections import collect_corrections, export_corrections, export_path
    from bots.loader import load_bot_folder
    from bots.store.factory import open_store

    spec, _ = load_bot_folder(args.bot_dir)
    settings = Settings.from_env()

    async def run() -> int:
        store = open_store(uri=settings.mongodb_uri, data_dir=settings.data_dir)
        await store.start()
        try:
            examples = await collect_corrections(store, spec.name)
        finally:
            await store.aclose()
        path = args.output or export_path(settings.data_dir, spec.name, args.format)
        result = export_corrections(spec, examples, path, args.format)
        for reason in result.skipped:
            print(f"skipped {reason}", file=sys.stderr)
        print(f"wrote {result.path}: {result.written} example(s), {result.new} from {len(examples)} correction(s) "
              "in the store")
        if args.format == "switchboard":
            print(f"train with: switchboard train {args.bot_dir} --data {result.path} "
                  f"(or copy it to {args.bot_dir / 'corrections.yml'}, which train always uses)")
        return 0

    return asyncio.run(run())


def _run(fn: Any) -> int:
    try:
        return asyncio.run(_with_accounts(fn))
    except StaffError as exc:
        raise ConfigError(str(exc)) from None

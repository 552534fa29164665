"""Staff accounts: one contract suite over both staff stores (SQLite, and MongoDB on a real
SecantusDB server), plus the account rules (argon2 hashes, hashed tokens and sessions)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from bots.staff.accounts import Accounts, secret_hash
from bots.staff.base import AuditEntry, Session, StaffError, StaffStore, role_allows
from bots.staff.mongo import MongoStaffStore
from bots.staff.sqlite import SQLiteStaffStore
from tests.fixtures.mongo import mongo_uri as mongo_uri
from tests.fixtures.mongo import secantus as secantus

PASSWORD = "correct horse battery"


@pytest_asyncio.fixture(params=["sqlite", "mongodb"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StaffStore]:
    staff: StaffStore
    if request.param == "mongodb":
        staff = MongoStaffStore(request.getfixturevalue("mongo_uri"))
    else:
        staff = SQLiteStaffStore(tmp_path / "staff.db")
    await staff.start()
    yield staff
    await staff.aclose()


async def test_users_are_stored_with_argon2_hashes_only(store: StaffStore) -> None:
    accounts = Accounts(store)
    await accounts.add_user("ann", PASSWORD, "agent")
    stored = await store.get_user("ann")
    assert stored is not None and stored.role == "agent"
    assert stored.password_hash.startswith("$argon2id$") and PASSWORD not in stored.password_hash
    assert await accounts.authenticate("ann", PASSWORD) == stored
    assert await accounts.authenticate("ann", "correct horse batter") is None
    assert await accounts.authenticate("nobody", PASSWORD) is None
    assert await accounts.authenticate('{"$gt": ""}', PASSWORD) is None
    with pytest.raises(StaffError, match="already exists"):
        await accounts.add_user("ann", PASSWORD, "viewer")
    with pytest.raises(StaffError, match="too short"):
        await accounts.add_user("bob", "short", "viewer")
    with pytest.raises(StaffError, match="role 'root'"):
        await accounts.add_user("bob", PASSWORD, "root")
    with pytest.raises(StaffError, match="username"):
        await accounts.add_user("$where", PASSWORD, "viewer")
    await accounts.add_user("bob", PASSWORD, "viewer")
    assert [u.username for u in await store.list_users()] == ["ann", "bob"]


async def test_sessions_and_tokens_are_kept_as_hashes(store: StaffStore) -> None:
    accounts = Accounts(store)
    user = await accounts.add_user("ann", PASSWORD, "admin")
    key, session = await accounts.open_session(user)
    assert await store.get_session(key) is None  # looked up by hash only
    found = await accounts.session(key)
    assert found is not None and found[1].username == "ann" and found[0].csrf_token == session.csrf_token
    await accounts.close_session(key)
    assert await accounts.session(key) is None

    token = await accounts.create_token("ann", "ci")
    assert await store.get_token(token) is None
    assert (await store.get_token(secret_hash(token))) is not None
    found_token = await accounts.token_user(token)
    assert found_token is not None and found_token[0].label == "ci" and found_token[1].role == "admin"
    assert await accounts.token_user(token + "x") is None
    with pytest.raises(StaffError, match="no user named"):
        await accounts.create_token("ghost", "ci")

    # removing a user ends their sessions and tokens
    key, _ = await accounts.open_session(user)
    assert await store.remove_user("ann") is True
    assert await accounts.session(key) is None and await accounts.token_user(token) is None
    assert await store.remove_user("ann") is False


async def test_expired_sessions_do_not_sign_in(store: StaffStore) -> None:
    await Accounts(store).add_user("ann", PASSWORD, "viewer")
    now = time.time()
    await store.add_session(secret_hash("old"), Session("ann", "csrf", now - 100, now - 1))
    assert await store.get_session(secret_hash("old")) is None


async def test_audit_log_newest_first_with_filters(store: StaffStore) -> None:
    for i in range(5):
        await store.add_audit(AuditEntry("ann" if i % 2 else "bob", "view_transcript", "tiny", f"c{i}",
                                         timestamp=1000.0 + i))
    entries, total = await store.audit_log(limit=3)
    assert total == 5 and [e.conversation_id for e in entries] == ["c4", "c3", "c2"]
    entries, total = await store.audit_log(actor="ann")
    assert total == 2 and {e.conversation_id for e in entries} == {"c1", "c3"}
    entries, total = await store.audit_log(conversation_id='{"$ne": ""}')
    assert total == 0
    entries, total = await store.audit_log(offset=4, limit=10)
    assert [e.conversation_id for e in entries] == ["c0"]


def test_roles_are_ordered() -> None:
    assert role_allows("admin", "agent") and role_allows("agent", "viewer") and role_allows("viewer", "viewer")
    assert not role_allows("viewer", "agent") and not role_allows("agent", "admin")
    assert not role_allows("root", "viewer")


def test_cli_users_and_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    import io

    from connectors.cli import main as switchboard

    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("SWITCHBOARD_MONGODB_URI", raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert switchboard(["users", "add", "ann", "--role", "agent", "--password-stdin"]) == 0
    assert "added ann (agent)" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert switchboard(["users", "add", "bob", "--role", "viewer", "--password-stdin"]) == 2
    assert "too short" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert switchboard(["users", "add", "bob", "--role", "viewer"]) == 2
    assert "--password-stdin" in capsys.readouterr().err
    assert switchboard(["users", "list"]) == 0
    assert capsys.readouterr().out == "ann\tagent\n"
    assert switchboard(["tokens", "create", "ann", "--label", "nightly"]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("sbt_") and token not in (tmp_path / "staff.db").read_bytes().decode("latin-1")
    assert switchboard(["tokens", "create", "ghost"]) == 2
    assert "no user named 'ghost'" in capsys.readouterr().err
    assert switchboard(["users", "remove", "ann"]) == 0
    assert switchboard(["users", "remove", "ann"]) == 2
    assert "no user named 'ann'" in capsys.readouterr().err

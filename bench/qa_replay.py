"""Replay customers' conversations through a served bot's web channel, as the chat widget sends them.

    .venv/bin/python bench/qa_replay.py [--bot examples/support] [--conversations bench/data/qa_conversations.yml]
                                        [--out replay.json] [--compare before.json] [--show]

Starts ``switchboard serve BOT`` (its newest trained model; a temporary store) on a free port, opens each
conversation as the widget does (``POST /bots/NAME/webhooks/web/conversations``, the welcome read from the
history), sends each customer turn (or clicks the button a turn names: ``{button: PREFIX}``), reads what the
model made of every message from the admin API's transcript, and stops the server.

Prints what the customers got, per customer turn: the share not understood (``nlu_fallback``), answered as out
of scope, answered by the bot's default fallback ("did you mean ...?"), and the turns that handed the conversation to
a person; the replies by source (template, action, retrieval, fallback, ...); the messages read
with their spelling corrected. ``--out`` keeps every conversation (replies and NLU) as JSON; ``--compare``
lists the customer turns whose replies differ from an earlier ``--out`` file: what a retraining or a change
moved, for better and for worse (bench/RESULTS.md). ``--show`` prints every transcript. Not part of the test run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from load import run_server, server_env  # noqa: E402

from bots.artifact import list_artifacts  # noqa: E402
from bots.loader import load_bot_folder  # noqa: E402

CONVERSATIONS = ROOT / "bench" / "data" / "qa_conversations.yml"


def read_conversations(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        sys.exit(f"bench/qa_replay.py: {path} is missing (the conversations ship in bench/data)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        sys.exit(f"bench/qa_replay.py: {where}: invalid YAML: {getattr(exc, 'problem', None) or exc}")
    if not isinstance(data, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str)
                                             and isinstance(c.get("turns"), list) for c in data):
        sys.exit(f"bench/qa_replay.py: {path}: expected a list of {{name, turns}}")
    return data


class Chat:
    def __init__(self, client: httpx.Client, bot: str, admin_token: str) -> None:
        self.client, self.bot, self.admin = client, bot, admin_token

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        for _ in range(20):
            r = self.client.request(method, path, timeout=120, **kw)
            if r.status_code == 429:
                time.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            if r.status_code >= 400:
                raise SystemExit(f"{method} {path}: HTTP {r.status_code}: {r.text[:300]}")
            return r.json()
        raise SystemExit(f"{method} {path}: still rate limited")

    def run(self, name: str, turns: list[Any]) -> dict[str, Any]:
        web = f"/bots/{self.bot}/webhooks/web"
        start = self._call("POST", f"{web}/conversations", json={"name": "QA"})
        cid, token = start["conversation_id"], start["token"]
        history = self._call("GET", f"{web}/history", params={"conversation_id": cid},
                             headers={"X-Conversation-Token": token})
        out: dict[str, Any] = {"name": name, "welcome": [m["text"] for m in history["messages"] if m["role"] != "user"],
                               "turns": []}
        last: list[dict[str, Any]] = []
        for turn in turns:
            if isinstance(turn, dict):
                want = str(turn.get("button", "")).lower()
                button = next((b for r in last for b in r.get("buttons", []) if b["title"].lower().startswith(want)),
                              None)
                if button is None:
                    out["turns"].append({"user": f"[button {want!r} not offered]", "bot": [], "missing": True})
                    continue
                text, payload = button["title"], button["payload"]
            else:
                text, payload = str(turn), None
            body = {"conversation_id": cid, "message_id": uuid.uuid4().hex, "text": text, "payload": payload}
            reply = self._call("POST", web, json=body, headers={"X-Conversation-Token": token})
            last = reply["responses"]
            out["turns"].append({"user": text, "payload": payload,
                                 "bot": [{"text": r["text"], "source": r.get("source"),
                                          "buttons": [b["title"] for b in r.get("buttons", [])]} for r in last]})
        transcript = self._call("GET", f"/bots/{self.bot}/conversations/{cid}",
                                headers={"Authorization": f"Bearer {self.admin}"})
        customer_turns = [t for t in transcript["turns"] if any(e["kind"] == "user" for e in t["events"])
                          and not any(e["kind"] == "nlu" and e["data"].get("intent") == "session_start"
                                      for e in t["events"])]  # not the chat's opening (its welcome)
        replayed = [t for t in out["turns"] if not t.get("missing")]
        for mine, stored in zip(replayed, customer_turns, strict=False):
            nlu = next((e["data"] for e in stored["events"] if e["kind"] == "nlu"), None)
            mine["nlu"] = None if nlu is None else {k: nlu.get(k) for k in ("intent", "confidence", "read_as")}
            mine["handoff"] = any(e["kind"] == "pause" for e in stored["events"])  # a person has it from here
        return out


def figures(results: list[dict[str, Any]]) -> dict[str, Any]:
    turns = [t for c in results for t in c["turns"] if not t.get("missing")]
    count: collections.Counter[str] = collections.Counter()
    sources: collections.Counter[str] = collections.Counter()
    for t in turns:
        intent = (t.get("nlu") or {}).get("intent")
        count["not understood (nlu_fallback)"] += intent == "nlu_fallback"
        count["out_of_scope"] += intent == "out_of_scope"
        count["answered by the default fallback"] += any(b["source"] == "fallback" for b in t["bot"])
        count["no reply"] += not t["bot"]
        count["handed to a person"] += bool(t.get("handoff"))
        count["read with spelling corrected"] += bool((t.get("nlu") or {}).get("read_as"))
        for b in t["bot"][:1]:
            sources[str(b["source"])] += 1
    return {"conversations": len(results), "customer turns": len(turns),
            "buttons not offered": sum(1 for c in results for t in c["turns"] if t.get("missing")),
            **count, "first reply by source": dict(sources.most_common())}


def show(c: dict[str, Any]) -> str:
    lines = [f"=== {c['name']}"] + [f"  [welcome] {w}" for w in c["welcome"]]
    for t in c["turns"]:
        nlu = t.get("nlu") or {}
        read = f", read as {nlu['read_as']!r}" if nlu.get("read_as") else ""
        lines.append(f"  C: {t['user']}    <{nlu.get('intent')} {nlu.get('confidence') or 0:.2f}{read}>")
        lines += [f"  B[{b['source']}]: {b['text']}" + (f"   BUTTONS {b['buttons']}" if b["buttons"] else "")
                  for b in t["bot"]] or ["  B: (nothing)"]
    return "\n".join(lines)


def compare(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[str]:
    old = {c["name"]: c for c in before}
    lines = []
    for c in after:
        if c["name"] not in old:
            continue
        for a, b in zip(old[c["name"]]["turns"], c["turns"], strict=False):
            fa, fb = (" | ".join(x["text"][:100] for x in t["bot"]) for t in (a, b))
            if a["user"] != b["user"]:
                break  # the conversations went different ways (a button offered in one only)
            if fa != fb:
                lines.append(f"[{c['name']}] C: {b['user']}\n   before: {fa}\n   after:  {fb}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bot", type=Path, default=ROOT / "examples" / "support")
    parser.add_argument("--conversations", type=Path, default=CONVERSATIONS)
    parser.add_argument("--out", type=Path, help="write every conversation as JSON")
    parser.add_argument("--compare", type=Path, help="an earlier --out file: list the replies that changed")
    parser.add_argument("--show", action="store_true", help="print every transcript")
    args = parser.parse_args()
    conversations = read_conversations(args.conversations)
    spec, _ = load_bot_folder(args.bot)
    artifacts = list_artifacts(args.bot / "models")
    if not artifacts:
        sys.exit(f"bench/qa_replay.py: {args.bot} has no trained model; train it first: "
                 f".venv/bin/switchboard train {args.bot}")
    admin = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="qa-replay-") as tmp:
        port = probe_port()
        url = f"http://127.0.0.1:{port}"
        env = server_env(Path(tmp), SWITCHBOARD_ADMIN_TOKEN=admin)
        cmd = [sys.executable, "-m", "connectors.cli", "serve", str(args.bot), "--port", str(port)]
        proc, _ = run_server(cmd, env, url, Path(tmp) / "server.log")
        try:
            with httpx.Client(base_url=url) as client:
                chat = Chat(client, spec.name, admin)
                results = [chat.run(c["name"], c["turns"]) for c in conversations]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"bot {spec.name} ({args.bot}), model {artifacts[-1].name}, conversations {args.conversations}")
    if args.show:
        for c in results:
            print(show(c))
    for key, value in figures(results).items():
        print(f"{key}: {value}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, ensure_ascii=False), encoding="utf-8")
    if args.compare:
        changed = compare(json.loads(args.compare.read_text(encoding="utf-8")), results)
        print(f"\n{len(changed)} customer turns answered differently than in {args.compare}:")
        print("\n".join(changed))


def probe_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    main()

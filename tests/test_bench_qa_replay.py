"""bench/qa_replay.py: conversations replayed through a served bot's web channel, what the model read read back
from the admin API, figures counted, and a second run compared with the first. No figures are asserted beyond
what the tiny bot's replies make certain: the bench's figures are recorded in bench/RESULTS.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "qa_replay.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH), *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_replays_conversations_through_the_web_channel(tiny_bot_dir: Path, tmp_path: Path) -> None:
    conversations = tmp_path / "qa.yml"
    conversations.write_text(
        "- name: track\n  turns: ['where is my ordr 4567', 'thanks']\n"
        "- name: nonsense\n  turns: ['purple elephants sing opera', {button: zzz}]\n", encoding="utf-8")
    out = tmp_path / "first.json"
    done = _run("--bot", str(tiny_bot_dir), "--conversations", str(conversations), "--out", str(out), "--show")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "conversations: 2" in done.stdout and "customer turns: 3" in done.stdout
    assert "buttons not offered: 1" in done.stdout
    results = json.loads(out.read_text(encoding="utf-8"))
    track = results[0]["turns"][0]
    assert track["nlu"]["intent"] == "track_order"
    assert track["nlu"]["read_as"] == "where is my order 4567"  # the tiny bot's model corrects the typo
    assert track["bot"] and track["bot"][0]["text"]
    assert "read with spelling corrected: 1" in done.stdout
    again = _run("--bot", str(tiny_bot_dir), "--conversations", str(conversations), "--compare", str(out))
    assert again.returncode == 0, again.stderr[-2000:]
    assert "0 customer turns answered differently" in again.stdout
    results[0]["turns"][1]["bot"][0]["text"] = "something else"
    out.write_text(json.dumps(results), encoding="utf-8")
    again = _run("--bot", str(tiny_bot_dir), "--conversations", str(conversations), "--compare", str(out))
    assert "1 customer turns answered differently" in again.stdout and "before: something else" in again.stdout


def test_missing_inputs_stop_with_a_message(tiny_bot_dir: Path, tmp_path: Path) -> None:
    done = _run("--bot", str(tiny_bot_dir), "--conversations", str(tmp_path / "none.yml"))
    assert done.returncode != 0 and "none.yml is missing" in done.stderr
    (tmp_path / "bad.yml").write_text("name: x\n", encoding="utf-8")
    done = _run("--bot", str(tiny_bot_dir), "--conversations", str(tmp_path / "bad.yml"))
    assert done.returncode != 0 and "expected a list of {name, turns}" in done.stderr
    (tmp_path / "broken.yml").write_text("- name: x\n  turns: [a, b\n- name: y\n", encoding="utf-8")
    done = _run("--bot", str(tiny_bot_dir), "--conversations", str(tmp_path / "broken.yml"))
    assert done.returncode != 0 and "broken.yml:" in done.stderr and "invalid YAML" in done.stderr
    assert "Traceback" not in done.stderr
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    (untrained / "bot.yml").write_text((tiny_bot_dir / "bot.yml").read_text(encoding="utf-8"), encoding="utf-8")
    done = _run("--bot", str(untrained))
    assert done.returncode != 0 and "has no trained model; train it first" in done.stderr

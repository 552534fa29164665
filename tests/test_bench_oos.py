"""bench/oos.py reads CLINC150's data_full.json as it is distributed, and a CSV's own name for out of scope
(``oos``), so the standard out-of-scope protocol runs on data nobody tuned for with one command. The loaders
are checked directly; one tiny run of the whole bench in fast mode shows the out-of-scope queries scored as
out of scope. No figures beyond what the tiny data makes certain are asserted."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "oos.py"

TOPICS = {
    "balance": ["what is my account balance", "how much money do i have", "show my balance", "balance please",
                "tell me my current balance", "how much is in my checking account", "what's left in my account",
                "check my balance", "how much cash do i have in the bank", "current balance of my savings"],
    "weather": ["what's the weather today", "will it rain tomorrow", "is it cold outside", "weather forecast please",
                "how hot will it be today", "do i need an umbrella", "is it going to snow", "what's the temperature",
                "will it be sunny this weekend", "how windy is it"],
    "alarm": ["set an alarm for 7 am", "wake me up at six", "set my alarm", "alarm for tomorrow morning",
              "please set an alarm at 8", "i need an alarm at noon", "create an alarm for 5:30",
              "wake me at 7 tomorrow", "new alarm at nine", "set a wake up alarm"],
}
OOS = ["how do i bake sourdough bread", "who won the football match", "tell me about the roman empire",
       "what is the capital of peru", "recommend a good novel", "how tall is mount everest"]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_oos", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _clinc(path: Path) -> Path:
    doc = {
        "train": [[t, intent] for intent, texts in TOPICS.items() for t in texts[:8]],
        "val": [],
        "test": [[t, intent] for intent, texts in TOPICS.items() for t in texts[8:]],
        "oos_train": [["play some jazz", "oos"], ["what's a good recipe for soup", "oos"]],
        "oos_val": [],
        "oos_test": [[t, "oos"] for t in OOS],
    }
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_clinc_json_is_read_with_its_out_of_scope_queries(tmp_path: Path) -> None:
    bench = _bench()
    path = _clinc(tmp_path / "data_full.json")
    train, test = bench._load(path)
    assert len(train) == 24 and {s.intent for s in train} == set(TOPICS)
    assert len(test) == 6 + len(OOS)
    assert [s.intent for s in test].count("out_of_scope") == len(OOS)
    assert test[-1].source == f"{path}:oos_test[5]"
    train, _ = bench._load(path, oos_train=True)
    assert [s.intent for s in train].count("out_of_scope") == 2


def test_a_malformed_clinc_file_is_refused_naming_the_row(tmp_path: Path) -> None:
    bench = _bench()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": [["hi", "greet"], ["no intent"]], "test": [], "oos_test": []}),
                   encoding="utf-8")
    with pytest.raises(SystemExit, match=r"bad\.json: train\[1\] is not a \[text, intent\] pair"):
        bench._load(bad)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"train": []}), encoding="utf-8")
    with pytest.raises(SystemExit, match=r"not CLINC150's format \(no test, oos_test"):
        bench._load(other)


def test_a_csv_label_oos_is_out_of_scope_and_said_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    folder = tmp_path / "csvs"
    folder.mkdir()
    rows = "text,intent\n" + "".join(f"{t},{i}\n" for i, texts in TOPICS.items() for t in texts)
    (folder / "train.csv").write_text(rows + "play some jazz,oos\n", encoding="utf-8")
    (folder / "test.csv").write_text(rows + "".join(f"{t},oos\n" for t in OOS), encoding="utf-8")
    train, test = bench._load(folder)
    out = capsys.readouterr().out
    assert "1 training examples labelled 'oos' are read as out of scope" in out
    assert f"{len(OOS)} test examples labelled 'oos' are read as out of scope" in out
    assert "out_of_scope" not in {s.intent for s in train}  # left out of training without --oos-train
    assert [s.intent for s in test].count("out_of_scope") == len(OOS)
    train, _ = bench._load(folder, oos_label="none-such", oos_train=True)
    assert "oos" in {s.intent for s in train}  # another label named: "oos" is an intent like any other


def test_the_bench_runs_clinc_format_data_with_every_intent_known(tmp_path: Path) -> None:
    path = _clinc(tmp_path / "data_full.json")
    done = subprocess.run([sys.executable, str(BENCH), "--data", str(path), "--known", "1", "--seeds", "0",
                           "--targets", "in-scope-drop<=0.05", "--no-spelling"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "train 24, test 12, 3 intents" in done.stdout
    served = [line for line in done.stdout.splitlines() if line.startswith("known 100% seed 0") and "(served)" in line]
    assert len(served) == 1, done.stdout[-3000:]
    assert "| 100% | in-scope-drop<=0.05 | intent_knn_softmax (served) |" in done.stdout

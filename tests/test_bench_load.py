"""bench/load.py: the same inputs everywhere (shipped questions or a Rasa project's test stories, else a
clear stop), CPU time read from /proc for a server's whole process tree, store round trips counted on a
real MongoDB-protocol server, and the load driver sending each conversation's messages in order.
No timings are asserted: the bench's figures are recorded in bench/RESULTS.md, not tested."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from pymongo import MongoClient

REPO = Path(__file__).resolve().parents[1]
RASA = REPO / "tests" / "data" / "rasa"
SOURCE = REPO.parent / "shared" / "data" / "bitext" / "customer_support_responses.csv"


def _module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


load = _module(REPO / "bench" / "load.py", "bench_load")


def test_shipped_questions_are_read_without_the_header() -> None:
    texts = load.read_questions()
    assert len(texts) == 4514 == len(set(texts))
    assert not any(t.startswith("#") or t != t.strip() or not t for t in texts)
    assert texts[0] == "I don't know wat I have to do to delete my standard account"
    workload = load.question_workload()
    assert workload.source == "4514 distinct questions from bench/data/bitext_questions.txt"


def test_missing_questions_stop_the_bench_instead_of_other_inputs(tmp_path: Path) -> None:
    missing = tmp_path / "bitext_questions.txt"
    with pytest.raises(SystemExit, match=r"bitext_questions\.txt: the bench questions are missing.*README"):
        load.read_questions(missing)
    missing.write_text("# only a header\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="no questions in the file"):
        load.read_questions(missing)


@pytest.mark.skipif(not SOURCE.parent.parent.is_dir(),
                    reason=f"data sets not present at {SOURCE.parent.parent} (checked out without ../shared/data)")
def test_shipped_questions_are_what_build_questions_writes(tmp_path: Path) -> None:
    assert SOURCE.is_file(), f"{SOURCE} is missing although {SOURCE.parent.parent} exists"
    out = tmp_path / "questions.txt"
    run = subprocess.run([sys.executable, str(REPO / "bench" / "data" / "build_questions.py"), "--source",
                          str(SOURCE), "--output", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.read_text(encoding="utf-8") == (REPO / "bench" / "data" / "bitext_questions.txt").read_text(
        encoding="utf-8")


def test_questions_keep_one_conversation_per_customer() -> None:
    workload = load.Workload("three", texts=("a", "b", "c"))
    messages = workload.messages(1)
    got = [next(messages) for _ in range(4)]
    assert [(m.conversation, m.message_id, m.text, m.payload) for m in got] == [
        ("1", "m0", "b", None), ("1", "m1", "c", None), ("1", "m2", "a", None), ("1", "m3", "b", None)]


def test_questions_with_turns_start_a_new_conversation_every_n_messages_same_texts() -> None:
    workload = load.Workload("three", texts=("a", "b", "c"), turns=2)
    messages = workload.messages(1)
    got = [next(messages) for _ in range(5)]
    assert [(m.conversation, m.message_id, m.text) for m in got] == [
        ("1-0", "m0", "b"), ("1-0", "m1", "c"), ("1-1", "m2", "a"), ("1-1", "m3", "b"), ("1-2", "m4", "c")]


def test_rasa_test_stories_are_played_in_order_one_conversation_each() -> None:
    workload = load.story_workload(RASA / "moodbot")
    assert workload.stories[0] == (("hello there!", None), ("amazing", None))
    assert "test stories of" in workload.source and "one conversation per story" in workload.source
    messages = workload.messages(0)
    first = [next(messages) for _ in range(len(workload.stories[0]) + 1)]
    assert [(m.conversation, m.message_id) for m in first] == [("0-0", "m0"), ("0-0", "m1"), ("0-1", "m0")]
    assert first[2].text == workload.stories[1][0][0]


def test_intent_steps_without_text_are_sent_as_payloads() -> None:
    stories = load.story_workload(RASA / "responses").stories
    assert stories[0][0] == ("/greet", "/greet")
    assert ('/choose_plan{"plan": "premium"}', '/choose_plan{"plan": "premium"}') in stories[0]


def test_rasa_project_without_test_stories_stops() -> None:
    with pytest.raises(SystemExit, match="no test stories with user turns"):
        load.story_workload(RASA / "digressions")


def test_untrained_bot_yml_bot_and_broken_project_stop_with_a_message(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"no trained model; run `switchboard train .*tiny_bot` first"):
        load.prepare_bot(REPO / "tests" / "data" / "tiny_bot", tmp_path)
    with pytest.raises(SystemExit, match=r"broken/.*:\d+"):
        load.prepare_bot(RASA / "broken", tmp_path)


_BURNER = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", '''
import sys, time
end = time.process_time() + 0.5
while time.process_time() < end:
    pass
print("burnt", flush=True)
time.sleep(60)
'''], stdout=sys.stdout)
child.wait()
"""


def _own_cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / load.CLOCK_TICKS


def test_the_load_generators_own_cpu_is_read_and_printed_per_message() -> None:
    """The customers share the server's cores: their CPU in the window is read (this process only, not
    the server it started) and printed per answered message beside the server's."""
    probe = load.OwnCpuProbe()
    probe.start()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    time.sleep(0.2)  # waiting costs nothing
    probe.stop()
    assert probe.seconds is not None and 0.25 <= probe.seconds < 0.45
    result = load.Result("switchboard", 100, 0, 1.0, [0.01] * 100, 250.0, 1.5, answered_in_window=100,
                         cpu_s=0.3, load_cpu_s=probe.seconds)
    assert result.figures()["load gen CPU ms/msg"] == pytest.approx(probe.seconds * 10)
    assert f"load generator CPU {probe.seconds * 10:.2f} ms/msg" in result.line()
    assert "load gen CPU ms/msg" in load.summary([result, result])


def test_cpu_time_counts_the_whole_process_tree() -> None:
    """A server that does its work in a child process (the burner's child) is charged for it."""
    proc = subprocess.Popen([sys.executable, "-c", _BURNER], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "burnt"
        assert len(load._descendants(proc.pid)) == 2
        tree = load.process_cpu_seconds(proc.pid)
        assert tree >= 0.5
        assert tree - _own_cpu_seconds(proc.pid) >= 0.5  # the child's share, not the parent's own
        probe = load.CpuProbe(proc.pid)
        probe.start()
        time.sleep(0.2)  # both sleep now: the window sees (almost) nothing
        probe.stop()
        assert probe.seconds is not None and 0 <= probe.seconds < 0.1
        assert load.rss_mb(proc.pid) > 0
    finally:
        for pid in load._descendants(proc.pid)[1:]:
            subprocess.run(["kill", str(pid)], check=False)
        proc.wait(timeout=30)


def test_store_round_trips_are_counted_on_the_server(mongo_uri: str) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_uri, serverSelectionTimeoutMS=5000)
    try:
        collection = client.get_default_database()["turns"]
        client.admin.command("ping")  # the connection handshake before the window
        probe = load.MongoProbe(mongo_uri)
        try:
            assert isinstance(probe.pid, int) and Path(f"/proc/{probe.pid}").is_dir()
            probe.start()
            collection.insert_one({"a": 1})
            collection.insert_one({"a": 2})
            for _ in range(5):
                collection.find_one({"a": 1})
            probe.stop()
        finally:
            probe.close()
        assert probe.opcounters["insert"] == 2 and probe.opcounters["query"] == 5
        # 7 requests, plus at most a driver heartbeat or two that fell into the window
        assert probe.requests is not None and 7 <= probe.requests <= 9
    finally:
        client.close()


class _RecordingProbe:
    def __init__(self) -> None:
        self.started: float | None = None
        self.stopped: float | None = None

    def start(self) -> None:
        self.started = time.monotonic()

    def stop(self) -> None:
        self.stopped = time.monotonic()


def test_drive_sends_each_story_in_order_and_reads_probes_at_the_window() -> None:
    workload = load.story_workload(RASA / "moodbot")
    received: list[dict[str, str]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line[15:]) for line in head.split(b"\r\n") if line.lower().startswith(
                    b"content-length:"))
                received.append(json.loads(await reader.readexactly(length)))
                await asyncio.sleep(0.01)
                body = b'{"responses": []}'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def run() -> tuple[Any, float]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        began = time.monotonic()
        async with server:
            result = await load.drive(f"http://127.0.0.1:{port}", "moodbot", 3, 0.6, 0.3, workload,
                                      probes=[probe])
        return result, began

    probe = _RecordingProbe()
    result, began = asyncio.run(run())
    assert result.errors == 0 and result.ok > 0 and result.answered_in_window > 0
    assert result.ok + result.answered_in_window <= len(received) * 2
    assert probe.started is not None and probe.stopped is not None
    assert probe.started - began >= 0.29 and probe.stopped - probe.started >= 0.59
    by_conversation: dict[str, list[dict[str, str]]] = {}
    for body in received:
        by_conversation.setdefault(body["conversation_id"], []).append(body)
    stories = {tuple(t for t, _ in s) for s in workload.stories}
    for conversation, bodies in by_conversation.items():
        assert [b["message_id"] for b in bodies] == [f"m{i}" for i in range(len(bodies))], conversation
        texts = tuple(b["text"] for b in bodies)
        assert any(story[:len(texts)] == texts for story in stories), (conversation, texts)
    assert len(by_conversation) > 3  # customers went on to their next story


async def _read_request(reader: asyncio.StreamReader) -> dict[str, str]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line[15:]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    body: dict[str, str] = json.loads(await reader.readexactly(length))
    return body


def _answer(writer: asyncio.StreamWriter, status: int = 200) -> None:
    body = b'{"responses": []}' if status == 200 else b'{"detail": "no"}'
    writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body))


def test_client_sends_again_when_the_server_closed_the_idle_connection() -> None:
    """uvicorn closes a keep-alive connection idle for 5 s without telling: the next request on it used to
    count as an error (IncompleteReadError) although the server never read it."""
    received: list[dict[str, str]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await _read_request(reader))
        _answer(writer)
        await writer.drain()
        writer.close()  # as an idle timeout does: no "Connection: close" header

    async def run() -> list[int]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = load._Client("127.0.0.1", port)
        statuses = []
        async with server:
            for i in range(3):
                status, _ = await client.post("/x", json.dumps({"message_id": f"m{i}"}).encode())
                statuses.append(status)
                await asyncio.sleep(0.05)  # the close reaches the client before the next request
            await client.close()
        return statuses

    assert asyncio.run(run()) == [200, 200, 200]
    assert [r["message_id"] for r in received] == ["m0", "m1", "m2"]


def test_drive_counts_errors_by_kind() -> None:
    workload = load.Workload("three", texts=("a", "b", "c"))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                body = await _read_request(reader)
                _answer(writer, 503 if body["text"] == "b" else 200)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def run() -> Any:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await load.drive(f"http://127.0.0.1:{port}", "b", 1, 0.3, 0.0, workload)

    result = asyncio.run(run())
    assert result.errors > 0 and result.error_kinds == {"HTTP 503": result.errors}
    assert abs(result.ok - 2 * result.errors) <= 2

"""Rasa 3.x projects trained and tested as they are: ``switchboard train`` then ``switchboard test``, per project.

    .venv/bin/python bench/rasa_projects.py PATH [PATH ...] [--fast] [--runs 3]

Every PATH must be a Rasa project folder (``domain.yml`` or ``domain/``, ``config.yml``, ``data/``, as ``rasa
init`` lays it out); the bench stops before training anything when one is not. A project that does not load
(what ``switchboard check`` refuses, with its ``file:line`` errors) gets a "refused" row and its errors below the
table, and the other projects go on; one whose test stories do not parse (``switchboard test`` refuses them, as
``rasa test`` does) is trained all the same, its row and errors saying so. Each run copies the
project to a temporary folder (its own ``models/`` and ``results/`` left behind, so the project is never
written to), trains it in process (``training.cli``, ``--fast`` with the flag), and runs its test stories
(``tests/test_*.yml``) through the served pipeline with ``connectors.story_test`` (exactly what
``switchboard test`` runs). Printed per project: NLU examples, stories in the test files, train seconds,
action-level accuracy and conversation accuracy on the test stories, end to end and as ``rasa test``
evaluates them (``switchboard test --replay``: the story's own events are the history, the policies
predict its actions, nothing runs; the figure Rasa itself would report for the project's own stories),
and p50/p95 milliseconds per turn end to end (one customer message, accepted to answered, one
conversation at a time). With several runs: the median of
each figure, and the spread (min-max over the runs) of the latencies. The load average is printed too: on a
shared machine it says how much the timings can be trusted. Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from bots.dialogue.check import check_bot_folder  # noqa: E402
from bots.dialogue.policies import story_paths  # noqa: E402
from bots.dialogue.rasa_data import read_test_stories  # noqa: E402
from bots.dialogue.rasa_project import is_rasa_project, rasa_test_files  # noqa: E402
from bots.errors import ConfigError  # noqa: E402
from bots.loader import load_bot_folder  # noqa: E402
from bots.settings import Settings  # noqa: E402
from connectors.story_test import StoryTestResults, run_story_tests  # noqa: E402


@dataclass
class Run:
    train_s: float
    results: StoryTestResults | None   # None: the project has no test stories
    replayed: StoryTestResults | None = None   # the same stories evaluated as rasa test does (--replay)

    def latency_ms(self, q: float) -> float | None:
        if self.results is None or not self.results.turn_seconds:
            return None
        ms = sorted(s * 1000 for s in self.results.turn_seconds)
        return ms[min(len(ms) - 1, int(q * len(ms)))]


@dataclass
class Project:
    path: Path
    examples: int
    stories: int
    runs: list[Run] = field(default_factory=list)
    error: str | None = None
    refused: str | None = None  # the project does not load (switchboard check's errors): nothing trained
    tests_refused: str | None = None  # its test stories do not parse (switchboard test's errors): trained only


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _train(bot_dir: Path, fast: bool) -> tuple[int, float, str]:
    from training.cli import main as train

    captured = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
        code = train(["train", str(bot_dir), *(["--fast"] if fast else [])])
    return code, time.perf_counter() - started, captured.getvalue()


def conversations_tested(tests: list[Path]) -> int:
    """How many conversations ``switchboard test`` runs from the test files: the stories' paths. Rules in a
    test file are not tested, as in ``rasa test`` (``generate_story_trackers`` leaves rule trackers out)."""
    return len(story_paths([s for s in read_test_stories(tests) if not s.is_rule])) if tests else 0


def run_project(path: Path, *, fast: bool, runs: int, settings: Settings) -> Project:
    report = check_bot_folder(path)   # what switchboard check refuses (train refuses it too): a "refused" row
    if report.errors:
        raise ConfigError(report.errors)
    spec, _ = load_bot_folder(path)
    tests = rasa_test_files(path)
    examples = sum(len(i.examples) for i in spec.intents.values())
    try:
        project = Project(path, examples, conversations_tested(tests))
    except ConfigError as exc:  # test stories switchboard test (and rasa test) refuse: the project still trains
        project = Project(path, examples, 0, tests_refused="\n".join(exc.problems))
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="rasa-bench-") as tmp:
            bot_dir = Path(tmp) / path.resolve().name
            shutil.copytree(path, bot_dir, ignore=shutil.ignore_patterns("models", "results", "__pycache__"))
            code, seconds, output = _train(bot_dir, fast)
            if code != 0:
                project.error = f"switchboard train exited {code}:\n" + output.strip()
                return project
            tested = project.stories > 0  # files under tests/ without 'stories:' hold none
            results = asyncio.run(run_story_tests(bot_dir, settings=settings)) if tested else None
            replayed = asyncio.run(run_story_tests(bot_dir, settings=settings, replay=True)) if tested else None
            project.runs.append(Run(seconds, results, replayed))
    return project


def _row(p: Project) -> str:
    name = p.path.resolve().name
    if p.refused is not None:
        return f"| {name} | | | refused by check: see below | | | | | |"
    if p.error is not None:
        return f"| {name} | {p.examples} | {p.stories} | failed: see below | | | | | |"
    train = f"{_median([r.train_s for r in p.runs]):.1f}"
    if p.tests_refused is not None:
        return f"| {name} | {p.examples} | refused | {train} | test stories refused: see below | | | | |"
    tested = [r for r in p.runs if r.results is not None]
    if not tested:
        return f"| {name} | {p.examples} | 0 | {train} | no test stories | | | | |"

    def scores(all_results: list[StoryTestResults]) -> tuple[str, str]:
        action = _median([r.action_accuracy for r in all_results])
        conversation = _median([r.conversation_accuracy for r in all_results])
        passed = int(_median([float(len(r.stories) - len(r.failed)) for r in all_results]))
        return f"{action:.3f}", f"{conversation:.3f} ({passed}/{p.stories})"

    e2e = scores([r.results for r in tested if r.results is not None])
    replay = scores([r.replayed for r in tested if r.replayed is not None])
    cells = []
    for q in (0.5, 0.95):
        values = [v for r in tested if (v := r.latency_ms(q)) is not None]
        spread = f" ({min(values):.1f}-{max(values):.1f})" if len(values) > 1 else ""
        cells.append(f"{_median(values):.1f}{spread}")
    return (f"| {name} | {p.examples} | {p.stories} | {train} | {e2e[0]} | {e2e[1]} | {replay[0]} | {replay[1]} | "
            f"{cells[0]} / {cells[1]} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="Rasa project folders")
    ap.add_argument("--fast", action="store_true", help="train with --fast (frozen encoder, linear heads)")
    ap.add_argument("--runs", type=int, default=1, help="train and test each project this many times (median)")
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    for path in args.paths:
        if not path.is_dir() or not is_rasa_project(path):
            sys.exit(f"{path}: not a Rasa project (expected a folder with domain.yml or domain/ and config.yml, "
                     "as `rasa init` makes it, and no bot.yml)")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        sys.exit("\n".join(exc.problems))
    load_before = os.getloadavg()[0]
    projects = []
    for path in args.paths:
        print(f"{path}: training ({'--fast' if args.fast else 'fine-tuning'}) and testing, {args.runs} run(s)",
              file=sys.stderr)
        try:
            projects.append(run_project(path, fast=args.fast, runs=args.runs, settings=settings))
        except ConfigError as exc:  # refused as switchboard check refuses it: a row, and the other projects go on
            projects.append(Project(path, 0, 0, refused="\n".join(exc.problems)))
    print(f"\n{args.runs} run(s) per project, {'--fast' if args.fast else 'fine-tuned'}; medians, latency spread "
          f"(min-max of the runs) in brackets; load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print("| project | NLU examples | test stories | train s | action accuracy | conversation accuracy "
          "| action accuracy (replay) | conversation accuracy (replay) | turn p50 / p95 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for p in projects:
        print(_row(p))
    failed = False
    for p in projects:
        if p.refused is not None:
            failed = True
            print(f"\n{p.path}: refused by switchboard check:\n{p.refused}")
        if p.error is not None:
            failed = True
            print(f"\n{p.path}: {p.error}")
        if p.tests_refused is not None:
            failed = True
            print(f"\n{p.path}: test stories refused by switchboard test:\n{p.tests_refused}")
        for r in p.runs[:1]:
            for story in (r.results.failed if r.results is not None else []):
                failed = True
                for line in story.failures:
                    print(f"failed: {line}")
            for story in (r.replayed.failed if r.replayed is not None else []):
                for line in story.failures:
                    print(f"failed (replay): {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
